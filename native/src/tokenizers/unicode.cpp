#include "tokenizers/unicode.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "core/errors.h"

namespace {

struct ClassRange {
    uint32_t first, last;
    uint8_t  cls;  // UnicodeClass
};
struct LowerRun {
    uint32_t first, last, stride;
    int32_t  delta;
};
struct Range {
    uint32_t first, last;
};
struct CccRange {
    uint32_t first, last;
    uint8_t  ccc;
};
struct Decomposition {
    uint32_t cp, first, second;  // second == 0: a singleton mapping
};
struct Composition {
    uint32_t first, second, composite;
};
struct WidthMap {
    uint32_t cp, out0, out1;  // out1 == 0: one code point
};

#include "tokenizers/unicode_tables.inc"

// Hangul syllables compose and decompose by arithmetic (Unicode §3.12), not by table.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int      kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

template <typename T, size_t N>
const T* find_range(const T (&table)[N], char32_t cp) {
    const T* it = std::upper_bound(table, table + N, cp, [](char32_t c, const T& r) { return c < r.first; });
    if (it == table) return nullptr;
    --it;
    return cp <= it->last ? it : nullptr;
}

bool cased(char32_t cp) { return find_range(kCased, cp) != nullptr; }
bool case_ignorable(char32_t cp) { return find_range(kCaseIgnorable, cp) != nullptr; }

char32_t lower_one(char32_t cp) {
    const LowerRun* run = find_range(kLowerRuns, cp);
    if (run == nullptr || (cp - run->first) % run->stride != 0) return cp;
    return static_cast<char32_t>(static_cast<int64_t>(cp) + run->delta);
}

// CPython's final-sigma test: a cased letter before (case-ignorables skipped) and none after.
bool final_sigma(const std::u32string& s, size_t i) {
    size_t j = i;
    while (j > 0 && case_ignorable(s[j - 1])) --j;
    if (j == 0 || !cased(s[j - 1])) return false;
    size_t k = i + 1;
    while (k < s.size() && case_ignorable(s[k])) ++k;
    return k == s.size() || !cased(s[k]);
}

uint8_t ccc(char32_t cp) {
    const CccRange* r = find_range(kCccRanges, cp);
    return r ? r->ccc : 0;
}

void decompose(char32_t cp, std::u32string& out) {
    if (cp >= kSBase && cp < kSBase + kSCount) {
        const int s = static_cast<int>(cp - kSBase);
        out += static_cast<char32_t>(kLBase + s / kNCount);
        out += static_cast<char32_t>(kVBase + (s % kNCount) / kTCount);
        if (s % kTCount != 0) out += static_cast<char32_t>(kTBase + s % kTCount);
        return;
    }
    const Decomposition* end = kDecompositions + sizeof(kDecompositions) / sizeof(kDecompositions[0]);
    const Decomposition* d =
        std::lower_bound(kDecompositions, end, cp, [](const Decomposition& x, char32_t c) { return x.cp < c; });
    if (d == end || d->cp != cp) {
        out += cp;
        return;
    }
    decompose(d->first, out);
    if (d->second != 0) decompose(d->second, out);
}

char32_t compose(char32_t a, char32_t b) {
    if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
        return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
        return a + (b - kTBase);
    const Composition* end    = kCompositions + sizeof(kCompositions) / sizeof(kCompositions[0]);
    const auto         before = [](const Composition& x, std::pair<char32_t, char32_t> key) {
        return x.first != key.first ? x.first < key.first : x.second < key.second;
    };
    const Composition* c = std::lower_bound(kCompositions, end, std::make_pair(a, b), before);
    return (c != end && c->first == a && c->second == b) ? c->composite : 0;
}

}  // namespace

int utf8_length(unsigned char lead) {
    if (lead < 0x80) return 1;
    if ((lead & 0xE0) == 0xC0) return 2;
    if ((lead & 0xF0) == 0xE0) return 3;
    if ((lead & 0xF8) == 0xF0) return 4;
    return 0;
}

