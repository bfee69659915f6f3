// The fused SHiRA autograd op and its two weight-gradient paths (sparse_grad.h; paper §3.3, App. E).
#include "adapter/sparse_grad.h"

#include <algorithm>

#include <torch/torch.h>

#include "core/autocast.h"
#include "core/errors.h"
#include "core/timing.h"

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// dL/dδ_k = Σ_n g[n, i_k]·x[n, j_k] for the entries (rows, cols), streaming over N in bounded chunks.
torch::Tensor gather_grad(const torch::Tensor& gt, const torch::Tensor& xt, const torch::Tensor& rows,
                          const torch::Tensor& cols) {
    // gt [m, N], xt [n, N]: each gathered row is contiguous over N, so the product streams memory.
    const int64_t N = gt.size(1), K = rows.numel();
    torch::Tensor out = torch::empty({K}, gt.options());
    // Bounds the [chunk, N] temporaries to ~16 MiB each regardless of K.
    const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 22) / std::max<int64_t>(N, 1));
    for (int64_t b = 0; b < K; b += chunk) {
        const int64_t e = std::min(K, b + chunk);
        out.slice(0, b, e).copy_(
            (gt.index_select(0, rows.slice(0, b, e)) * xt.index_select(0, cols.slice(0, b, e))).sum(1));
    }
    return out;
}

void prepare_row_split(ShiraSlot& s, int64_t m, int64_t n) {
    torch::Tensor counts  = torch::bincount(s.rows.cpu(), {}, m);
    torch::Tensor full    = counts.eq(n);
    torch::Tensor in_full = full.index_select(0, s.rows.cpu());
    s.full_rows           = full.nonzero().reshape(-1).to(s.idx.device());
    s.full_pos            = in_full.nonzero().reshape(-1).to(s.idx.device());
    s.rest_pos            = (~in_full).nonzero().reshape(-1).to(s.idx.device());
    s.row_split_ready     = true;
}

torch::Tensor sparse_path(const torch::Tensor& g, const torch::Tensor& x, const ShiraSlot& slot_in) {
    auto& s = const_cast<ShiraSlot&>(slot_in);  // the row split is a cache of the (fixed) mask
    // g [N, m], x [N, n].
    if (!s.row_split_ready) prepare_row_split(s, g.size(1), x.size(1));
    torch::Tensor out = torch::empty({s.idx.numel()}, g.options());
    if (s.full_rows.numel()) {
        // Struct: d× the FLOPs of the full dW, one GEMM.
        out.index_put_({s.full_pos}, g.index_select(1, s.full_rows).t().mm(x).reshape(-1));
    }
    if (s.rest_pos.numel() && s.rest_pos.numel() <= g.size(1) + x.size(1)) {
        // A few entries (Struct's diagonal): gather their columns directly instead of transposing all of g and x.
        torch::Tensor r = s.rows.index_select(0, s.rest_pos), c = s.cols.index_select(0, s.rest_pos);
        out.index_put_({s.rest_pos}, (g.index_select(1, r) * x.index_select(1, c)).sum(0));
    } else if (s.rest_pos.numel()) {
        torch::Tensor gt = g.t().contiguous(), xt = x.t().contiguous();
        out.index_put_({s.rest_pos},
                       gather_grad(gt, xt, s.rows.index_select(0, s.rest_pos), s.cols.index_select(0, s.rest_pos)));
    }
    return out;
}

torch::Tensor dense_path(const torch::Tensor& g, const torch::Tensor& x, const ShiraSlot& s) {
    return g.t().mm(x).view(-1).index_select(0, s.idx);
}

struct ShiraFunction : torch::autograd::Function<ShiraFunction> {
    // The layer pointer travels as an int64 because saved_data only holds IValues; the layer outlives
    // the graph (it owns the slot for the whole training run).
    static torch::Tensor forward(AutogradContext* ctx, torch::Tensor x, torch::Tensor values, int64_t layer_ptr) {
        auto* layer              = reinterpret_cast<LayerImpl*>(layer_ptr);
        ctx->saved_data["layer"] = layer_ptr;
        // Under CUDA bf16 autocast the backward multiplies in bf16 anyway (x.to(g.dtype) below), so an fp32 input
        // (after a norm, which autocast keeps in fp32) is saved already cast: half its activation memory, the same
        // gradients. Elsewhere x is saved as it came.
        const bool cast = x.is_cuda() && x.scalar_type() == torch::kFloat32 && CudaAutocast::active();
        ctx->save_for_backward({cast ? x.to(torch::kBFloat16) : x});
        return layer->base_forward(x);  // weight already holds W0 + S (fused invariant)
    }

