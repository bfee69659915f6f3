#include "tokenizers/prompt_weights.h"

#include <locale>
#include <sstream>

#include "core/errors.h"
#include "tokenizers/unicode.h"

namespace {

constexpr double kRoundMultiplier  = 1.1;
constexpr double kSquareMultiplier = 1 / 1.1;  // written as A1111 writes it, so products match bit for bit

// The code point starting at byte i (a lead byte of valid UTF-8) and its length.
char32_t char_at(const std::string& s, size_t i, size_t* len) {
    const auto c = static_cast<unsigned char>(s[i]);
    *len         = static_cast<size_t>(utf8_length(c));
    return *len == 1 ? c : utf8_decode(s.substr(i, *len))[0];
}

// Python re's \s and \w on str (what prompt_parser.py's patterns use).
bool py_space(char32_t c) { return unicode_class(c) == UNICODE_CLASS_SPACE || (c >= 0x1C && c <= 0x1F); }
bool py_word(char32_t c) {
    const UnicodeClass cls = unicode_class(c);
    return cls == UNICODE_CLASS_LETTER || cls == UNICODE_CLASS_NUMBER || c == U'_';
}

size_t space_at(const std::string& s, size_t i) {
    if (i >= s.size()) return 0;
    size_t len = 0;
    return py_space(char_at(s, i, &len)) ? len : 0;
}

// Start of the character that ends just before byte i.
size_t prev_char(const std::string& s, size_t i) {
    do --i;
    while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80);
    return i;
}

// re.split(r"\s*\bBREAK\b\s*", text): the pieces between BREAKs (possibly empty), as segments with breaks between.
void add_text(std::vector<PromptSegment>& res, const std::string& text) {
    size_t begin = 0;  // start of the current piece
    for (size_t from = 0;;) {
        const size_t at = text.find("BREAK", from);
        if (at == std::string::npos) break;
        size_t     len         = 0;
        const bool word_before = at > 0 && py_word(char_at(text, prev_char(text, at), &len));
        const bool word_after  = at + 5 < text.size() && py_word(char_at(text, at + 5, &len));
        if (word_before || word_after) {
            from = at + 1;
            continue;
        }
        size_t start = at;
        while (start > begin && space_at(text, prev_char(text, start)) != 0) start = prev_char(text, start);
        size_t end = at + 5;
        while (size_t n = space_at(text, end)) end += n;
        res.push_back({text.substr(begin, start - begin), 1.0, false});
        res.push_back({"BREAK", 1.0, true});
        begin = from = end;
    }
    res.push_back({text.substr(begin), 1.0, false});
}

// `:\s*([+-]?[.\d]+)\s*\)` at byte i (the colon): the end of the match and the number's text, or 0.
size_t weight_at(const std::string& s, size_t i, std::string* number) {
    size_t j = i + 1;
    while (size_t n = space_at(s, j)) j += n;
    const size_t begin = j;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    const size_t digits = j;
    while (j < s.size() && (s[j] == '.' || (s[j] >= '0' && s[j] <= '9'))) ++j;
    if (j == digits) return 0;
    *number = s.substr(begin, j - begin);
    while (size_t n = space_at(s, j)) j += n;
    return (j < s.size() && s[j] == ')') ? j + 1 : 0;
}

double parse_weight(const std::string& number, const std::string& prompt) {
    std::istringstream in(number);
    in.imbue(std::locale::classic());  // Python's float(): a '.' whatever the process locale says
    double w = 0;
    in >> w;
    if (in.fail() || in.peek() != std::char_traits<char>::eof())
        throw_bad_input("emphasis weight '" + number + "' is not a number (in the prompt '" + prompt + "')");
    return w;
}

}  // namespace

Emphasis emphasis_from_name(const std::string& name) {
    if (name == "original") return EMPHASIS_ORIGINAL;
    if (name == "no_norm") return EMPHASIS_NO_NORM;
    if (name == "ignore") return EMPHASIS_IGNORE;
    if (name == "none") return EMPHASIS_NONE;
    throw_bad_input("emphasis must be original, no_norm, ignore or none, not '" + name + "'");
}

