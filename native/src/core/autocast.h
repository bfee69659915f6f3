// bf16 autocast on CUDA for one scope (a training run, a benchmark case): matmuls and convolutions run in bf16
// while weights, SHiRA values, LoRA factors and optimiser state stay fp32. Autocast is thread-local; `on` is
// false on CPU (never enabled there), and the destructor switches it off and drops its cast cache on every exit.
// libtorch 1.13 and 2.x spell the autocast calls differently (autocast.cpp picks by TORCH_VERSION).
#pragma once

class CudaAutocast {
  public:
    explicit CudaAutocast(bool on);
    ~CudaAutocast();
    // Whether CUDA autocast is on in this thread (a scope above, or anything else that enabled it).
    static bool active();
    CudaAutocast(const CudaAutocast&)            = delete;
    CudaAutocast& operator=(const CudaAutocast&) = delete;

  private:
    bool on_;
};
