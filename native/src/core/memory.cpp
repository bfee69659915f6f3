// /proc readings and peak-memory probes (memory.h); CUDA allocator statistics only with SHIRA_HAS_CUDA.
#include "core/memory.h"

#include <malloc.h>

#include <cstring>
#include <fstream>

#ifdef SHIRA_HAS_CUDA
#include <c10/cuda/CUDACachingAllocator.h>  // needs the CUDA toolkit's headers
#endif

#include "core/device.h"

int64_t proc_field_kib(const char* path, const char* field) {
    std::ifstream in(path);
    std::string   line;
    const size_t  len = std::strlen(field);
    while (std::getline(in, line)) {
        if (line.compare(0, len, field) == 0) return std::stoll(line.substr(len));
    }
    return -1;
}

namespace {
int64_t proc_bytes(const char* path, const char* field) {
    const int64_t kib = proc_field_kib(path, field);
    return kib < 0 ? -1 : kib * 1024;
}
}  // namespace

int64_t rss_bytes() { return proc_bytes("/proc/self/status", "VmRSS:"); }

int64_t mem_available_bytes() { return proc_bytes("/proc/meminfo", "MemAvailable:"); }

#ifdef SHIRA_HAS_CUDA
// StatType::AGGREGATE is 0 in every libtorch; its namespace moved (c10::cuda::CUDACachingAllocator in 1.x,
// c10::CachingDeviceAllocator in 2.x), so the index is spelled out instead of the enum.
constexpr size_t kAggregateStat = 0;
#endif

void mem_peak_reset(torch::Device device, MemProbe& probe) {
#ifdef SHIRA_HAS_CUDA
    if (device.is_cuda()) {
        device_sync(device);
        c10::cuda::CUDACachingAllocator::resetPeakStats(device.index() < 0 ? 0 : device.index());
        const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
        probe.kind       = "cuda_allocator_peak_allocated";
        probe.base_bytes = stats.allocated_bytes[kAggregateStat].current;
        return;
    }
#endif
    // Hand freed heap back first so the previous case's leftovers do not sit in the resident set.
    malloc_trim(0);
    std::ofstream("/proc/self/clear_refs") << "5";  // "5" resets VmHWM to the current VmRSS (proc(5))
    probe.kind       = "cpu_rss_hwm";
    probe.base_bytes = rss_bytes();
}

void mem_peak_read(torch::Device device, MemProbe& probe) {
#ifdef SHIRA_HAS_CUDA
    if (device.is_cuda()) {
        device_sync(device);
        const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index() < 0 ? 0 : device.index());
        probe.peak_bytes = stats.allocated_bytes[kAggregateStat].peak;
        return;
    }
#endif
    probe.peak_bytes = proc_bytes("/proc/self/status", "VmHWM:");
}