std::vector<PromptSegment> parse_prompt_attention(const std::string& text) {
    utf8_decode(text);  // refuse invalid UTF-8 here, with the byte offset, rather than mid-way
    std::vector<PromptSegment> res;
    std::vector<size_t>        round, square;  // where each open bracket's range starts in res
    const auto                 multiply_range = [&res](size_t start, double m) {
        for (size_t p = start; p < res.size(); ++p)
            if (!res[p].is_break) res[p].weight *= m;
    };
    for (size_t i = 0; i < text.size();) {
        const char  c = text[i];
        std::string number;
        if (c == '\\') {
            const bool escaped = i + 1 < text.size() && std::string("()[]\\").find(text[i + 1]) != std::string::npos;
            res.push_back({escaped ? text.substr(i + 1, 1) : "", 1.0, false});  // a lone backslash vanishes
            i += escaped ? 2 : 1;
        } else if (c == '(') {
            round.push_back(res.size());
            ++i;
        } else if (c == '[') {
            square.push_back(res.size());
            ++i;
        } else if (c == ':') {
            const size_t end = weight_at(text, i, &number);
            if (end != 0 && !round.empty()) {
                multiply_range(round.back(), parse_weight(number, text));
                round.pop_back();
            } else {
                add_text(res, text.substr(i, end != 0 ? end - i : 1));
            }
            i = end != 0 ? end : i + 1;
        } else if (c == ')' && !round.empty()) {
            multiply_range(round.back(), kRoundMultiplier);
            round.pop_back();
            ++i;
        } else if (c == ']' && !square.empty()) {
            multiply_range(square.back(), kSquareMultiplier);
            square.pop_back();
            ++i;
        } else if (c == ')' || c == ']') {
            add_text(res, std::string(1, c));
            ++i;
        } else {
            const size_t end  = text.find_first_of("\\()[]:", i);
            const size_t stop = end == std::string::npos ? text.size() : end;
            add_text(res, text.substr(i, stop - i));
            i = stop;
        }
    }
    // Brackets left open apply to the end: all round ones first, each in the order opened, then the square ones.
    for (size_t start : round) multiply_range(start, kRoundMultiplier);
    for (size_t start : square) multiply_range(start, kSquareMultiplier);
    if (res.empty()) res.push_back({"", 1.0, false});
    for (size_t i = 0; i + 1 < res.size();) {
        if (!res[i].is_break && !res[i + 1].is_break && res[i].weight == res[i + 1].weight) {
            res[i].text += res[i + 1].text;
            res.erase(res.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        } else {
            ++i;
        }
    }
    return res;
}

torch::Tensor PromptTokens::ids_tensor() const {
    return torch::tensor(ids, torch::kInt64).reshape({chunks, kClipContext});
}

torch::Tensor PromptTokens::weights_tensor() const {
    return torch::tensor(weights, torch::kFloat32).reshape({chunks, kClipContext});
}

PromptTokens tokenize_prompt(const ClipTokenizer& tokenizer, const std::string& text, ClipPad pad,
                             const PromptOptions& options) {
    if (options.comma_backtrack < 0 || options.comma_backtrack >= kClipChunkTokens)
        throw_bad_input("comma_backtrack must be 0..74, not " + std::to_string(options.comma_backtrack));
    const std::vector<PromptSegment> segments = options.emphasis == EMPHASIS_NONE
                                                    ? std::vector<PromptSegment>{{text, 1.0, false}}
                                                    : parse_prompt_attention(text);
    const bool weighted = options.emphasis == EMPHASIS_ORIGINAL || options.emphasis == EMPHASIS_NO_NORM;

    PromptTokens         out;
    std::vector<int64_t> ids;  // the chunk being filled, at most 75 prompt tokens
    std::vector<float>   weights;
    int64_t              last_comma = -1;
    const auto           next_chunk = [&](bool is_last) {
        out.token_count += is_last ? static_cast<int64_t>(ids.size()) : kClipChunkTokens;
        ids.resize(kClipChunkTokens, tokenizer.eos_id());
        weights.resize(kClipChunkTokens, 1.0f);
        const size_t row = out.ids.size();
        out.ids.push_back(tokenizer.bos_id());
        out.ids.insert(out.ids.end(), ids.begin(), ids.end());
        out.ids.push_back(tokenizer.eos_id());
        if (pad == CLIP_PAD_ZERO) {  // A1111 sd_hijack_clip process_tokens: everything after the first EOS
            size_t p = row + 1;
            while (out.ids[p] != tokenizer.eos_id()) ++p;
            std::fill(out.ids.begin() + static_cast<std::ptrdiff_t>(p) + 1, out.ids.end(), 0);
        }
        out.weights.push_back(1.0f);
        out.weights.insert(out.weights.end(), weights.begin(), weights.end());
        out.weights.push_back(1.0f);
        ++out.chunks;
        ids.clear();
        weights.clear();
        last_comma = -1;
    };

    for (const PromptSegment& segment : segments) {
        if (segment.is_break) {
            next_chunk(false);
            continue;
        }
        const float weight = weighted ? static_cast<float>(segment.weight) : 1.0f;
        for (int64_t token : tokenizer.encode(segment.text)) {
            const auto size = static_cast<int64_t>(ids.size());
            if (token == tokenizer.comma_id()) {
                last_comma = size;
            } else if (options.comma_backtrack != 0 && size == kClipChunkTokens && last_comma != -1 &&
                       size - last_comma <= options.comma_backtrack) {
                // The chunk is full and a comma is near its end: the words after the comma start the next chunk.
                const auto           split = static_cast<std::ptrdiff_t>(last_comma + 1);
                std::vector<int64_t> moved_ids(ids.begin() + split, ids.end());
                std::vector<float>   moved_weights(weights.begin() + split, weights.end());
                ids.resize(static_cast<size_t>(split));
                weights.resize(static_cast<size_t>(split));
                next_chunk(false);
                ids     = std::move(moved_ids);
                weights = std::move(moved_weights);
            }
            if (static_cast<int64_t>(ids.size()) == kClipChunkTokens) next_chunk(false);
            ids.push_back(token);
            weights.push_back(weight);
        }
    }
    if (!ids.empty() || out.chunks == 0) next_chunk(true);
    return out;
}

torch::Tensor apply_emphasis(const torch::Tensor& z, const torch::Tensor& weights, Emphasis emphasis) {
    if (z.dim() != 3 || weights.dim() != 2 || z.size(0) != weights.size(0) || z.size(1) != weights.size(1))
        throw_bad_input("apply_emphasis needs z [chunks, tokens, dim] and weights [chunks, tokens], got " +
                        std::string(c10::str(z.sizes())) + " and " + std::string(c10::str(weights.sizes())));
    if (emphasis == EMPHASIS_IGNORE || emphasis == EMPHASIS_NONE) return z;
    const torch::Tensor zf       = z.to(torch::kFloat32);
    torch::Tensor       weighted = zf * weights.to(zf.device(), torch::kFloat32).unsqueeze(-1);
    if (emphasis == EMPHASIS_ORIGINAL) {
        const torch::Tensor before = zf.mean({1, 2}, /*keepdim=*/true);
        const torch::Tensor after  = weighted.mean({1, 2}, /*keepdim=*/true);
        weighted                   = weighted * torch::where(after == 0, torch::ones_like(after), before / after);
    }
    return weighted.to(z.scalar_type());
}
