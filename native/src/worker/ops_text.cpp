// Ops on prompt text: tokenize, the CLIP tokenizer and A1111's prompt front end (tokenizers/) as the app's prompt
// box needs them — the "N/75" token count, the chunk split, and what emphasis made of each token — before any SD
// text encoder is loaded. Reads no model and changes nothing the other ops see, so it runs beside a job.
#include <map>
#include <memory>
#include <mutex>

#include "core/errors.h"
#include "tokenizers/prompt_weights.h"
#include "worker/ops.h"

namespace {

// Loading rebuilds the 49,408-entry vocabulary (~0.15 s): keep the few tokenizers a session uses, by path. The
// job thread and the protocol loop may both tokenize, hence the lock; tokenizers are immutable once built.
std::shared_ptr<const ClipTokenizer> cached_tokenizer(const std::string& path) {
    static std::mutex                                                  lock;
    static std::map<std::string, std::shared_ptr<const ClipTokenizer>> cache;
    std::lock_guard<std::mutex>                                        guard(lock);
    const auto                                                         hit = cache.find(path);
    if (hit != cache.end()) return hit->second;
    auto tokenizer = std::make_shared<const ClipTokenizer>(ClipTokenizer::load(path));
    if (cache.size() >= 4) cache.erase(cache.begin());
    cache.emplace(path, tokenizer);
    return tokenizer;
}

ClipPad pad_from_name(const std::string& name, const ClipTokenizer& tokenizer) {
    if (name == "eos") return CLIP_PAD_EOS;
    if (name == "zero") return CLIP_PAD_ZERO;
    if (name.empty()) return tokenizer.pad_hint().value_or(CLIP_PAD_EOS);
    throw_bad_input("argument 'pad' must be one of: eos, zero (or absent: the tokenizer folder's own, else eos)");
}

}  // namespace

// args: prompt, tokenizer (resources/tokenizers/clip/merges.txt or a diffusers tokenizer/ folder), pad,
// emphasis (original | no_norm | ignore | none), comma_backtrack (0..74).
// Result: chunks, token_count (A1111's "N/75"), ids and weights as [chunks][77], and each chunk's token strings
// (vocabulary form, "</w>" marking a word's end) so the app can show where a chunk was cut.
Json op_tokenize(WorkerState&, const Json& args, const EmitFn&) {
    const std::string prompt = need_str(args, "prompt");
    if (prompt.size() > (1u << 20)) throw_bad_input("argument 'prompt' is longer than 1 MiB");
    const std::string                          path = need_str(args, "tokenizer");
    const std::shared_ptr<const ClipTokenizer> tok  = cached_tokenizer(path);
    PromptOptions                              options;
    options.emphasis        = emphasis_from_name(get_str(args, "emphasis", "original"));
    options.comma_backtrack = (int)get_int(args, "comma_backtrack", 20, 0, kClipChunkTokens - 1);
    const ClipPad      pad  = pad_from_name(get_str(args, "pad", ""), *tok);
    const PromptTokens t    = tokenize_prompt(*tok, prompt, pad, options);

    Json ids = Json::array(), weights = Json::array(), tokens = Json::array();
    for (int64_t c = 0; c < t.chunks; ++c) {
        const auto begin = t.ids.begin() + c * kClipContext;
        ids.push_back(std::vector<int64_t>(begin, begin + kClipContext));
        weights.push_back(
            std::vector<float>(t.weights.begin() + c * kClipContext, t.weights.begin() + (c + 1) * kClipContext));
        Json row = Json::array();
        for (int64_t i = 1; i < kClipContext - 1; ++i) {
            const int64_t id = *(begin + i);
            if (id == tok->eos_id()) break;  // every chunk's EOS comes before its padding (id 0 is "!", a real token)
            row.push_back(tok->token(id));
        }
        tokens.push_back(row);
    }
    return {{"chunks", t.chunks},
            {"token_count", t.token_count},
            {"ids", ids},
            {"weights", weights},
            {"tokens", tokens},
            {"pad", pad == CLIP_PAD_EOS ? "eos" : "zero"},
            {"vocab_size", tok->vocab_size()}};
}
