// tokenizers/: the CLIP tokenizer and A1111's prompt front end against facts from public sources.
// Every row of token ids below is quoted from the source named beside it (and was also checked against openai/CLIP
// simple_tokenizer.py itself while writing: all agree). Two tools ride in the same binary:
// `shira-worker-tests unicode-dump` serves tests/native/unicode_oracle.py, `tokenizer-bench` prints the speed.
#include <unistd.h>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "tokenizers/clip_tokenizer.h"
#include "tokenizers/prompt_weights.h"
#include "tokenizers/unicode.h"
#include "worker/worker.h"

namespace {

namespace fs = std::filesystem;

using Ids = std::vector<int64_t>;

std::string show(const Ids& ids) {
    std::string s = "[";
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
    return s + "]";
}

void expect_ids(const char* where, const std::string& text, const Ids& got, const Ids& want) {
    if (got == want) return;
    std::fprintf(stderr, "  %s: '%s'\n    got  %s\n    want %s\n", where, text.c_str(), show(got).c_str(),
                 show(want).c_str());
    ++g_failures;
}

template <typename F>
bool throws(ErrorType type, const std::string& needle, F&& f) {
    try {
        f();
    } catch (const WorkerError& e) {
        if (e.type == type && std::string(e.what()).find(needle) != std::string::npos) return true;
        std::fprintf(stderr, "  wrong error (%s): %s\n", error_type_name(e.type), e.what());
        return false;
    }
    return false;
}

const ClipTokenizer& clip() {
    static const ClipTokenizer tok = ClipTokenizer::from_merges_file(SHIRA_CLIP_MERGES);
    return tok;
}

const std::string kTokTmp = "/tmp/shira-tokenizer-tests-" + std::to_string(getpid());

void write_file(const fs::path& path, const std::string& text) {
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
}

struct Row {
    const char* text;
    Ids         ids;  // without BOS/EOS unless the source shows them
};

// ---- Token ids --------------------------------------------------------------------------------------------------

SHIRA_TEST(tokenizer_clip_ids) {
    const ClipTokenizer& tok = clip();
    EXPECT(tok.vocab_size() == 49408);
    EXPECT(tok.bos_id() == 49406 && tok.eos_id() == 49407);
    EXPECT(tok.comma_id() == 267);  // ",</w>": the comma in "a dog, a house." below
    EXPECT(tok.token(320) == "a</w>" && tok.token(49407) == "<|endoftext|>");

    const std::vector<Row> rows = {
        // elixir-nx/bumblebee test/bumblebee/text/clip_tokenizer_test.exs (openai/clip-vit-base-patch32).
        {"a photo of a cat", {320, 1125, 539, 320, 2368}},
        {"a photo of a dog", {320, 1125, 539, 320, 1929}},
        // apple/corenet, test_openai_clip_tokenizer (openai's bpe_simple_vocab_16e6).
        {"the quick brown fox jumped over the lazy dog", {518, 3712, 2866, 3240, 16901, 962, 518, 10753, 1929}},
        // nishio/external_brain_in_markdown pages/CLIP.md: clip.tokenize("a painting of a cat"),
        // clip.tokenize("bozuman").
        {"a painting of a cat", {320, 3086, 539, 320, 2368}},
        {"bozuman", {647, 4091, 786}},
        // aagdev/mlimgsynth src/test_text_tokenize_clip.c (MIT). Its rows with digits ("2025", the 2022 in the long
        // one) are left out: they end only the last digit with </w>, where HF's row below ends every digit.
        {"a dog jumping", {320, 1929, 11476}},
        {"   a   dog\t\tjumping\r\n", {320, 1929, 11476}},
        {"an illustration", {550, 6052}},
        {"a sign saying \"Here lies Cesar\"", {320, 2292, 4455, 257, 763, 3205, 28603, 257}},
        {"a sign saying 'Here lies Cesar'", {320, 2292, 4455, 262, 763, 3205, 28603, 262}},
        {"A'veA'llA's", {320, 1200, 320, 1342, 320, 568}},
        {"", {}},
        {"  \t  \n", {}},
        {"a dog, a house.", {320, 1929, 267, 320, 1212, 269}},
        {"coraz\xc3\xb3n", {851, 854, 13926}},
        {"cat---dog-\xe2\x80\x94-rabbit", {2368, 11079, 1929, 12, 6718, 268, 10274}},
        {"\xe3\x81\xbe\xe3\x81\x82\xe3\x80\x81\xe3\x81\x8a\xe5\xbe\x85\xe3\x81\xa1\xe3\x81\xaa\xe3\x81\x95\xe3\x81\x84"
         "\xe3\x80\x82",
         {4813, 122, 4813, 480, 45262, 4813, 232, 161, 122, 227, 4813, 94, 29104, 4813, 243, 38850, 38000}},
        // huggingface/transformers tests/models/clip/test_tokenization_clip.py, integration_expected_token_ids
        // without its BOS/EOS (the common tokenizer test's input string: digits, accents, Chinese, Thai, <s>, runs
        // of white space).
        {"This is a test\nI was born in 92000, and this is fals\xc3\xa9.\n"
         "\xe7\x94\x9f\xe6\xb4\xbb\xe7\x9a\x84\xe7\x9c\x9f\xe8\xb0\x9b\xe6\x98\xaf\nHi  Hello\nHi   Hello\n\n \n  \n "
         "Hello\n"
         "<s>\nhi<s>there\nThe following string should be properly encoded: Hello.\n"
         "But ird and \xe0\xb8\x9b\xe0\xb8\xb5   ird   \xe0\xb8\x94\nHey how are you doing",
         {589, 533,  320,   1628,  328,  739,   2683,  530,   280,  273,   271, 271,  271,  267,   537,
          589, 533,  2778,  82,    4166, 269,   33375, 162,   112,  119,   163, 248,  226,  41570, 164,
          108, 249,  42891, 363,   1883, 3306,  1883,  3306,  3306, 283,   338, 285,  1883, 283,   338,
          285, 997,  518,   3473,  9696, 1535,  655,   12560, 524,  33703, 281, 3306, 269,  767,   2770,
          537, 1777, 505,   20278, 2770, 38825, 2189,  829,   631,  592,   1960}},
    };
    for (const Row& r : rows) expect_ids("clip ids", r.text, tok.encode(r.text), r.ids);

    // The special tokens written out are the special tokens (the first alternatives of simple_tokenizer.py's pattern).
    expect_ids("specials", "", tok.encode("<|startoftext|>a photo<|ENDOFTEXT|>"), {49406, 320, 1125, 49407});
    // Case and the white space between words change nothing (simple_tokenizer.py: whitespace_clean, lower()).
    expect_ids("case folded", "A PHOTO OF A CAT", tok.encode("A PHOTO OF A CAT"), tok.encode("a photo of a cat"));
    // decode() joins tokens and reads "</w>" as a space (simple_tokenizer.py decode).
    EXPECT(tok.decode({320, 1125, 539, 320, 2368}) == "a photo of a cat ");
    EXPECT(tok.decode(tok.encode("coraz\xc3\xb3n")) == "coraz\xc3\xb3n ");
}

// A diffusers tokenizer folder: HF's own toy vocabulary, and a full one written from the shipped merges.
SHIRA_TEST(tokenizer_clip_folder) {
    // huggingface/transformers tests/models/clip/test_tokenization_clip.py setUp / test_full_tokenizer.
    const fs::path toy     = kTokTmp + "/toy";
    const char*    words[] = {"l",
                              "o",
                              "w",
                              "e",
                              "r",
                              "s",
                              "t",
                              "i",
                              "d",
                              "n",
                              "lo",
                              "l</w>",
                              "w</w>",
                              "r</w>",
                              "t</w>",
                              "low</w>",
                              "er</w>",
                              "lowest</w>",
                              "newer</w>",
                              "wider",
                              "<unk>",
                              "<|startoftext|>",
                              "<|endoftext|>"};
    nlohmann::json vocab   = nlohmann::json::object();
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); ++i) vocab[words[i]] = i;
    write_file(toy / "vocab.json", vocab.dump() + "\n");
    write_file(toy / "merges.txt", "#version: 0.2\nl o\nlo w</w>\ne r</w>");
    const ClipTokenizer small = ClipTokenizer::load(toy.string());
    expect_ids("HF toy vocabulary", "lower newer", small.encode("lower newer"), {10, 2, 16, 9, 3, 2, 16});
    EXPECT(small.bos_id() == 21 && small.eos_id() == 22 && small.comma_id() == -1 && !small.pad_hint());
    const PromptTokens p = tokenize_prompt(small, "lower", CLIP_PAD_EOS);
    EXPECT(p.ids[0] == 21 && p.ids[1] == 10 && p.ids[4] == 22 && p.ids[76] == 22);

    // The same vocabulary as vocab.json + merges.txt gives the same ids as the merges file alone, and a
    // special_tokens_map.json with SD-2's pad_token "!" (id 0) says to pad with zeros.
    const ClipTokenizer& ref  = clip();
    const fs::path       full = kTokTmp + "/sd2-tokenizer";
    nlohmann::json       v    = nlohmann::json::object();
    for (int64_t id = 0; id < ref.vocab_size(); ++id) v[ref.token(id)] = id;
    write_file(full / "vocab.json", v.dump());
    fs::copy_file(SHIRA_CLIP_MERGES, full / "merges.txt");
    write_file(full / "special_tokens_map.json", R"({"bos_token":"<|startoftext|>","pad_token":"!"})");
    const ClipTokenizer folder = ClipTokenizer::from_folder(full.string());
    EXPECT(folder.vocab_size() == 49408 && folder.pad_hint() == CLIP_PAD_ZERO);
    for (const char* text : {"a sign saying \"Here lies Cesar\"", "coraz\xc3\xb3n", "A'veA'llA's, 92000!"})
        expect_ids("folder == merges file", text, folder.encode(text), ref.encode(text));
    write_file(full / "special_tokens_map.json", R"({"pad_token":{"content":"<|endoftext|>"}})");
    EXPECT(ClipTokenizer::from_folder(full.string()).pad_hint() == CLIP_PAD_EOS);
    fs::remove_all(kTokTmp);
}

