// CLIP's byte-level BPE tokenizer, as openai/CLIP clip/simple_tokenizer.py and HF CLIPTokenizer (what SD-1.x,
// SD-2.x and SDXL were trained with) turn text into ids. Steps (simple_tokenizer.py's names):
//   1. basic_clean: the fixes of ftfy.fix_text that change prompts (clip_clean_text says which), HTML entities;
//   2. whitespace_clean: collapse \s+ to one space, strip; lowercase (Python's str.lower());
//   3. pre-tokenize with  <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//   4. each piece's UTF-8 bytes through GPT-2's byte->unicode map, "</w>" on its last symbol, BPE by merge rank.
// Vocabulary: 256 bytes + 256 bytes with "</w>" + 48,894 merges + 2 specials = 49,408 (sd-formats.md §4).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

constexpr int kClipContext     = 77;     // BOS + 75 prompt tokens + EOS
constexpr int kClipChunkTokens = 75;     // prompt tokens per chunk
constexpr int kClipMerges      = 48894;  // lines [1, 48894] of the merges file: 49152 - 256 - 2 (simple_tokenizer.py)

// What fills a sequence after its EOS. SD-1.x and SDXL's CLIP-L pad with EOS (49407); SD-2.x (OpenCLIP-H) and
// SDXL's bigG pad with 0 (ComfyUI sdxl_clip.py pad_with_end=False, sd.cpp `tokenizer(sd2 ? 0 : 49407)`).
enum ClipPad {
    CLIP_PAD_EOS,
    CLIP_PAD_ZERO,
};

class ClipTokenizer {
  public:
    // openai's bpe_simple_vocab_16e6 merges (resources/tokenizers/clip/merges.txt); the vocabulary is rebuilt from
    // them as simple_tokenizer.py does, so the file must hold all 48,894 merges.
    static ClipTokenizer from_merges_file(const std::string& path);
    // A diffusers/HF tokenizer folder: vocab.json + merges.txt (special_tokens_map.json / tokenizer_config.json
    // only for pad_hint).
    static ClipTokenizer from_folder(const std::string& dir);
    // A folder holding vocab.json goes to from_folder, a file to from_merges_file.
    static ClipTokenizer load(const std::string& path);

    // Prompt text -> ids, without BOS/EOS. A literal "<|startoftext|>" / "<|endoftext|>" in the text is the special
    // token, as in both references.
    std::vector<int64_t> encode(const std::string& text) const;
    // ids -> text: tokens joined, "</w>" read as a space (simple_tokenizer.py decode); unknown ids are skipped.
    std::string decode(const std::vector<int64_t>& ids) const;
    // One token's vocabulary string ("cat</w>", "Ã©" for the byte-mapped 'é'); empty for an unknown id.
    const std::string& token(int64_t id) const;

    int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
    int64_t bos_id() const { return bos_; }
    int64_t eos_id() const { return eos_; }
    int64_t comma_id() const { return comma_; }  // ",</w>", -1 when the vocabulary lacks it
    // The pad a tokenizer folder declares (pad_token "<|endoftext|>" -> EOS, "!" / id 0 -> zero), if it says.
    std::optional<ClipPad> pad_hint() const { return pad_hint_; }

  private:
    struct Merge {
        int32_t rank;
        int32_t result;  // symbol id of the merged pair
    };

    int32_t intern(const std::string& symbol);
    void    add_merges(const std::vector<std::pair<std::string, std::string>>& merges);
    void    finish(const std::unordered_map<std::string, int64_t>& vocab);
    void    bpe(const std::string& piece, std::vector<int64_t>& out) const;

    // BPE runs on interned symbol ids; a pair (a, b) is keyed as a << 32 | b.
    std::vector<std::string>                 symbols_;
    std::unordered_map<std::string, int32_t> symbol_ids_;
    std::unordered_map<uint64_t, Merge>      merges_;
    std::vector<int64_t>                     symbol_token_;  // symbol -> vocabulary id (unknown -> EOS, as HF)
    int32_t                                  byte_symbol_[256]     = {};
    int32_t                                  byte_end_symbol_[256] = {};  // the byte with "</w>"
    std::vector<std::string>                 tokens_;                     // vocabulary id -> string
    int64_t                                  bos_ = -1, eos_ = -1, comma_ = -1;
    std::optional<ClipPad>                   pad_hint_;
};

// Steps 1-2 on UTF-8 text (exposed for tests and for showing users what the tokenizer saw). From ftfy.fix_text's
// defaults, repeated until nothing changes as ftfy does: HTML entities (a common subset by name, all numeric ones),
// C1 controls as Windows-1252, Latin ligatures, fullwidth/halfwidth forms, curly quotes straightened, terminal
// escapes and invisible controls removed, NFC. Not done: ftfy's mojibake repair (fix_encoding and its helpers).
std::string clip_clean_text(const std::string& text);
