// Caption tag dropout and category weights (train_data.h).
#include "runtime/train_data.h"

#include <cctype>
#include <cmath>
#include <map>
#include <set>

// kohya's caption_tag_dropout_rate: each comma-separated tag of a caption is dropped with probability
// `rate` (u[k] < rate drops tag k), so the model also learns what each tag means on its own — a short prompt
// ("animals") then carries the concept that only ever appeared inside long captions. A tag holding one of
// `keep_words` (a trigger word; whole words, case-insensitive: kohya's keep_tokens by name instead of
// position) never drops, so the trigger alone learns to carry the style. Without such a tag one tag always
// stays (the one with the largest u). Tags past u's length are always kept.
std::string caption_drop_tags(const std::string& caption, const float* u, int64_t n_u, double rate,
                              const std::vector<std::string>& keep_words) {
    auto lower = [](std::string w) {
        for (char& ch : w) ch = (char)std::tolower((unsigned char)ch);
        return w;
    };
    std::set<std::string> keep;
    for (const auto& w : keep_words) keep.insert(lower(w));
    auto holds_keep_word = [&](const std::string& tag) {
        std::string word;
        for (size_t i = 0; i <= tag.size(); ++i) {
            const unsigned char ch = i < tag.size() ? (unsigned char)tag[i] : ' ';
            if (std::isalnum(ch) || ch == '_' || ch == '-' || ch >= 0x80) {
                word += (char)std::tolower(ch);
            } else if (!word.empty()) {
                if (keep.count(word)) return true;
                word.clear();
            }
        }
        return false;
    };
    std::vector<std::string> tags;
    for (size_t start = 0;;) {
        const size_t comma = caption.find(',', start);
        std::string  tag   = caption.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        const size_t a = tag.find_first_not_of(' '), b = tag.find_last_not_of(' ');
        if (a != std::string::npos) tags.push_back(tag.substr(a, b - a + 1));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    if (tags.size() < 2) return caption;
    std::vector<bool> kept(tags.size(), false);
    bool              any_kept = false;
    for (size_t k = 0; k < tags.size(); ++k) {
        kept[k]  = !keep.empty() && holds_keep_word(tags[k]);
        any_kept = any_kept || kept[k];
    }
    int64_t best = 0;
    for (int64_t k = 1; k < std::min<int64_t>(n_u, (int64_t)tags.size()); ++k) {
        if (u[k] > u[best]) best = k;
    }
    std::string out;
    for (int64_t k = 0; k < (int64_t)tags.size(); ++k) {
        if (k < n_u && !kept[k] && (any_kept || k != best) && u[k] < rate) continue;
        out += (out.empty() ? "" : ", ") + tags[k];
    }
    return out;
}

// Per-image sampling weights ∝ n_c^(−β) for an image of category c with n_c images: β = 0 draws images
// uniformly, β = 1 draws categories uniformly; in between (0.5) small categories are seen more often
// without repeating their few images until they are memorised.
torch::Tensor category_weights(const std::vector<std::string>& categories, double beta) {
    std::map<std::string, int64_t> counts;
    for (const auto& c : categories) ++counts[c];
    std::vector<double> w;
    w.reserve(categories.size());
    for (const auto& c : categories) w.push_back(std::pow((double)counts[c], -beta));
    return torch::tensor(w, torch::kFloat64);
}