// The ftfy fixes, on ftfy's own doctests (rspeer/python-ftfy ftfy/fixes.py); clip_clean_text also lowercases.
SHIRA_TEST(tokenizer_clip_clean) {
    EXPECT(clip_clean_text("\xe2\x80\x9chere\xe2\x80\x99s a test\xe2\x80\x9d") ==
           "\"here's a test\"");  // uncurl_quotes
    EXPECT(clip_clean_text("\xef\xac\x82u\xef\xac\x83"
                           "est") == "fluffiest");  // fix_latin_ligatures
    EXPECT(clip_clean_text("\xef\xbc\xac\xef\xbc\xaf\xef\xbc\xb5\xef\xbc\xa4\xe3\x80\x80\xef\xbc\xae\xef\xbc\xaf"
                           "\xef\xbc\xa9\xef\xbc\xb3\xef\xbc\xa5\xef\xbc\xb3") ==
           "loud noises");  // fix_character_width
    EXPECT(clip_clean_text("\xef\xbc\xb5\xef\xbe\x80\xef\xbd\xb0\xef\xbe\x9d") ==
           "u\xe3\x82\xbf\xe3\x83\xbc\xe3\x83\xb3");
    EXPECT(clip_clean_text("&lt;tag&gt;") == "<tag>");  // unescape_html
    EXPECT(clip_clean_text("P&eacute;rez") == "p\xc3\xa9rez");
    EXPECT(clip_clean_text("&#x41;&#66;&amp;lt;") == "ab<");      // numeric references; repeated to a fixed point
    EXPECT(clip_clean_text("this&not that") == "this&not that");  // ftfy leaves entities without ';'
    // fix_c1_controls: U+0085 read as Windows-1252 is "…" (the note in HF's test_tokenization_clip.py), U+0092 is ’.
    EXPECT(clip_clean_text("a\xc2\x85") == "a\xe2\x80\xa6");
    EXPECT(clip_clean_text("it\xc2\x92s") == "it's");
    EXPECT(clip_clean_text("\x1b[36;44mcyan\x1b[0m\xef\xbb\xbf \x01x") == "cyan x");  // terminal escapes, BOM, controls
    // HF's slow/fast test: "xa\u0303y" and "x\xe3y" (one character written two ways) tokenize alike (NFC).
    const ClipTokenizer& tok = clip();
    expect_ids("NFC", "xa\u0303y", tok.encode("xa\xcc\x83y"), tok.encode("x\xc3\xa3y"));
    // A curly apostrophe is the contraction 's, like the straight one.
    expect_ids("curly apostrophe", "it’s", tok.encode("it\xe2\x80\x99s"), tok.encode("it's"));
}

