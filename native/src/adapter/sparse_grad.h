// Fused SHiRA training (paper §3.3 and App. E: only the K values are trainable; the optimiser never sees a dense
// weight): a custom autograd op whose forward runs the resident weight W0 + S as is and whose backward gives
// dL/dδ_k at the mask, by one of two paths — dense (dW = gᵀx, then gather K entries) or sparse
// (dL/dδ_k = Σ_n g[n, i_k]·x[n, j_k], never forming dW; Struct's fully trained rows as one GEMM). AUTO times both
// on each layer's first backward and keeps the faster (docs/benchmarks.md has where each wins).
#pragma once

#include <cstdint>
#include <string>

#include <torch/types.h>

#include "model/layer.h"

const char* grad_path_name(GradPath path);              // "auto" | "sparse" | "dense"
GradPath    str_to_grad_path(const std::string& name);  // the same names, else BAD_INPUT

// The layer's output through the fused op. `values` is an input only so autograd routes dL/dδ to it.
torch::Tensor shira_layer_forward(LayerImpl& layer, const torch::Tensor& x);

// dL/dδ for y = x Wᵀ from g [N, out], x [N, in] using the given path.
torch::Tensor shira_matrix_grad(const torch::Tensor& g, const torch::Tensor& x, const ShiraSlot& slot, GradPath path);

// Timing of the two gradient paths of one [m, n] Linear for N rows at a mask; used by bench and tests.
struct GradPathTiming {
    double  sparse_ms, dense_ms, maxdiff;
    int64_t dense_dw_bytes;
};
GradPathTiming shira_time_grad_paths(int64_t N, int64_t m, int64_t n, const torch::Tensor& idx, int reps);
