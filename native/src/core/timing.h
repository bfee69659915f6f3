// Wall-clock time for measurements (benchmarks, the auto gradient path, progress rates): one monotonic clock,
// in milliseconds. On CUDA a caller must drain the stream (device_sync, core/device.h) before reading it, or
// the time of queued kernels lands in the wrong interval.
#pragma once

#include <chrono>

inline double now_ms() {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
