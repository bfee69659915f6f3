// A name read from an untrusted file (a tensor key, a metadata key), fit for an error message: printable ASCII kept,
// anything else as '?', at most 80 characters (a safetensors header can hold megabytes of name). Every reader that
// names what it found in a file quotes it through this, so no message echoes a foreign file's bytes.
#pragma once

#include <string>

inline std::string printable(const std::string& name) {
    std::string out;
    for (unsigned char c : name) {
        if (out.size() >= 80) return out + "...";
        out += (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    return out;
}
