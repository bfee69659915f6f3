#include "tokenizers/clip_tokenizer.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "tokenizers/unicode.h"

namespace {

namespace fs = std::filesystem;

const std::string kEndOfWord   = "</w>";
const std::string kStartOfText = "<|startoftext|>";
const std::string kEndOfText   = "<|endoftext|>";

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes (controls, space,
// U+00AD) for U+0100 onwards in byte order, so no byte maps to whitespace or a control the BPE would trip on.
// `order` lists the bytes in that dict's insertion order, which is the order of the first 256 vocabulary ids.
struct ByteMap {
    char32_t chars[256];
    uint8_t  order[256];
    ByteMap() {
        int  n = 0, shifted = 0;
        auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
        for (int b = 0; b < 256; ++b)
            if (printable(b)) chars[b] = static_cast<char32_t>(b), order[n++] = static_cast<uint8_t>(b);
        for (int b = 0; b < 256; ++b)
            if (!printable(b)) chars[b] = static_cast<char32_t>(256 + shifted++), order[n++] = static_cast<uint8_t>(b);
    }
};
const ByteMap kBytes;

std::string byte_symbol(int b) {
    std::string s;
    utf8_append(s, kBytes.chars[b]);
    return s;
}

std::string read_file(const fs::path& path, const char* what) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw WorkerError(ERROR_TYPE_NOT_FOUND, std::string(what) + " not found: " + path.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Lines [1, 1 + kClipMerges) of a merges file, each "left right" (the first line is a "#version" header in both
// openai's and HF's files, and both skip it unread).
std::vector<std::pair<std::string, std::string>> parse_merges(std::string content, const fs::path& path) {
    content.erase(content.find_last_not_of(" \t\r\n") + 1);  // HF: read().strip().split("\n")
    std::vector<std::pair<std::string, std::string>> merges;
    merges.reserve(kClipMerges);
    const auto word_end = [&content](size_t i, size_t stop) {
        while (i < stop && content[i] != ' ' && content[i] != '\t' && content[i] != '\r') ++i;
        return i;
    };
    const auto skip_space = [&content](size_t i, size_t stop) {
        while (i < stop && (content[i] == ' ' || content[i] == '\t' || content[i] == '\r')) ++i;
        return i;
    };
    size_t line_start = 0;
    for (int number = 1; line_start < content.size() && merges.size() < static_cast<size_t>(kClipMerges); ++number) {
        size_t line_end = content.find('\n', line_start);
        if (line_end == std::string::npos) line_end = content.size();
        if (number > 1) {
            const size_t a = skip_space(line_start, line_end), a_end = word_end(a, line_end);
            const size_t b = skip_space(a_end, line_end), b_end = word_end(b, line_end);
            if (a == a_end || b == b_end || skip_space(b_end, line_end) != line_end)
                throw_bad_input(path.string() + " line " + std::to_string(number) + ": expected two symbols, got '" +
                                content.substr(line_start, line_end - line_start) + "'");
            merges.emplace_back(content.substr(a, a_end - a), content.substr(b, b_end - b));
        }
        line_start = line_end + 1;
    }
    return merges;
}

std::optional<std::string> pad_token_of(const fs::path& file) {
    std::ifstream in(file);
    if (!in) return std::nullopt;
    const auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("pad_token")) return std::nullopt;
    const auto& pad = j["pad_token"];
    if (pad.is_string()) return pad.get<std::string>();
    if (pad.is_object() && pad.contains("content") && pad["content"].is_string())
        return pad["content"].get<std::string>();
    return std::nullopt;
}

// ---- Step 1: the parts of ftfy.fix_text that change prompts -------------------------------------------------

struct Entity {
    const char* name;
    char32_t    cp;
};
// Entities ending in ';' as ftfy decodes them; this is the subset that turns up in prompts copied from web pages
// (HTML5 names 2,125 of them).
const Entity kEntities[] = {
    {"amp", '&'},      {"lt", '<'},       {"gt", '>'},       {"quot", '"'},      {"apos", '\''},    {"nbsp", 0xA0},
    {"copy", 0xA9},    {"reg", 0xAE},     {"trade", 0x2122}, {"hellip", 0x2026}, {"mdash", 0x2014}, {"ndash", 0x2013},
    {"lsquo", 0x2018}, {"rsquo", 0x2019}, {"ldquo", 0x201C}, {"rdquo", 0x201D},  {"laquo", 0xAB},   {"raquo", 0xBB},
    {"middot", 0xB7},  {"bull", 0x2022},  {"deg", 0xB0},     {"times", 0xD7},    {"divide", 0xF7},  {"plusmn", 0xB1},
    {"eacute", 0xE9},  {"Eacute", 0xC9},  {"egrave", 0xE8},  {"agrave", 0xE0},   {"aacute", 0xE1},  {"iacute", 0xED},
    {"oacute", 0xF3},  {"uacute", 0xFA},  {"ntilde", 0xF1},  {"Ntilde", 0xD1},   {"ccedil", 0xE7},  {"auml", 0xE4},
    {"ouml", 0xF6},    {"uuml", 0xFC},    {"Auml", 0xC4},    {"Ouml", 0xD6},     {"Uuml", 0xDC},    {"szlig", 0xDF},
    {"euro", 0x20AC},  {"pound", 0xA3},   {"yen", 0xA5},     {"cent", 0xA2},     {"sect", 0xA7},    {"para", 0xB6},
    {"frac12", 0xBD},  {"frac14", 0xBC},  {"frac34", 0xBE},  {"hearts", 0x2665}, {"star", 0x2606},  {"starf", 0x2605},
};

// A numeric reference as Python's html.unescape reads it: NUL -> U+FFFD, CR kept, 0x80..0x9F as Windows-1252,
// surrogates and out-of-range -> U+FFFD, other controls and noncharacters dropped (empty result).
std::u32string numeric_reference(uint64_t n) {
    if (n == 0 || (n >= 0xD800 && n <= 0xDFFF) || n > 0x10FFFF) return U"\uFFFD";
    if (n == 0x0D) return U"\r";
    if (n >= 0x80 && n <= 0x9F) return std::u32string(1, unicode_c1_as_windows1252(static_cast<char32_t>(n)));
    if ((n >= 0x1 && n <= 0x8) || n == 0xB || (n >= 0xE && n <= 0x1F) || n == 0x7F || (n >= 0xFDD0 && n <= 0xFDEF) ||
        (n & 0xFFFE) == 0xFFFE)
        return U"";
    return std::u32string(1, static_cast<char32_t>(n));
}

// ftfy unescape_html: "&name;" from the table and "&#123;" / "&#x7B;" (ftfy's HTML_ENTITY_RE takes 1..24
// alphanumerics); anything else stays as written.
std::u32string unescape_entities(const std::u32string& t) {
    if (t.find(U'&') == std::u32string::npos) return t;
    std::u32string out;
    for (size_t i = 0; i < t.size(); ++i) {
        const size_t semi = t[i] == U'&' ? t.find(U';', i + 1) : std::u32string::npos;
        const size_t len  = semi == std::u32string::npos ? 0 : semi - i - 1;
        if (len == 0 || len > 25) {
            out += t[i];
            continue;
        }
        const std::u32string body     = t.substr(i + 1, len);
        bool                 replaced = false;
        if (body[0] == U'#' && len >= 2) {
            const bool hex = body[1] == U'x' || body[1] == U'X';
            uint64_t   n   = 0;
            bool       ok  = body.size() > (hex ? 2u : 1u);
            for (size_t k = hex ? 2 : 1; ok && k < body.size(); ++k) {
                const char32_t c = body[k];
                int            d = (c >= '0' && c <= '9') ? int(c - '0') : -1;
                if (hex && d < 0 && c >= 'a' && c <= 'f') d = int(c - 'a' + 10);
                if (hex && d < 0 && c >= 'A' && c <= 'F') d = int(c - 'A' + 10);
                ok = d >= 0;
                n  = std::min<uint64_t>(n * (hex ? 16 : 10) + static_cast<uint64_t>(std::max(d, 0)), 0x110000);
            }
            if (ok) out += numeric_reference(n), replaced = true;
        } else {
            const std::string name = utf8_encode(body);
            for (const Entity& e : kEntities) {
                if (name == e.name) {
                    out += e.cp, replaced = true;
                    break;
                }
            }
        }
        if (replaced)
            i = semi;
        else
            out += t[i];
    }
    return out;
}

// ftfy's LIGATURES table (chardata.py): Latin ligatures and digraphs only.
std::u32string ligature(char32_t c) {
    switch (c) {
        case 0x132: return U"IJ";
        case 0x133: return U"ij";
        case 0x149: return U"\u02BCn";
        case 0x1F1: return U"DZ";
        case 0x1F2: return U"Dz";
        case 0x1F3: return U"dz";
        case 0x1C4: return U"D\u017D";
        case 0x1C5: return U"D\u017E";
        case 0x1C6: return U"d\u017E";
        case 0x1C7: return U"LJ";
        case 0x1C8: return U"Lj";
        case 0x1C9: return U"lj";
        case 0x1CA: return U"NJ";
        case 0x1CB: return U"Nj";
        case 0x1CC: return U"nj";
        case 0xFB00: return U"ff";
        case 0xFB01: return U"fi";
        case 0xFB02: return U"fl";
        case 0xFB03: return U"ffi";
        case 0xFB04: return U"ffl";
        case 0xFB05: return U"\u017Ft";
        case 0xFB06: return U"st";
        default: return std::u32string(1, c);
    }
}

// ftfy remove_control_chars: C0 controls but \t \n \f \r, DEL, deprecated Arabic format controls, interlinear
// annotation marks, the object replacement character and the BOM.
bool removed_control(char32_t c) {
    return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
           c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

std::u32string ftfy_pass(const std::u32string& text) {
    const std::u32string t = unescape_entities(text);
    std::u32string       out;
    out.reserve(t.size());
    // fix_c1_controls, fix_latin_ligatures, fix_character_width, uncurl_quotes: each a per-character map applied
    // to the previous one's output, in ftfy's order.
    for (char32_t c : t) {
        for (char32_t l : ligature(unicode_c1_as_windows1252(c))) {
            char32_t   wide[2];
            const int  n    = unicode_width_fold(l, wide);
            const auto emit = [&out](char32_t x) {
                if (x == 0x2BC || (x >= 0x2018 && x <= 0x201B))
                    x = U'\'';
                else if (x >= 0x201C && x <= 0x201F)
                    x = U'"';
                out += x;
            };
            if (n == 0) emit(l);
            for (int k = 0; k < n; ++k) emit(wide[k]);
        }
    }
    // remove_terminal_escapes (ESC [ digits/semicolons letter), then remove_control_chars.
    std::u32string kept;
    kept.reserve(out.size());
    for (size_t i = 0; i < out.size(); ++i) {
        if (out[i] == 0x1B && i + 1 < out.size() && out[i + 1] == U'[') {
            size_t j = i + 2;
            while (j < out.size() && ((out[j] >= '0' && out[j] <= '9') || out[j] == ';')) ++j;
            if (j < out.size() && ((out[j] >= 'a' && out[j] <= 'z') || (out[j] >= 'A' && out[j] <= 'Z'))) {
                i = j;
                continue;
            }
        }
        if (!removed_control(out[i])) kept += out[i];
    }
    return unicode_nfc(kept);
}

// basic_clean + whitespace_clean + lower().
std::u32string clean(const std::string& text) {
    std::u32string t = utf8_decode(text);
    for (int pass = 0; pass < 16; ++pass) {  // ftfy repeats until a fixed point; each pass only shortens entities
        std::u32string next = ftfy_pass(t);
        if (next == t) break;
        t = std::move(next);
    }
    std::u32string collapsed;
    collapsed.reserve(t.size());
    for (char32_t c : t) {
        if (unicode_class(c) == UNICODE_CLASS_SPACE) {
            if (!collapsed.empty() && collapsed.back() != U' ') collapsed += U' ';
        } else {
            collapsed += c;
        }
    }
    if (!collapsed.empty() && collapsed.back() == U' ') collapsed.pop_back();
    return unicode_lower(collapsed);
}

// The character classes of CLIP's pattern as the `regex` package applies it, with IGNORECASE: U+0345 (it
// case-folds to iota) then matches no alternative at all, so it is skipped like a space (and ends a run).
UnicodeClass piece_class(char32_t c) { return c == 0x345 ? UNICODE_CLASS_SPACE : unicode_class(c); }

bool starts_with(const std::u32string& s, size_t i, const char* literal) {
    const size_t n = std::strlen(literal);
    if (i + n > s.size()) return false;
    for (size_t k = 0; k < n; ++k)
        if (s[i + k] != static_cast<char32_t>(literal[k])) return false;
    return true;
}

// The contraction alternatives 's 't 're 've 'm 'll 'd (after lowercasing; IGNORECASE also lets the long s
// U+017F match 's); returns the length matched at i, 0 if none.
size_t contraction_at(const std::u32string& s, size_t i) {
    if (s[i] != U'\'' || i + 1 >= s.size()) return 0;
    const char32_t c = s[i + 1];
    if (c == U's' || c == 0x17F || c == U't' || c == U'm' || c == U'd') return 2;
    if (i + 2 < s.size() &&
        ((c == U'r' && s[i + 2] == U'e') || (c == U'v' && s[i + 2] == U'e') || (c == U'l' && s[i + 2] == U'l')))
        return 3;
    return 0;
}

}  // namespace

std::string clip_clean_text(const std::string& text) { return utf8_encode(clean(text)); }

int32_t ClipTokenizer::intern(const std::string& symbol) {
    auto [it, added] = symbol_ids_.emplace(symbol, static_cast<int32_t>(symbols_.size()));
    if (added) symbols_.push_back(symbol);
    return it->second;
}

void ClipTokenizer::add_merges(const std::vector<std::pair<std::string, std::string>>& merges) {
    for (int b = 0; b < 256; ++b) {
        byte_symbol_[b]     = intern(byte_symbol(b));
        byte_end_symbol_[b] = intern(byte_symbol(b) + kEndOfWord);
    }
    symbol_ids_.reserve(merges.size() * 2 + 512);
    merges_.reserve(merges.size());
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const auto& [left, right] = merges[rank];
        const uint64_t key        = (static_cast<uint64_t>(intern(left)) << 32) | static_cast<uint32_t>(intern(right));
        // A repeated pair takes its last rank, as dict(zip(merges, range(n))) does.
        merges_[key] = Merge{static_cast<int32_t>(rank), intern(left + right)};
    }
}

void ClipTokenizer::finish(const std::unordered_map<std::string, int64_t>& vocab) {
    const auto special = [&vocab](const std::string& name) {
        auto it = vocab.find(name);
        if (it == vocab.end()) throw_bad_input("CLIP vocabulary has no " + name + " token");
        return it->second;
    };
    bos_       = special(kStartOfText);
    eos_       = special(kEndOfText);
    auto comma = vocab.find("," + kEndOfWord);
    comma_     = comma == vocab.end() ? -1 : comma->second;
    symbol_token_.resize(symbols_.size());
    for (size_t s = 0; s < symbols_.size(); ++s) {
        auto it          = vocab.find(symbols_[s]);
        symbol_token_[s] = it == vocab.end() ? eos_ : it->second;  // HF's unk_token is <|endoftext|>
    }
}

ClipTokenizer ClipTokenizer::from_merges_file(const std::string& path) {
    const auto merges = parse_merges(read_file(path, "CLIP merges file"), path);
    if (merges.size() != static_cast<size_t>(kClipMerges))
        throw_bad_input(path + ": expected " + std::to_string(kClipMerges) + " merges after the header line, found " +
                        std::to_string(merges.size()) + " (truncated file?)");
    ClipTokenizer tok;
    // simple_tokenizer.py's vocabulary: bytes, bytes + "</w>", each merge's concatenation, the two specials.
    for (int i = 0; i < 256; ++i) tok.tokens_.push_back(byte_symbol(kBytes.order[i]));
    for (int i = 0; i < 256; ++i) tok.tokens_.push_back(byte_symbol(kBytes.order[i]) + kEndOfWord);
    for (const auto& [left, right] : merges) tok.tokens_.push_back(left + right);
    tok.tokens_.push_back(kStartOfText);
    tok.tokens_.push_back(kEndOfText);
    std::unordered_map<std::string, int64_t> vocab;
    vocab.reserve(tok.tokens_.size());
    for (size_t id = 0; id < tok.tokens_.size(); ++id) vocab.emplace(tok.tokens_[id], static_cast<int64_t>(id));
    tok.add_merges(merges);
    tok.finish(vocab);
    return tok;
}

ClipTokenizer ClipTokenizer::from_folder(const std::string& dir) {
    const fs::path root(dir);
    const fs::path vocab_path = root / "vocab.json";
    const auto     j          = nlohmann::json::parse(read_file(vocab_path, "tokenizer vocab.json"), nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw_bad_input(vocab_path.string() + " is not a JSON object");
    std::unordered_map<std::string, int64_t> vocab;
    int64_t                                  max_id = -1;
    for (const auto& [token, id] : j.items()) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24))
            throw_bad_input(vocab_path.string() + ": token '" + token + "' has no valid id");
        vocab.emplace(token, id.get<int64_t>());
        max_id = std::max(max_id, id.get<int64_t>());
    }
    ClipTokenizer tok;
    tok.tokens_.resize(static_cast<size_t>(max_id + 1));
    for (const auto& [token, id] : vocab) tok.tokens_[static_cast<size_t>(id)] = token;
    const fs::path merges_path = root / "merges.txt";
    tok.add_merges(parse_merges(read_file(merges_path, "tokenizer merges.txt"), merges_path));
    tok.finish(vocab);
    for (const char* file : {"special_tokens_map.json", "tokenizer_config.json"}) {
        const auto pad = pad_token_of(root / file);
        if (!pad) continue;
        auto it = vocab.find(*pad);
        if (*pad == kEndOfText)
            tok.pad_hint_ = CLIP_PAD_EOS;
        else if (it != vocab.end() && it->second == 0)
            tok.pad_hint_ = CLIP_PAD_ZERO;
        break;
    }
    return tok;
}

