// The worker's error type. Every failure that can cross the process boundary is a WorkerError with a type
// tag; the protocol layer (worker/protocol.cpp) turns it into {"ok":false,"error":{"type":..,"message":..}}
// instead of dying. Messages name the offending field or file and, where there is a choice, the allowed values.
#pragma once

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

[[noreturn]] inline void throw_bad_input(const std::string& message) {
    throw WorkerError(ERROR_TYPE_BAD_INPUT, message);
}
