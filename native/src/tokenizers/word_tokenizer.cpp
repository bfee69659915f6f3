// The word tokenizer (word_tokenizer.h).
#include "tokenizers/word_tokenizer.h"

#include <algorithm>
#include <cctype>

#include "core/hash.h"

WordTokenizer::WordTokenizer(std::vector<std::string> words, int64_t spare) : spare_buckets(spare) {
    const std::vector<std::string> specials = {"<pad>", "<unk>", "<bos>", "<eos>"};
    vocab                                   = specials;
    for (const auto& w : words) {
        if (std::find(specials.begin(), specials.end(), w) == specials.end()) vocab.push_back(w);
    }
    for (size_t i = 0; i < vocab.size(); ++i) ids.emplace(vocab[i], (int64_t)i);
}

std::vector<int64_t> WordTokenizer::encode(const std::string& text, int64_t max_length) const {
    std::vector<int64_t> out = {kBos};
    std::string          word;
    auto                 flush = [&] {
        if (word.empty()) return;
        auto it = ids.find(word);
        if (it != ids.end()) {
            out.push_back(it->second);
        } else {
            out.push_back(spare_buckets > 0 ? (int64_t)vocab.size() + (int64_t)(fnv1a64(word) % (uint64_t)spare_buckets)
                                                            : kUnk);
        }
        word.clear();
    };
    for (char ch : text) {
        const unsigned char c = (unsigned char)ch;
        if (std::isalnum(c) || c == '\'') {
            word.push_back((char)std::tolower(c));
        } else {
            flush();
        }
    }
    flush();
    if ((int64_t)out.size() > max_length - 1) out.resize(max_length - 1);
    out.push_back(kEos);
    out.resize(max_length, kPad);
    return out;
}