// NFC and lower() on facts of the Unicode standard and CPython (the exhaustive check is unicode_oracle.py).
SHIRA_TEST(tokenizer_unicode) {
    const auto nfc   = [](const char* s) { return utf8_encode(unicode_nfc(utf8_decode(s))); };
    const auto lower = [](const char* s) { return utf8_encode(unicode_lower(utf8_decode(s))); };
    EXPECT(nfc("e\xcc\x82\xcc\x81") == "\xe1\xba\xbf");                     // e + ^ + ´ -> U+1EBF (composes twice)
    EXPECT(nfc("a\xcc\x81\xcc\xa3") == "\xe1\xba\xa1\xcc\x81");             // dot below (220) sorts before acute (230)
    EXPECT(nfc("\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8") == "\xea\xb0\x81");  // Hangul L V T -> U+AC01
    EXPECT(nfc("\xe2\x84\xab") == "\xc3\x85");                              // U+212B ANGSTROM SIGN -> U+00C5
    EXPECT(nfc("\xe0\xa5\x98") == "\xe0\xa4\x95\xe0\xa4\xbc");              // U+0958 is a composition exclusion
    EXPECT(lower("\xc4\xb0") == "i\xcc\x87");                               // U+0130 -> i + U+0307
    EXPECT(lower("\xce\xa3\xce\x91\xce\xa3 \xce\xa3") == "\xcf\x83\xce\xb1\xcf\x82 \xcf\x83");  // final sigma
    EXPECT(unicode_class(U'\u00e9') == UNICODE_CLASS_LETTER && unicode_class(U'\u0661') == UNICODE_CLASS_NUMBER);
    EXPECT(unicode_class(U'\u00a0') == UNICODE_CLASS_SPACE && unicode_class(U'\u0301') == UNICODE_CLASS_OTHER);
    EXPECT(unicode_class(U'\u00bd') == UNICODE_CLASS_NUMBER && unicode_class(U'\u4e00') == UNICODE_CLASS_LETTER);
}

