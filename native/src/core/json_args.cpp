// Typed request-argument readers (json_args.h).
#include "core/json_args.h"

#include <cmath>

#include "core/errors.h"

const Json& arg(const Json& args, const char* key) {
    if (!args.contains(key)) throw_bad_input(std::string("missing argument '") + key + "'");
    return args.at(key);
}

int64_t get_int(const Json& args, const char* key, int64_t fallback, int64_t lo, int64_t hi) {
    if (!args.contains(key)) return fallback;
    const Json& v = args.at(key);
    if (!v.is_number_integer()) throw_bad_input(std::string("argument '") + key + "' must be an integer");
    if (v.is_number_unsigned() ? v.get<uint64_t>() > (uint64_t)hi : (v.get<int64_t>() < lo || v.get<int64_t>() > hi)) {
        throw_bad_input(std::string("argument '") + key + "' must be in " + std::to_string(lo) + ".." +
                        std::to_string(hi));
    }
    return v.get<int64_t>();
}

double get_num(const Json& args, const char* key, double fallback, double lo, double hi) {
    if (!args.contains(key)) return fallback;
    const Json& v = args.at(key);
    if (!v.is_number()) throw_bad_input(std::string("argument '") + key + "' must be a number");
    const double d = v.get<double>();
    if (!std::isfinite(d) || d < lo || d > hi) {
        throw_bad_input(std::string("argument '") + key + "' must be in [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]");
    }
    return d;
}

std::string get_str(const Json& args, const char* key, const std::string& fallback) {
    if (!args.contains(key)) return fallback;
    if (!args.at(key).is_string()) throw_bad_input(std::string("argument '") + key + "' must be a string");
    return args.at(key).get<std::string>();
}

bool get_bool(const Json& args, const char* key, bool fallback) {
    if (!args.contains(key)) return fallback;
    if (!args.at(key).is_boolean()) throw_bad_input(std::string("argument '") + key + "' must be true or false");
    return args.at(key).get<bool>();
}

std::string need_str(const Json& args, const char* key) {
    arg(args, key);
    return get_str(args, key, "");
}

std::vector<std::string> get_str_list(const Json& args, const char* key, const std::vector<std::string>& fallback) {
    if (!args.contains(key)) return fallback;
    const Json& v = args.at(key);
    if (!v.is_array()) throw_bad_input(std::string("argument '") + key + "' must be an array of strings");
    std::vector<std::string> out;
    for (const auto& s : v) {
        if (!s.is_string()) throw_bad_input(std::string("argument '") + key + "' must be an array of strings");
        out.push_back(s.get<std::string>());
    }
    return out;
}

std::vector<std::string> split_list(const std::string& s, char sep) {
    std::vector<std::string> out;
    for (size_t start = 0; start <= s.size();) {
        size_t end = s.find(sep, start);
        if (end == std::string::npos) end = s.size();
        if (end > start) out.push_back(s.substr(start, end - start));
        start = end + 1;
    }
    return out;
}
