// Memory readings: the process's resident set (info, CPU benchmarks), the host's available memory (whether a
// full fine-tune fits before trying), and peak memory of a measured section — on CUDA the caching allocator's
// peak allocated bytes, on CPU the process's peak resident set (VmHWM, reset through /proc/self/clear_refs), which
// also counts the weights and anything else resident. Linux /proc only; -1 where a reading is unavailable.
// The CUDA allocator statistics compile only with SHIRA_HAS_CUDA (CMake sets it when its libtorch has CUDA;
// scripts/gpu/build.sh when the CUDA toolkit headers exist).
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

// A "Field:   123 kB" line of a /proc file (e.g. /proc/self/status, /proc/meminfo), in KiB; -1 when the file
// or field is missing (not Linux).
int64_t proc_field_kib(const char* path, const char* field);
int64_t rss_bytes();            // VmRSS of this process
int64_t mem_available_bytes();  // MemAvailable of the host

struct MemProbe {
    std::string kind;             // "cuda_allocator_peak_allocated" | "cpu_rss_hwm": which one was measured
    int64_t     base_bytes = -1;  // allocated / resident at reset
    int64_t     peak_bytes = -1;
};
void mem_peak_reset(torch::Device device, MemProbe& probe);
void mem_peak_read(torch::Device device, MemProbe& probe);