// ---- A1111 emphasis ---------------------------------------------------------------------------------------------

struct Seg {
    std::string text;
    double      weight;  // -1: BREAK
};

void expect_parse(const std::string& text, const std::vector<Seg>& want) {
    const auto got  = parse_prompt_attention(text);
    bool       same = got.size() == want.size();
    for (size_t i = 0; same && i < got.size(); ++i)
        same = got[i].is_break ? want[i].weight == -1 : got[i].text == want[i].text && got[i].weight == want[i].weight;
    if (same) return;
    std::fprintf(stderr, "  parse '%s':\n", text.c_str());
    for (const auto& s : got)
        std::fprintf(stderr, "    ['%s', %.17g%s]\n", s.text.c_str(), s.weight, s.is_break ? " BREAK" : "");
    ++g_failures;
}

SHIRA_TEST(tokenizer_emphasis_parse) {
    // AUTOMATIC1111 modules/prompt_parser.py, parse_prompt_attention's doctests (weights compared bit for bit).
    expect_parse("normal text", {{"normal text", 1.0}});
    expect_parse("an (important) word", {{"an ", 1.0}, {"important", 1.1}, {" word", 1.0}});
    expect_parse("(unbalanced", {{"unbalanced", 1.1}});
    expect_parse("\\(literal\\]", {{"(literal]", 1.0}});
    expect_parse("(unnecessary)(parens)", {{"unnecessaryparens", 1.1}});
    expect_parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", {{"a ", 1.0},
                                                                         {"house", 1.5730000000000004},
                                                                         {" ", 1.1},
                                                                         {"on", 1.0},
                                                                         {" a ", 1.1},
                                                                         {"hill", 0.55},
                                                                         {", sun, ", 1.1},
                                                                         {"sky", 1.4641000000000006},
                                                                         {".", 1.1}});
    // aagdev/mlimgsynth src/test_prompt_preproc.c (A1111 syntax).
    expect_parse("a [dog] jumping", {{"a ", 1.0}, {"dog", 1 / 1.1}, {" jumping", 1.0}});
    expect_parse("a ((dog)) jumping", {{"a ", 1.0}, {"dog", 1.1 * 1.1}, {" jumping", 1.0}});
    expect_parse("a (dog:1.5) jumping", {{"a ", 1.0}, {"dog", 1.5}, {" jumping", 1.0}});
    expect_parse("a \\(dog\\) jumping", {{"a (dog) jumping", 1.0}});
    // The rules of parse_prompt_attention's code: white space around the weight (the current regex
    // ":\s*([+-]?[.\d]+)\s*\)"), a stray ")" or "]" and a weight with no "(" are text, a lone "\" vanishes,
    // "\\" is one backslash, nothing parsed is one empty piece, and re_break splits on a whole-word BREAK.
    expect_parse("(a: 0.5 )", {{"a", 0.5}});
    expect_parse("a) b] c:1.2) d:e", {{"a) b] c:1.2) d:e", 1.0}});
    expect_parse("a\\b \\\\", {{"ab \\", 1.0}});
    expect_parse("", {{"", 1.0}});
    expect_parse("a BREAK b BREAKfast,BREAK", {{"a", 1.0}, {"", -1}, {"b BREAKfast,", 1.0}, {"", -1}, {"", 1.0}});
    expect_parse("[a](b)", {{"a", 1 / 1.1}, {"b", 1.1}});
    expect_parse("(a[b", {{"a", 1.1}, {"b", 1.1 * (1 / 1.1)}});  // open brackets close at the end, round ones first
    // Our one departure: BREAK inside brackets still breaks (A1111 turns it into the word "break" at weight -1.1).
    expect_parse("(a BREAK b)", {{"a", 1.1}, {"", -1}, {"b", 1.1}});
}

