// AWOM / AWOR (overlap.h; paper §4.2, App. F) on dense per-layer deltas, in fp64.
#include "adapter/overlap.h"

#include <algorithm>
#include <map>

#include <torch/torch.h>

#include "core/errors.h"

namespace {

// Dense [m, n] view of one layer's delta at the given scale.
torch::Tensor shira_delta(const ShiraTensor& t, int64_t m) {
    torch::Tensor d = torch::zeros({m * t.cols}, torch::kFloat32);
    d.index_put_({t.idx}, t.values.to(torch::kFloat32));
    return d.view({m, t.cols});
}

torch::Tensor lora_delta(const LoraTensor& t) {
    const int64_t r = t.A.size(0);
    return t.B.reshape({t.B.size(0), r}).to(torch::kFloat32).mm(t.A.reshape({r, -1}).to(torch::kFloat32)) *
           (t.alpha / (double)r);
}

int64_t rows_of(const ShiraTensor& t) {
    if (!t.shape.empty()) return t.shape[0];
    return t.idx.numel() ? t.idx[t.idx.numel() - 1].item<int64_t>() / t.cols + 1 : 1;
}

}  // namespace

std::vector<LayerOverlap> adapter_overlap(const Adapter& a, const Adapter& b, double alpha_a, double alpha_b) {
    // One dense delta per layer of each adapter (LoRA and SHiRA alike), keyed by layer path.
    auto deltas = [](const Adapter& x, double alpha) {
        std::map<std::string, torch::Tensor> d;
        for (const auto& [name, t] : x.shira) d[name] = shira_delta(t, rows_of(t)) * alpha;
        for (const auto& [name, t] : x.lora) d[name] = lora_delta(t) * alpha;
        return d;
    };
    torch::NoGradGuard        no_grad;
    auto                      da = deltas(a, alpha_a), db = deltas(b, alpha_b);
    std::vector<LayerOverlap> out;
    for (auto& [name, d1] : da) {
        auto it = db.find(name);
        if (it == db.end()) continue;
        torch::Tensor d2 = it->second;
        if (d1.size(1) != d2.size(1)) throw_bad_input("adapters disagree on the shape of layer '" + name + "'");
        // SHiRA row counts come from the last trained row when a v1 file stored no shape; pad to agree.
        const int64_t m = std::max(d1.size(0), d2.size(0));
        if (d1.size(0) < m) d1 = torch::cat({d1, torch::zeros({m - d1.size(0), d1.size(1)})});
        if (d2.size(0) < m) d2 = torch::cat({d2, torch::zeros({m - d2.size(0), d2.size(1)})});
        torch::Tensor P = d1.to(torch::kFloat64).mm(d2.to(torch::kFloat64).t());  // [m, m]
        LayerOverlap  o;
        o.layer = name;
        o.m     = m;
        o.awom  = torch::linalg::matrix_norm(P, 2, {-2, -1}, false, c10::nullopt).item<double>();
        const double n1 =
            torch::linalg::matrix_norm(d1.to(torch::kFloat64), 2, {-2, -1}, false, c10::nullopt).item<double>();
        const double n2 =
            torch::linalg::matrix_norm(d2.to(torch::kFloat64), 2, {-2, -1}, false, c10::nullopt).item<double>();
        o.awom_normalized = n1 > 0 && n2 > 0 ? o.awom / (n1 * n2) : 0.0;
        o.awor            = 1.0 - (double)P.ne(0).sum().item<int64_t>() / (double)(m * m);
        out.push_back(o);
    }
    return out;
}
