// SHiRA training on the model's adaptable layers (Bhardwaj et al., NeurIPS 2024, arXiv 2406.13175): W' = W0 + S
// with S non-zero only on a static mask of K = round(d·numel) entries per targeted tensor (§3.1). Training is
// fused (§3.3, App. E): the resident weights hold W0 + S at every step, only the K values are optimiser parameters,
// and detaching restores W0 bit for bit. Masks: adapter/masks.h; gradients: adapter/sparse_grad.h.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

#include "adapter/adapter.h"
#include "adapter/masks.h"
#include "model/diffusion_model.h"

struct ShiraOptions {
    MaskType                    mask    = MASK_TYPE_STRUCT;
    double                      density = 0.02;
    uint64_t                    seed    = 0;
    std::vector<std::string>    targets = kDefaultTargets;
    std::vector<const Adapter*> exclude;  // non-overlap: indices used by these adapters are not chosen
    GradPath                    grad_path = GRAD_PATH_AUTO;
};

// Scores for Grad/SNIP: accumulates |∂L/∂W| (Grad) or |W ⊙ ∂L/∂W| (SNIP) over `batches` calls of
// `loss_fn` for every targeted layer, with each weight temporarily requiring grad.
std::map<std::string, torch::Tensor> shira_calibrate(DiffusionModel& model, const std::vector<std::string>& targets,
                                                     MaskType mask, int64_t batches,
                                                     const std::function<torch::Tensor()>& loss_fn);

// Builds the masks and attaches a ShiraSlot (values = 0) to every targeted layer. Returns the
// trainable value tensors (the optimiser's only parameters). `scores` is required for GRAD/SNIP.
std::vector<torch::Tensor> shira_attach(DiffusionModel& model, const ShiraOptions& options,
                                        const std::map<std::string, torch::Tensor>& scores = {});
// Fused update: writes base_vals + values into the resident weights at the K indices (after each step).
void shira_write_values(DiffusionModel& model);
// Detaches every slot, restores W0 bit-exactly, and returns the trained adapter (with layer shapes). For Rand
// masks the caller sets rand_seed (adapter_save verifies it), so the file can store the indices implicitly.
Adapter shira_detach(DiffusionModel& model);