// ---- Chunks -----------------------------------------------------------------------------------------------------

const Ids kCat = {320, 1125, 539, 320, 2368};  // "a photo of a cat" (bumblebee, above)
const Ids kDog = {320, 1125, 539, 320, 1929};  // "a photo of a dog"

std::string repeat(const std::string& s, int n, const std::string& sep) {
    std::string out;
    for (int i = 0; i < n; ++i) out += (i ? sep : "") + s;
    return out;
}

// Row c of a result, and the expected row: BOS, tokens, EOS, then pad.
Ids row(const PromptTokens& p, int64_t c) { return Ids(p.ids.begin() + c * 77, p.ids.begin() + (c + 1) * 77); }
Ids chunk(const Ids& tokens, int64_t pad, int64_t pad_from = -1) {
    Ids r = {49406};
    r.insert(r.end(), tokens.begin(), tokens.end());
    while (r.size() < 76) r.push_back(49407);  // A1111 fills to 75 with EOS, then adds the closing EOS
    r.push_back(49407);
    const size_t first_eos = pad_from >= 0 ? static_cast<size_t>(pad_from) : tokens.size() + 1;
    for (size_t i = first_eos + 1; i < r.size(); ++i) r[i] = pad;
    return r;
}
Ids concat(std::initializer_list<Ids> parts) {
    Ids r;
    for (const Ids& p : parts) r.insert(r.end(), p.begin(), p.end());
    return r;
}
Ids times(const Ids& ids, int n) {
    Ids r;
    for (int i = 0; i < n; ++i) r.insert(r.end(), ids.begin(), ids.end());
    return r;
}

