// Typed access to a request's JSON arguments: every field is type- and range-checked, so bad input becomes a
// BAD_INPUT reply naming the argument and its allowed range, never a crash or a silently clamped value.
// A missing optional argument yields the fallback; integers beyond int64 and non-finite numbers are refused.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

using Json   = nlohmann::json;
using EmitFn = std::function<void(const Json&)>;  // progress events of a running op (without "id")

const Json&              arg(const Json& args, const char* key);  // required, any type
int64_t                  get_int(const Json& args, const char* key, int64_t fallback, int64_t lo, int64_t hi);
double                   get_num(const Json& args, const char* key, double fallback, double lo, double hi);
std::string              get_str(const Json& args, const char* key, const std::string& fallback);
bool                     get_bool(const Json& args, const char* key, bool fallback);
std::string              need_str(const Json& args, const char* key);  // required string
std::vector<std::string> get_str_list(const Json& args, const char* key, const std::vector<std::string>& fallback);
// The non-empty pieces of `s` between `sep` characters ("a,,b" -> {"a", "b"}): lists given as one string.
std::vector<std::string> split_list(const std::string& s, char sep);