std::u32string utf8_decode(const std::string& text) {
    std::u32string out;
    out.reserve(text.size());
    const auto*  s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    for (size_t i = 0; i < n;) {
        const unsigned char c = s[i];
        if (c < 0x80) {
            out += c;
            ++i;
            continue;
        }
        static const char32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000}, kLeadBits[5] = {0, 0, 0x1F, 0x0F, 0x07};
        const int             len = utf8_length(c);
        char32_t              cp = c & kLeadBits[len], min = kMin[len];
        bool                  ok = len >= 2 && i + len <= n;
        for (int k = 1; ok && k < len; ++k) {
            ok = (s[i + k] & 0xC0) == 0x80;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (!ok || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            throw_bad_input("text is not valid UTF-8 (byte " + std::to_string(i) + ")");
        out += cp;
        i += len;
    }
    return out;
}

void utf8_append(std::string& out, char32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

std::string utf8_encode(const std::u32string& text) {
    std::string out;
    out.reserve(text.size());
    for (char32_t cp : text) utf8_append(out, cp);
    return out;
}

UnicodeClass unicode_class(char32_t cp) {
    if (cp < 0x80) {  // fast path: prompts are mostly ASCII
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return UNICODE_CLASS_LETTER;
        if (cp >= '0' && cp <= '9') return UNICODE_CLASS_NUMBER;
        if (cp == ' ' || (cp >= '\t' && cp <= '\r')) return UNICODE_CLASS_SPACE;
        return UNICODE_CLASS_OTHER;
    }
    const ClassRange* r = find_range(kClassRanges, cp);
    return r ? static_cast<UnicodeClass>(r->cls) : UNICODE_CLASS_OTHER;
}

std::u32string unicode_lower(const std::u32string& text) {
    std::u32string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        const char32_t cp = text[i];
        if (cp == 0x130) {
            out += U"i\u0307";
        } else if (cp == 0x3A3) {
            out += final_sigma(text, i) ? U'\u03C2' : U'\u03C3';
        } else {
            out += lower_one(cp);
        }
    }
    return out;
}

std::u32string unicode_nfc(const std::u32string& text) {
    if (std::all_of(text.begin(), text.end(), [](char32_t c) { return c < 0x300; })) return text;  // nothing composes

    std::u32string d;
    d.reserve(text.size() + 8);
    for (char32_t cp : text) decompose(cp, d);
    // Canonical ordering: a stable sort of each run of non-starters by combining class.
    for (size_t i = 0; i < d.size();) {
        if (ccc(d[i]) == 0) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < d.size() && ccc(d[j]) != 0) ++j;
        std::stable_sort(d.begin() + static_cast<std::ptrdiff_t>(i), d.begin() + static_cast<std::ptrdiff_t>(j),
                         [](char32_t a, char32_t b) { return ccc(a) < ccc(b); });
        i = j;
    }
    // Composition: a character joins the last starter unless something between them blocks it (a starter, or a
    // mark of the same or a higher class); the marks are in canonical order, so the last one decides.
    std::u32string out;
    out.reserve(d.size());
    ptrdiff_t starter  = -1;
    int       last_ccc = 0;
    for (char32_t cp : d) {
        const int cc = ccc(cp);
        if (starter >= 0) {
            const bool adjacent = static_cast<ptrdiff_t>(out.size()) - 1 == starter;
            if (adjacent || (last_ccc != 0 && last_ccc < cc)) {
                if (char32_t c = compose(out[static_cast<size_t>(starter)], cp)) {
                    out[static_cast<size_t>(starter)] = c;
                    continue;
                }
            }
        }
        if (cc == 0) starter = static_cast<ptrdiff_t>(out.size());
        last_ccc = cc;
        out += cp;
    }
    return out;
}

int unicode_width_fold(char32_t cp, char32_t out[2]) {
    if (cp != 0x3000 && (cp < 0xFF01 || cp > 0xFFEF)) return 0;
    const WidthMap* end = kWidthMap + sizeof(kWidthMap) / sizeof(kWidthMap[0]);
    const WidthMap* w   = std::lower_bound(kWidthMap, end, cp, [](const WidthMap& x, char32_t c) { return x.cp < c; });
    if (w == end || w->cp != cp) return 0;
    out[0] = w->out0;
    out[1] = w->out1;
    return w->out1 != 0 ? 2 : 1;
}

char32_t unicode_c1_as_windows1252(char32_t cp) {
    return (cp >= 0x80 && cp <= 0x9F) ? static_cast<char32_t>(kWindows1252C1[cp - 0x80]) : cp;
}