// A1111 modules/sd_hijack_clip.py tokenize_line / process_tokens, on ids from the rows above.
SHIRA_TEST(tokenizer_prompt_chunks) {
    const ClipTokenizer& tok = clip();
    // Padding: SD-1 pads with EOS, SD-2 with 0 after the closing EOS; the empty prompt is one chunk.
    PromptTokens p = tokenize_prompt(tok, "a photo of a cat", CLIP_PAD_EOS);
    EXPECT(p.chunks == 1 && p.token_count == 5);
    expect_ids("pad EOS", "a photo of a cat", row(p, 0), chunk(kCat, 49407));
    p = tokenize_prompt(tok, "a photo of a cat", CLIP_PAD_ZERO);
    expect_ids("pad 0", "a photo of a cat", row(p, 0), chunk(kCat, 0));
    p = tokenize_prompt(tok, "", CLIP_PAD_ZERO);
    EXPECT(p.chunks == 1 && p.token_count == 0);
    expect_ids("empty, pad 0", "", row(p, 0), chunk({}, 0));
    EXPECT(p.ids_tensor().sizes() == torch::IntArrayRef({1, 77}) && p.ids_tensor().scalar_type() == torch::kInt64);

    // Exactly 75 tokens fit one chunk; the 76th starts a second.
    const std::string cats15 = repeat("a photo of a cat", 15, " ");
    p                        = tokenize_prompt(tok, cats15, CLIP_PAD_EOS);
    EXPECT(p.chunks == 1 && p.token_count == 75);
    expect_ids("75 tokens", cats15, row(p, 0), chunk(times(kCat, 15), 49407));
    p = tokenize_prompt(tok, repeat("a photo of a cat", 16, " "), CLIP_PAD_ZERO);
    EXPECT(p.chunks == 2 && p.token_count == 80);
    expect_ids("80 tokens, chunk 1", "", row(p, 0), chunk(times(kCat, 15), 0));
    expect_ids("80 tokens, chunk 2", "", row(p, 1), chunk(kCat, 0));

    // The comma rule: 13 items "a photo of a cat," and one more; the last comma of the full first chunk is at
    // position 71, 4 ≤ 20 tokens before its end, so "a photo of" (72..74) moves on. Count: 75 + 11.
    const std::string list = repeat("a photo of a cat", 14, ", ");
    const Ids         item = concat({kCat, {267}});
    p                      = tokenize_prompt(tok, list, CLIP_PAD_EOS);
    EXPECT(p.chunks == 2 && p.token_count == 86);
    expect_ids("comma rule, chunk 1", list, row(p, 0), chunk(times(item, 12), 49407));
    expect_ids("comma rule, chunk 2", list, row(p, 1), chunk(concat({item, kCat}), 49407));
    // Turned off, or with a limit under 4 tokens: a plain cut at 75.
    for (int backtrack : {0, 3}) {
        p             = tokenize_prompt(tok, list, CLIP_PAD_EOS, {EMPHASIS_ORIGINAL, backtrack});
        const Ids all = concat({times(item, 13), kCat});
        EXPECT(p.chunks == 2 && p.token_count == 83);
        expect_ids("no comma rule", list, row(p, 0), chunk(Ids(all.begin(), all.begin() + 75), 49407));
        expect_ids("no comma rule", list, row(p, 1), chunk(Ids(all.begin() + 75, all.end()), 49407));
    }

    // BREAK ends a chunk (A1111 counts the broken chunk as 75); with emphasis "none" it is a word like any other.
    p = tokenize_prompt(tok, "a photo of a cat BREAK a photo of a dog", CLIP_PAD_ZERO);
    EXPECT(p.chunks == 2 && p.token_count == 80);
    expect_ids("BREAK 1", "", row(p, 0), chunk(kCat, 0));
    expect_ids("BREAK 2", "", row(p, 1), chunk(kDog, 0));
    p = tokenize_prompt(tok, "a photo of a cat BREAK", CLIP_PAD_EOS, {EMPHASIS_NONE});
    EXPECT(p.chunks == 1 && p.token_count == 6 && p.ids[6] == tok.encode("break")[0]);

    // Weights line up with the ids: mlimgsynth's "a (dog) jumping" pieces and its ids (tables above).
    p = tokenize_prompt(tok, "a (dog) jumping", CLIP_PAD_EOS);
    expect_ids("weighted ids", "a (dog) jumping", row(p, 0), chunk({320, 1929, 11476}, 49407));
    EXPECT(p.weights[0] == 1.0f && p.weights[1] == 1.0f && p.weights[2] == 1.1f && p.weights[3] == 1.0f);
    EXPECT(p.weights[4] == 1.0f && p.weights[76] == 1.0f);
    p = tokenize_prompt(tok, "a (dog:1.5) jumping", CLIP_PAD_EOS, {EMPHASIS_IGNORE});
    EXPECT(p.weights[2] == 1.0f && row(p, 0) == chunk({320, 1929, 11476}, 49407));
    // Each piece is tokenized alone, as A1111 does: "(white)cat" is two words, "whitecat" one.
    const Ids two_words = concat({tok.encode("white"), tok.encode("cat")});
    p                   = tokenize_prompt(tok, "(white)cat", CLIP_PAD_EOS);
    expect_ids("pieces apart", "(white)cat", row(p, 0), chunk(two_words, 49407));
    EXPECT(two_words != tok.encode("whitecat"));
    // Words moved by the comma rule keep their weights: "a photo of" (72..74, ×1.1) starts chunk 2.
    p = tokenize_prompt(tok, repeat("a photo of a cat", 12, ", ") + ", (a photo of) a cat, a photo of a cat",
                        CLIP_PAD_EOS);
    EXPECT(p.chunks == 2 && p.ids[77 + 1] == 320 && p.weights[77 + 1] == 1.1f && p.weights[77 + 4] == 1.0f);
}

