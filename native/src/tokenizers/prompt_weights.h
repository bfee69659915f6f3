// Prompt conditioning front end as AUTOMATIC1111 does it (the syntax artists type): emphasis weights from
// modules/prompt_parser.py parse_prompt_attention, 75-token chunks with BREAK and the comma rule from
// modules/sd_hijack_clip.py tokenize_line, and the weighting of the text encoder's output from
// modules/sd_emphasis.py. Our own code, following those files' rules; the tests hold A1111's doctests.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "tokenizers/clip_tokenizer.h"

// A1111's "Emphasis mode" setting.
enum Emphasis {
    EMPHASIS_ORIGINAL,  // weight the hidden states, then restore each chunk's mean (A1111's default)
    EMPHASIS_NO_NORM,   // weight the hidden states only ("No norm", preferred by some for SDXL)
    EMPHASIS_IGNORE,    // parse the brackets away, weight nothing
    EMPHASIS_NONE,      // no parsing at all: brackets and BREAK are plain text
};

// "original" | "no_norm" | "ignore" | "none"; anything else is a bad_input naming the allowed values.
Emphasis emphasis_from_name(const std::string& name);

struct PromptSegment {
    std::string text;
    double      weight   = 1.0;  // double, as A1111 multiplies Python floats: equal weights merge only when bit-equal
    bool        is_break = false;
};

// (text) ×1.1, [text] ÷1.1, (text:1.3) ×1.3, nesting multiplies; \( \) \[ \] \\ are literal; a bracket that never
// closes still applies from where it opened to the end; a stray ) or ] and a ":1.3)" with no open "(" are text;
// runs of equal weight merge. BREAK (a whole word, upper case) ends the chunk. One deliberate difference: A1111
// multiplies a BREAK inside brackets into a word "break" with weight -1.1; here it still breaks the chunk.
// A weight that is not a number ("(a:1.2.3)", where A1111 raises) is a bad_input naming it.
std::vector<PromptSegment> parse_prompt_attention(const std::string& text);

struct PromptOptions {
    Emphasis emphasis = EMPHASIS_ORIGINAL;
    // A1111 comma_padding_backtrack (0..74, default 20): when a chunk fills up and its last comma is within this
    // many tokens of the end, the words after that comma move to the next chunk. 0 turns it off.
    int comma_backtrack = 20;
};

struct PromptTokens {
    int64_t              chunks = 0;  // ≥ 1
    std::vector<int64_t> ids;         // [chunks, 77] row-major: BOS, 75 prompt or pad tokens, EOS
    std::vector<float>   weights;     // [chunks, 77]; 1 at BOS, EOS and padding, and everywhere without emphasis
    // A1111's count, shown as "N/75": 75 for every chunk before the last plus the last chunk's tokens (the plain
    // token count unless BREAK or the comma rule moved words).
    int64_t token_count = 0;

    torch::Tensor ids_tensor() const;      // int64 [chunks, 77]
    torch::Tensor weights_tensor() const;  // float32 [chunks, 77]
};

// The whole front end: parse emphasis, tokenize each segment on its own (as A1111 tokenizes each parsed piece),
// fill 75-token chunks (BREAK, comma rule), wrap each in BOS … EOS and pad after the EOS (EOS or 0, as `pad`).
PromptTokens tokenize_prompt(const ClipTokenizer& tokenizer, const std::string& text, ClipPad pad,
                             const PromptOptions& options = {});

// Weights the text encoder's output as A1111's emphasis does, per chunk: z [chunks, 77, dim] (one prompt; each
// chunk was encoded on its own) times weights [chunks, 77]; EMPHASIS_ORIGINAL then rescales each chunk so its
// mean over (77, dim) is what it was. Computed in float32, returned in z's dtype. A1111 takes that mean over the
// whole batch of prompts in a chunk position; per prompt, as here, is the same for a batch of one. A chunk whose
// weighted mean is exactly 0 keeps the weighted values (A1111 would divide by zero).
torch::Tensor apply_emphasis(const torch::Tensor& z, const torch::Tensor& weights, Emphasis emphasis);
