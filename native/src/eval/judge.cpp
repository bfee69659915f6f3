// Style judge training and scoring (judge.h): stratified held-out split, noise augmentation, class-balanced batches.
#include "eval/judge.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/timing.h"
#include "model_io/images.h"
#include "model_io/safetensors.h"

using json = nlohmann::json;

namespace {

// Four conv levels (3×3 conv → GroupNorm → SiLU, then 2×2 average pooling on all but the last), global
// average pooling → features [B, F], a linear head → logits [B, C]. Small on purpose: styles differ in
// colour, texture and edges, which the first levels already see; ~20 s of training on one CPU core.
struct JudgeNetImpl : torch::nn::Module {
    JudgeNetImpl(const std::vector<int64_t>& widths, int64_t classes) {
        int64_t in = 3;
        for (size_t i = 0; i < widths.size(); ++i) {
            convs_.push_back(register_module("conv" + std::to_string(i),
                                             torch::nn::Conv2d(torch::nn::Conv2dOptions(in, widths[i], 3).padding(1))));
            norms_.push_back(register_module("norm" + std::to_string(i),
                                             torch::nn::GroupNorm(std::min<int64_t>(8, widths[i]), widths[i])));
            in = widths[i];
        }
        head_ = register_module("head", torch::nn::Linear(in, classes));
    }
    // x [B, 3, H, W] in [-1, 1] → {features [B, F], logits [B, C]}
    std::pair<torch::Tensor, torch::Tensor> forward(torch::Tensor x) {
        for (size_t i = 0; i < convs_.size(); ++i) {
            x = torch::silu(norms_[i]->forward(convs_[i]->forward(x)));
            if (i + 1 < convs_.size()) x = torch::avg_pool2d(x, 2);
        }
        torch::Tensor f = x.mean({2, 3});
        return {f, head_->forward(f)};
    }
    std::vector<torch::nn::Conv2d>    convs_;
    std::vector<torch::nn::GroupNorm> norms_;
    torch::nn::Linear                 head_{nullptr};
};
TORCH_MODULE(JudgeNet);

void check_images(const torch::Tensor& images) {
    if (images.dim() != 4 || images.size(3) != 3 || images.scalar_type() != torch::kUInt8) {
        throw_bad_input("images must be uint8 [N, H, W, 3]");
    }
    if (images.size(1) < 8 || images.size(2) < 8) throw_bad_input("images must be at least 8×8");
}

}  // namespace

