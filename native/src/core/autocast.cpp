// CudaAutocast (autocast.h) for libtorch 1.13's and 2.4+'s autocast calls.
#include "core/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

// libtorch 2.4 replaced the CUDA-only set_enabled/set_autocast_gpu_dtype/is_enabled with per-device calls and
// deprecated the old ones (a warning on every use), so each libtorch gets its own spelling.
#define SHIRA_PER_DEVICE_AUTOCAST (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))

namespace {
void set_cuda_autocast(bool on) {
#if SHIRA_PER_DEVICE_AUTOCAST
    if (on) at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, on);
#else
    if (on) at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(on);
#endif
}
}  // namespace

CudaAutocast::CudaAutocast(bool on) : on_(on) {
    if (on_) set_cuda_autocast(true);
}

bool CudaAutocast::active() {
#if SHIRA_PER_DEVICE_AUTOCAST
    return at::autocast::is_autocast_enabled(at::kCUDA);
#else
    return at::autocast::is_enabled();
#endif
}

CudaAutocast::~CudaAutocast() {
    if (!on_) return;
    set_cuda_autocast(false);
    at::autocast::clear_cache();
}