ClipTokenizer ClipTokenizer::load(const std::string& path) {
    if (fs::is_directory(path)) return from_folder(path);
    return from_merges_file(path);
}

void ClipTokenizer::bpe(const std::string& piece, std::vector<int64_t>& out) const {
    std::vector<int32_t> word(piece.size());
    for (size_t i = 0; i < piece.size(); ++i) {
        const auto b = static_cast<unsigned char>(piece[i]);
        word[i]      = i + 1 == piece.size() ? byte_end_symbol_[b] : byte_symbol_[b];
    }
    // Merge the lowest-ranked adjacent pair everywhere it occurs, left to right without overlap, until no pair
    // has a rank (simple_tokenizer.py bpe()).
    std::vector<int32_t> next;
    while (word.size() > 1) {
        const Merge* best     = nullptr;
        uint64_t     best_key = 0;
        for (size_t i = 0; i + 1 < word.size(); ++i) {
            const uint64_t key = (static_cast<uint64_t>(word[i]) << 32) | static_cast<uint32_t>(word[i + 1]);
            auto           it  = merges_.find(key);
            if (it != merges_.end() && (best == nullptr || it->second.rank < best->rank)) {
                best     = &it->second;
                best_key = key;
            }
        }
        if (best == nullptr) break;
        const auto first = static_cast<int32_t>(best_key >> 32), second = static_cast<int32_t>(best_key & 0xFFFFFFFF);
        next.clear();
        for (size_t i = 0; i < word.size(); ++i) {
            if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
                next.push_back(best->result);
                ++i;
            } else {
                next.push_back(word[i]);
            }
        }
        word.swap(next);
    }
    for (int32_t s : word) out.push_back(symbol_token_[static_cast<size_t>(s)]);
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
    const std::u32string s = clean(text);
    std::vector<int64_t> ids;
    std::string          piece;
    for (size_t i = 0; i < s.size();) {
        if (starts_with(s, i, "<|startoftext|>")) {
            ids.push_back(bos_);
            i += kStartOfText.size();
            continue;
        }
        if (starts_with(s, i, "<|endoftext|>")) {
            ids.push_back(eos_);
            i += kEndOfText.size();
            continue;
        }
        const UnicodeClass cls = piece_class(s[i]);
        if (cls == UNICODE_CLASS_SPACE) {
            ++i;
            continue;
        }
        size_t end = i + contraction_at(s, i);
        if (end == i) {
            end = i + 1;
            if (cls != UNICODE_CLASS_NUMBER)  // [\p{N}] takes one digit; letters and the rest take maximal runs
                while (end < s.size() && piece_class(s[end]) == cls) ++end;
        }
        piece.clear();
        for (size_t k = i; k < end; ++k) utf8_append(piece, s[k]);
        bpe(piece, ids);
        i = end;
    }
    return ids;
}