// A1111 modules/sd_emphasis.py EmphasisOriginal / EmphasisOriginalNoNorm, written out per chunk as the oracle.
SHIRA_TEST(tokenizer_emphasis_apply) {
    torch::manual_seed(0);
    const torch::Tensor z = torch::randn({2, 77, 8}) + 0.5;
    torch::Tensor       w = torch::ones({2, 77});
    w.index_put_({0, torch::indexing::Slice(1, 4)}, 1.21);
    w.index_put_({1, 5}, 1 / 1.1);
    const torch::Tensor out = apply_emphasis(z, w, EMPHASIS_ORIGINAL);
    for (int64_t c = 0; c < 2; ++c) {
        const torch::Tensor zc = z[c], weighted = zc * w[c].unsqueeze(-1);
        const torch::Tensor want = weighted * (zc.mean() / weighted.mean());
        EXPECT(torch::allclose(out[c], want, 1e-6, 1e-6));
        EXPECT(std::abs(out[c].mean().item<double>() - zc.mean().item<double>()) < 1e-6);
    }
    EXPECT(torch::equal(apply_emphasis(z, w, EMPHASIS_NO_NORM), z * w.unsqueeze(-1)));
    EXPECT(torch::equal(apply_emphasis(z, torch::ones({2, 77}), EMPHASIS_ORIGINAL), z));  // weights 1: untouched
    EXPECT(torch::equal(apply_emphasis(z, w, EMPHASIS_IGNORE), z));
    const torch::Tensor half = apply_emphasis(z.to(torch::kBFloat16), w, EMPHASIS_ORIGINAL);
    EXPECT(half.scalar_type() == torch::kBFloat16);
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "apply_emphasis", [&] {
        apply_emphasis(z, torch::ones({2, 76}), EMPHASIS_ORIGINAL);
    }));
}

// Bad input says what is wrong and where.
SHIRA_TEST(tokenizer_errors) {
    const ClipTokenizer& tok = clip();
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "byte 2", [&] { tok.encode("ab\xff"); }));
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "byte 1", [&] { tok.encode("a\xed\xa0\x80"); }));  // an encoded surrogate
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "byte 0", [&] { parse_prompt_attention("\xc0\xaf"); }));  // overlong '/'
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "'1.2.3'", [&] { parse_prompt_attention("(a:1.2.3)"); }));
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "'.'", [&] { parse_prompt_attention("(a:.)"); }));
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "no_norm", [&] { emphasis_from_name("strong"); }));
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "0..74", [&] {
        tokenize_prompt(tok, "a", CLIP_PAD_EOS, {EMPHASIS_ORIGINAL, 75});
    }));
    EXPECT(throws(ERROR_TYPE_NOT_FOUND, "merges", [] { ClipTokenizer::from_merges_file(kTokTmp + "/none.txt"); }));
    write_file(kTokTmp + "/short.txt", "#version: 0.2\ni n\nt h\n");
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "found 2", [] { ClipTokenizer::from_merges_file(kTokTmp + "/short.txt"); }));
    write_file(kTokTmp + "/bad/merges.txt", "#version: 0.2\ni n\nt h x\n");
    write_file(kTokTmp + "/bad/vocab.json", R"({"<|startoftext|>": 0, "<|endoftext|>": 1})");
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "line 3", [] { ClipTokenizer::load(kTokTmp + "/bad"); }));
    write_file(kTokTmp + "/bad/vocab.json", "{\"a\": ");
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "not a JSON object", [] { ClipTokenizer::load(kTokTmp + "/bad"); }));
    write_file(kTokTmp + "/bad/vocab.json", R"({"a": 0})");
    write_file(kTokTmp + "/bad/merges.txt", "#version: 0.2\n");
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "<|startoftext|>", [] { ClipTokenizer::load(kTokTmp + "/bad"); }));
    fs::create_directories(kTokTmp + "/empty");
    EXPECT(throws(ERROR_TYPE_NOT_FOUND, "vocab.json", [] { ClipTokenizer::load(kTokTmp + "/empty"); }));
    fs::remove_all(kTokTmp);
}

