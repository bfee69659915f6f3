// What bench_run (bench.cpp) hands the per-kind benchmarks of one model: the request, its common settings and how
// to report a row. Internal to bench/.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>
#include <nlohmann/json.hpp>

#include "model/diffusion_model.h"

struct BenchContext {
    const nlohmann::json&                      args;
    torch::Device                              device;
    bool                                       quick;
    double                                     density;
    bool                                       bf16;        // train cases under CUDA bf16 autocast
    std::function<void(const nlohmann::json&)> push;        // emits and records one row
    std::function<void()>                      stop_check;  // CANCELLED once the request is cancelled
    std::function<bool()>                      should_stop;
};

double median(std::vector<double> v);  // -1 for none

// Rows of one model; `common` holds the fields every row of it carries (device, model, threads, torch).
void bench_train_model(DiffusionModel& model, const std::string& name, const nlohmann::json& common,
                       const BenchContext& ctx);
void bench_switch_model(DiffusionModel& model, const nlohmann::json& common, const BenchContext& ctx);