const std::string& ClipTokenizer::token(int64_t id) const {
    static const std::string kNone;
    return id >= 0 && id < vocab_size() ? tokens_[static_cast<size_t>(id)] : kNone;
}

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids) const {
    std::string joined;
    for (int64_t id : ids) joined += token(id);
    std::string bytes;
    for (char32_t c : utf8_decode(joined)) {
        const char32_t* hit = std::find(std::begin(kBytes.chars), std::end(kBytes.chars), c);
        if (hit != std::end(kBytes.chars)) bytes += static_cast<char>(hit - std::begin(kBytes.chars));
    }
    std::string text;
    for (size_t i = 0; i < bytes.size();) {
        if (bytes.compare(i, kEndOfWord.size(), kEndOfWord) == 0) {
            text += ' ';
            i += kEndOfWord.size();
        } else {
            text += bytes[i++];
        }
    }
    // Byte-level tokens can split a character; a sequence that does not decode becomes U+FFFD (errors="replace").
    std::string valid;
    for (size_t i = 0; i < text.size();) {
        const size_t len  = std::max(utf8_length(static_cast<unsigned char>(text[i])), 1);
        size_t       have = 1;
        while (have < len && i + have < text.size() && utf8_length(static_cast<unsigned char>(text[i + have])) == 0)
            ++have;
        try {
            if (have != len) throw WorkerError(ERROR_TYPE_BAD_INPUT, "truncated");
            valid += utf8_encode(utf8_decode(text.substr(i, len)));
        } catch (const WorkerError&) {
            valid += "\xEF\xBF\xBD";
        }
        i += have;
    }
    return valid;
}
