// Adaptable Linear / Conv2d layer: the only kind of layer SHiRA and LoRA target, and the training state they
// attach to it (the fused SHiRA slot of paper §3, a LoRA pair). Its forward routes through the fused SHiRA op
// (adapter/sparse_grad.h) while a slot is attached.
//
// Parameter names match torch.nn.Linear / nn.Conv2d ("weight", "bias"), so module paths
// read like diffusers' (unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight).
// Weight layout: Linear [out, in]; Conv2d [out, in, kh, kw]. Adapters view every weight as the
// matrix [out, numel/out] ("rows" = output features/channels), PEFT's convention for Linear.
#pragma once

#include <memory>

#include <torch/torch.h>

enum LayerKind { LAYER_KIND_LINEAR, LAYER_KIND_CONV };

enum GradPath {
    GRAD_PATH_AUTO,    // time both on the first backward of each layer, keep the faster
    GRAD_PATH_SPARSE,  // dL/dδ_k = Σ_n g[n, i_k]·x[n, j_k], never forms dense dW
    GRAD_PATH_DENSE,   // dW = gᵀx (or conv backward), then gather at the mask
};

// SHiRA training state of one layer (paper §3, fused mode).
// Invariant while attached: weight.view(-1)[idx] == base_vals + values (bitwise, written by shira_write_values).
struct ShiraSlot {
    torch::Tensor values;      // [K] fp32, the trainable δ (leaf, requires_grad)
    torch::Tensor idx;         // [K] int64 flat indices into weight, sorted ascending
    torch::Tensor rows, cols;  // [K] int64, idx in the [out, numel/out] matrix view
    torch::Tensor base_vals;   // [K] W0 at idx in the weight's dtype: restore is a copy, never a subtraction
    // Row split for the sparse gradient (built on first use): rows whose every column is in the mask (Struct's
    // trained rows) get one dense product g[:, full_rows]ᵀ x; only the rest (the diagonal) is gathered.
    // full_pos / rest_pos index the K-vector; full_pos runs row by row, matching that product's row-major order.
    torch::Tensor full_rows, full_pos, rest_pos;
    bool          row_split_ready = false;
    GradPath      path            = GRAD_PATH_AUTO;
    GradPath      chosen          = GRAD_PATH_AUTO;  // resolved path once AUTO has measured
    double        sparse_ms = -1, dense_ms = -1;
};

// LoRA training state of one layer: y = base(x) + (alpha/r)·B(A(x)). LoCon-style for convs:
// A is a conv with the base kernel/stride/padding [r, in, kh, kw], B a 1x1 conv [out, r, 1, 1].
struct LoraSlot {
    torch::Tensor A, B;
    double        scale = 1.0;
};

struct LayerImpl : torch::nn::Module {
    LayerImpl(LayerKind kind, int64_t in, int64_t out, int64_t kernel = 1, int64_t stride = 1, int64_t padding = 0,
              bool bias = true);
    torch::Tensor forward(const torch::Tensor& x);
    torch::Tensor base_forward(const torch::Tensor& x) const;

    LayerKind                  kind;
    int64_t                    in_features, out_features, kernel, stride, padding;
    torch::Tensor              weight, bias;  // bias undefined when absent
    std::shared_ptr<ShiraSlot> shira;         // set only while training SHiRA on this layer
    std::shared_ptr<LoraSlot>  lora;          // set while training (or running unfused) LoRA
};
TORCH_MODULE(Layer);
