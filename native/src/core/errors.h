// Shared error type and small helpers. Every failure that can cross the process
// boundary is a WorkerError with a type tag; the protocol layer turns it into
// {"ok":false,"error":{"type":..,"message":..}} instead of dying.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

enum ErrorType {
    ERROR_TYPE_BAD_INPUT,  // the request or a file it names is malformed
    ERROR_TYPE_NOT_FOUND,  // a named file, adapter or model does not exist
    ERROR_TYPE_BUSY,       // a long job is running; only info/cancel are served
    ERROR_TYPE_CANCELLED,  // the job stopped because of a cancel request
    ERROR_TYPE_INTERNAL,   // a bug or a libtorch failure
};

inline const char* error_type_name(ErrorType type) {
    switch (type) {
        case ERROR_TYPE_BAD_INPUT: return "bad_input";
        case ERROR_TYPE_NOT_FOUND: return "not_found";
        case ERROR_TYPE_BUSY: return "busy";
        case ERROR_TYPE_CANCELLED: return "cancelled";
        default: return "internal";
    }
}

struct WorkerError : std::runtime_error {
    ErrorType type;
    WorkerError(ErrorType type, const std::string& message) : std::runtime_error(message), type(type) {}
};

// A "Field:   123 kB" line of a /proc file (e.g. /proc/self/status, /proc/meminfo), in KiB; -1 when
// the file or field is missing (not Linux).
inline int64_t proc_field_kib(const char* path, const char* field) {
    std::ifstream in(path);
    std::string   line;
    const size_t  len = std::strlen(field);
    while (std::getline(in, line)) {
        if (line.compare(0, len, field) == 0) return std::stoll(line.substr(len));
    }
    return -1;
}

[[noreturn]] inline void throw_bad_input(const std::string& message) {
    throw WorkerError(ERROR_TYPE_BAD_INPUT, message);
}