JudgeTrainResult judge_train(const torch::Tensor& images_u8, const torch::Tensor& labels,
                             const std::vector<std::string>& classes, const JudgeTrainOptions& o,
                             const std::string& out, const std::function<bool()>& should_stop,
                             const std::function<void(int64_t, double)>& progress) {
    check_images(images_u8);
    const int64_t N = images_u8.size(0), C = (int64_t)classes.size();
    if (C < 2) throw_bad_input("a judge needs at least 2 classes");
    if (labels.dim() != 1 || labels.size(0) != N) throw_bad_input("labels must be int64 [N], one per image");
    torch::Tensor y = labels.to(torch::kInt64);
    if (y.min().item<int64_t>() < 0 || y.max().item<int64_t>() >= C)
        throw_bad_input("labels must be in 0.." + std::to_string(C - 1));
    if (o.widths.empty() || o.widths.size() > 6) throw_bad_input("judge widths must list 1..6 levels");

    // 1. stratified split: the first ⌈f·n_c⌉ of a seeded permutation of each class are held out
    at::Generator        gen = at::detail::createCPUGenerator(o.seed);
    std::vector<int64_t> train_idx, held_idx;
    for (int64_t c = 0; c < C; ++c) {
        torch::Tensor members = (y == c).nonzero().reshape(-1);
        const int64_t n       = members.numel();
        if (n < 2) throw_bad_input("class '" + classes[c] + "' needs at least 2 images, has " + std::to_string(n));
        torch::Tensor perm = members.index_select(0, torch::randperm(n, gen, torch::kInt64));
        const int64_t held =
            std::max<int64_t>(1, std::min<int64_t>(n - 1, (int64_t)std::ceil(o.heldout_fraction * (double)n)));
        for (int64_t i = 0; i < n; ++i) (i < held ? held_idx : train_idx).push_back(perm[i].item<int64_t>());
    }
    torch::Tensor tr = torch::tensor(train_idx, torch::kInt64), he = torch::tensor(held_idx, torch::kInt64);
    torch::Tensor x_train = images_to_model(images_u8.index_select(0, tr)), y_train = y.index_select(0, tr);
    torch::Tensor x_held = images_to_model(images_u8.index_select(0, he)), y_held = y.index_select(0, he);

    // 2. train with AdamW, horizontal flips, cosine learning rate; classes are balanced per batch by
    //    inverse-frequency sampling so a large "base" class does not swamp a small style
    torch::manual_seed(o.seed);
    JudgeNet            net(o.widths, C);
    torch::optim::AdamW opt(net->parameters(), torch::optim::AdamWOptions(o.lr).weight_decay(1e-4));
    torch::Tensor       counts  = torch::bincount(y_train, {}, C).to(torch::kFloat64);
    torch::Tensor       weights = (1.0 / counts).index_select(0, y_train);
    const double        t0      = now_ms();
    double              last    = 0;
    net->train();
    for (int64_t step = 1; step <= o.steps; ++step) {
        if (should_stop && should_stop()) throw WorkerError(ERROR_TYPE_CANCELLED, "judge training cancelled");
        const double lr = o.lr * 0.5 * (1.0 + std::cos(M_PI * (double)(step - 1) / (double)o.steps));
        for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
        torch::Tensor pick = torch::multinomial(weights, std::min<int64_t>(o.batch, x_train.size(0) * 4), true, gen);
        torch::Tensor xb   = x_train.index_select(0, pick);
        torch::Tensor flip = (torch::rand({xb.size(0)}, gen) < 0.5).view({-1, 1, 1, 1});
        xb                 = torch::where(flip, xb.flip({3}), xb);
        if (o.noise > 0)
            xb = xb + torch::randn(xb.sizes(), gen) * (torch::rand({xb.size(0), 1, 1, 1}, gen) * o.noise * 2.0);
        auto [f, logits]   = net->forward(xb);
        torch::Tensor loss = torch::cross_entropy_loss(logits, y_train.index_select(0, pick));
        opt.zero_grad();
        loss.backward();
        opt.step();
        last = loss.item<double>();
        if (progress && (step % 25 == 0 || step == o.steps)) progress(step, last);
    }

    // 3. accuracy on both splits, and per class on the held-out one
    net->eval();
    torch::NoGradGuard no_grad;
    auto               predict = [&](const torch::Tensor& x) { return net->forward(x).second.argmax(1); };
    JudgeTrainResult   r;
    torch::Tensor      ph = predict(x_held);
    r.heldout_accuracy    = ph.eq(y_held).to(torch::kFloat64).mean().item<double>();
    r.train_accuracy      = predict(x_train).eq(y_train).to(torch::kFloat64).mean().item<double>();
    for (int64_t c = 0; c < C; ++c) {
        torch::Tensor in_c = y_held == c;
        r.heldout_accuracy_per_class.push_back(ph.masked_select(in_c).eq(c).to(torch::kFloat64).mean().item<double>());
    }
    r.train_count   = tr.numel();
    r.heldout_count = he.numel();
    r.final_loss    = last;
    r.seconds       = (now_ms() - t0) / 1000.0;

    std::map<std::string, torch::Tensor> tensors;
    for (const auto& p : net->named_parameters()) tensors["judge." + p.key()] = p.value().detach().contiguous();
    safetensors_save(out, tensors,
                     {{"format", "shira-studio-judge"},
                      {"classes", json(classes).dump()},
                      {"widths", json(o.widths).dump()},
                      {"heldout_accuracy", std::to_string(r.heldout_accuracy)},
                      {"size", std::to_string(images_u8.size(1))}});
    return r;
}

JudgeScores judge_score(const std::string& judge_path, const torch::Tensor& images_u8) {
    check_images(images_u8);
    SafeTensors st = safetensors_load(judge_path);
    if (st.metadata["format"] != "shira-studio-judge") throw_bad_input("'" + judge_path + "' is not a judge file");
    JudgeScores          out;
    std::vector<int64_t> widths;
    try {
        out.classes = json::parse(st.metadata.at("classes")).get<std::vector<std::string>>();
        widths      = json::parse(st.metadata.at("widths")).get<std::vector<int64_t>>();
    } catch (const std::exception&) {
        throw_bad_input("judge '" + judge_path + "' has malformed metadata");
    }
    JudgeNet           net(widths, (int64_t)out.classes.size());
    torch::NoGradGuard no_grad;
    for (auto& p : net->named_parameters()) {
        auto it = st.tensors.find("judge." + p.key());
        if (it == st.tensors.end() || it->second.sizes() != p.value().sizes())
            throw_bad_input("judge '" + judge_path + "' lacks or misshapes '" + p.key() + "'");
        p.value().copy_(it->second);
    }
    net->eval();
    std::vector<torch::Tensor> probs, feats;
    for (int64_t b = 0; b < images_u8.size(0); b += 256) {
        auto [f, logits] =
            net->forward(images_to_model(images_u8.slice(0, b, std::min<int64_t>(images_u8.size(0), b + 256))));
        probs.push_back(torch::softmax(logits, 1));
        feats.push_back(f);
    }
    out.probs    = torch::cat(probs).contiguous();
    out.features = torch::cat(feats).contiguous();
    return out;
}