// The worker's tokenize op: the front end above behind the protocol's argument checks.
SHIRA_TEST(tokenizer_op) {
    WorkerState st(torch::kCPU);
    const auto  run = [&](const Json& args) { return worker_run_op(st, "tokenize", args, [](const Json&) {}); };
    const Json  r   = run({{"prompt", "a photo of a [dog]"}, {"tokenizer", SHIRA_CLIP_MERGES}});
    EXPECT(r["chunks"] == 1 && r["token_count"] == 5 && r["pad"] == "eos");
    const Ids ids = r["ids"][0].get<Ids>();
    EXPECT(ids.size() == 77 && ids[0] == 49406 && ids[6] == 49407 && ids[76] == 49407);
    expect_ids("tokenize op", "a photo of a [dog]", Ids(ids.begin() + 1, ids.begin() + 6), kDog);
    EXPECT(std::abs(r["weights"][0][5].get<double>() - 1 / 1.1) < 1e-6 && r["weights"][0][4] == 1.0);
    EXPECT(r["tokens"][0].size() == 5 && r["tokens"][0][4] == "dog</w>");
    const Json z = run({{"prompt", "a photo of a dog"}, {"tokenizer", SHIRA_CLIP_MERGES}, {"pad", "zero"}});
    EXPECT(z["ids"][0][6] == 49407 && z["ids"][0][7] == 0 && z["pad"] == "zero");
    const Json bang = run({{"prompt", "wow!"}, {"tokenizer", SHIRA_CLIP_MERGES}, {"pad", "zero"}});
    EXPECT(bang["tokens"][0].size() == bang["token_count"].get<size_t>() && bang["tokens"][0].back() == "!</w>");
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "pad", [&] {
        run({{"prompt", "x"}, {"tokenizer", SHIRA_CLIP_MERGES}, {"pad", "one"}});
    }));
    EXPECT(throws(ERROR_TYPE_BAD_INPUT, "comma_backtrack", [&] {
        run({{"prompt", "x"}, {"tokenizer", SHIRA_CLIP_MERGES}, {"comma_backtrack", 75}});
    }));
    EXPECT(throws(ERROR_TYPE_NOT_FOUND, "merges", [&] {
        run({{"prompt", "x"}, {"tokenizer", "/nonexistent/merges.txt"}});
    }));
}

// Lines of hex UTF-8 in; "nfc lower class" (hex, hex, class of the first code point) out, for unicode_oracle.py.
SHIRA_TOOL(unicode_dump, "unicode-dump") {
    const auto hex = [](const std::string& s) {
        static const char* d = "0123456789abcdef";
        std::string        h;
        for (unsigned char c : s) h += d[c >> 4], h += d[c & 15];
        return h.empty() ? std::string("-") : h;
    };
    std::string line;
    while (std::getline(std::cin, line)) {
        std::string bytes;
        for (size_t i = 0; i + 1 < line.size(); i += 2)
            bytes += static_cast<char>(std::stoi(line.substr(i, 2), nullptr, 16));
        const std::u32string s = utf8_decode(bytes);
        std::cout << hex(utf8_encode(unicode_nfc(s))) << ' ' << hex(utf8_encode(unicode_lower(s))) << ' '
                  << (s.empty() ? 0 : unicode_class(s[0])) << '\n';
    }
    return 0;
}

// Load time and tokenize_prompt speed on a 200-token prompt with emphasis and commas (not a ctest case: a timing).
SHIRA_TOOL(tokenizer_bench, "tokenizer-bench") {
    // CPU time beside wall time: the development machines are shared, and wall time there mostly measures others.
    auto                t0   = std::chrono::steady_clock::now();
    std::clock_t        c0   = std::clock();
    const ClipTokenizer tok  = ClipTokenizer::from_merges_file(SHIRA_CLIP_MERGES);
    const double load_ms     = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const double load_cpu_ms = 1e3 * double(std::clock() - c0) / CLOCKS_PER_SEC;
    const std::string prompt = repeat(
        "masterpiece, (best quality:1.2), watercolor painting of a lighthouse on a cliff, [blurry], dramatic "
        "sky, crashing waves, by an unknown artist, highly detailed",
        7, ", ");
    const PromptTokens once   = tokenize_prompt(tok, prompt, CLIP_PAD_EOS);
    size_t             tokens = 0;
    for (const PromptSegment& s : parse_prompt_attention(prompt)) tokens += tok.encode(s.text).size();
    const int reps = 2000;
    t0             = std::chrono::steady_clock::now();
    c0             = std::clock();
    for (int i = 0; i < reps; ++i) tokenize_prompt(tok, prompt, CLIP_PAD_EOS);
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / reps;
    const double cpu_us = 1e6 * double(std::clock() - c0) / CLOCKS_PER_SEC / reps;
    std::printf(
        "{\"bench\":\"clip_tokenize\",\"load_ms\":%.1f,\"load_cpu_ms\":%.1f,\"prompt_chars\":%zu,\"tokens\":%zu,"
        "\"chunks\":%lld,\"us_per_prompt\":%.1f,\"cpu_us_per_prompt\":%.1f}\n",
        load_ms, load_cpu_ms, prompt.size(), tokens, static_cast<long long>(once.chunks), us, cpu_us);
    return 0;
}

}  // namespace