    static variable_list backward(AutogradContext* ctx, variable_list grads) {
        auto*         layer  = reinterpret_cast<LayerImpl*>(ctx->saved_data["layer"].toInt());
        ShiraSlot&    slot   = *layer->shira;
        torch::Tensor x      = ctx->get_saved_variables()[0];
        torch::Tensor g      = grads[0];
        const bool    need_x = ctx->needs_input_grad(0);
        const auto&   W      = layer->weight;
        torch::Tensor grad_x, grad_values;
        const bool    pointwise =
            layer->kind == LAYER_KIND_CONV && layer->kernel == 1 && layer->stride == 1 && layer->padding == 0;
        if (layer->kind == LAYER_KIND_LINEAR || pointwise) {
            torch::Tensor g2, x2;
            if (layer->kind == LAYER_KIND_LINEAR) {
                if (need_x) grad_x = g.matmul(W.to(g.scalar_type()));
                g2 = g.reshape({-1, layer->out_features});
                x2 =
                    x.reshape({-1, layer->in_features}).to(g.scalar_type());  // bf16 autocast: g is bf16, x may be fp32
            } else {  // a 1x1 conv is a Linear over channels: [B, C, H, W] -> [B·H·W, C]
                if (need_x) grad_x = torch::conv2d(g, W.to(g.scalar_type()).transpose(0, 1));
                g2 = g.permute({0, 2, 3, 1}).reshape({-1, layer->out_features});
                x2 = x.permute({0, 2, 3, 1}).reshape({-1, layer->in_features}).to(g.scalar_type());
            }
            grad_values = shira_matrix_grad(g2, x2, slot, slot.path);
        } else {
            // General convs take the dense path: unfold would need [B·H·W, in·kh·kw] per step, which costs
            // more than the weight gradient it avoids for the kernel sizes used here.
            auto res    = at::convolution_backward(g, x.to(g.scalar_type()), W.to(g.scalar_type()), c10::nullopt,
                                                   {layer->stride, layer->stride}, {layer->padding, layer->padding},
                                                   {1, 1}, false, {0, 0}, 1, {need_x, true, false});
            grad_x      = std::get<0>(res);
            grad_values = std::get<1>(res).reshape(-1).index_select(0, slot.idx);
            slot.chosen = GRAD_PATH_DENSE;
        }
        return {grad_x, grad_values.to(torch::kFloat32), torch::Tensor()};
    }
};

}  // namespace

const char* grad_path_name(GradPath p) {
    return p == GRAD_PATH_SPARSE ? "sparse" : p == GRAD_PATH_DENSE ? "dense" : "auto";
}

GradPath str_to_grad_path(const std::string& name) {
    if (name == "auto") return GRAD_PATH_AUTO;
    if (name == "sparse") return GRAD_PATH_SPARSE;
    if (name == "dense") return GRAD_PATH_DENSE;
    throw_bad_input("grad_path must be auto, sparse or dense");
}

torch::Tensor shira_layer_forward(LayerImpl& layer, const torch::Tensor& x) {
    return ShiraFunction::apply(x, layer.shira->values, reinterpret_cast<int64_t>(&layer));
}

torch::Tensor shira_matrix_grad(const torch::Tensor& g, const torch::Tensor& x, const ShiraSlot& slot_in,
                                GradPath path) {
    auto& slot = const_cast<ShiraSlot&>(slot_in);  // AUTO records its measurement in the slot
    if (path == GRAD_PATH_SPARSE) return sparse_path(g, x, slot);
    if (path == GRAD_PATH_DENSE) return dense_path(g, x, slot);
    if (slot.chosen != GRAD_PATH_AUTO) return shira_matrix_grad(g, x, slot, slot.chosen);
    // First backward of this layer: one warm-up and one timed run of each path, keep the faster.
    sparse_path(g, x, slot);
    dense_path(g, x, slot);
    // On CUDA the clock must start with the stream drained: otherwise the first timed path also pays for the
    // warm-ups and the rest of the backward still queued, and sparse would lose every time.
    if (g.is_cuda()) g.reshape(-1).slice(0, 0, 1).cpu();
    double        t0 = now_ms();
    torch::Tensor a  = sparse_path(g, x, slot);
    if (a.is_cuda()) a.cpu();  // forces completion before reading the clock
    double        t1 = now_ms();
    torch::Tensor b  = dense_path(g, x, slot);
    if (b.is_cuda()) b.cpu();
    double t2      = now_ms();
    slot.sparse_ms = t1 - t0;
    slot.dense_ms  = t2 - t1;
    slot.chosen    = slot.sparse_ms <= slot.dense_ms ? GRAD_PATH_SPARSE : GRAD_PATH_DENSE;
    return a;
}

GradPathTiming shira_time_grad_paths(int64_t N, int64_t m, int64_t n, const torch::Tensor& idx, int reps) {
    torch::manual_seed(0);
    torch::Tensor g = torch::randn({N, m}), x = torch::randn({N, n});
    ShiraSlot     s;
    s.idx                     = idx;
    s.rows                    = torch::div(idx, n, "floor");
    s.cols                    = idx.remainder(n);
    double        best_sparse = 1e30, best_dense = 1e30;
    torch::Tensor a, b;
    for (int r = 0; r < reps + 1; ++r) {  // rep 0 warms caches and allocator
        double t0 = now_ms();
        a         = sparse_path(g, x, s);
        double t1 = now_ms();
        b         = dense_path(g, x, s);
        double t2 = now_ms();
        if (r > 0) {
            best_sparse = std::min(best_sparse, t1 - t0);
            best_dense  = std::min(best_dense, t2 - t1);
        }
    }
    return {best_sparse, best_dense, (a - b).abs().max().item<double>(), m * n * (int64_t)sizeof(float)};
}
