// Layer (layer.h): torch.nn's initialisation, the fused SHiRA op while a slot is attached, the unfused LoRA branch.
#include "model/layer.h"

#include <cmath>

#include "adapter/sparse_grad.h"

LayerImpl::LayerImpl(LayerKind kind, int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding,
                     bool has_bias)
    : kind(kind), in_features(in), out_features(out), kernel(kernel), stride(stride), padding(padding) {
    // Same init as torch.nn (kaiming_uniform with a=√5 ⇒ U(-1/√fan_in, 1/√fan_in)).
    const int64_t fan_in = in * kernel * kernel;
    const double  bound  = 1.0 / std::sqrt((double)fan_in);
    if (kind == LAYER_KIND_LINEAR) {
        weight = register_parameter("weight", torch::empty({out, in}).uniform_(-bound, bound));
    } else {
        weight = register_parameter("weight", torch::empty({out, in, kernel, kernel}).uniform_(-bound, bound));
    }
    if (has_bias) bias = register_parameter("bias", torch::empty({out}).uniform_(-bound, bound));
}

torch::Tensor LayerImpl::base_forward(const torch::Tensor& x) const {
    if (kind == LAYER_KIND_LINEAR) return torch::linear(x, weight, bias);
    return torch::conv2d(x, weight, bias, stride, padding);
}

torch::Tensor LayerImpl::forward(const torch::Tensor& x) {
    torch::Tensor y = shira ? shira_layer_forward(*this, x) : base_forward(x);
    if (lora) {
        torch::Tensor h;
        if (kind == LAYER_KIND_LINEAR) {
            h = torch::linear(torch::linear(x, lora->A), lora->B);
        } else {
            h = torch::conv2d(torch::conv2d(x, lora->A, {}, stride, padding), lora->B);
        }
        y = y + lora->scale * h;
    }
    return y;
}
