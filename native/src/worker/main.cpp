// shira-worker entry point.
//
//   shira-worker [--device auto|cpu|cuda] [serve]         JSON-lines protocol on stdin/stdout
//   shira-worker train  (--model M.safetensors | --config C.json) --data D.safetensors --out A.safetensors [--key value]...
//   shira-worker sample --model M.safetensors [--adapter A.safetensors [--alpha 1]] --prompt "..." --out S.safetensors
//   shira-worker init   --config C.json --out M.safetensors [--seed N]
//   shira-worker export --path A.safetensors --out DIR [--format peft|native]   PEFT folder (adapter_config.json + weights)
//   shira-worker convert --path A.safetensors --out B.safetensors [--values f16|f32] [--model M | --config C]
//                                                        any loadable adapter -> format v2 (docs/adapter-format.md);
//                                                        v1/PEFT files need the model for their layer shapes
//   shira-worker bench --kind train|switch|grad [--quick true] [--models builtin,sd15] | inspect --path A.safetensors | info
//
// --identity ID goes to load_model with --model/--config (train records it as the adapter's base_identity).
//
// Every "--key value" becomes an argument of the protocol op of the same name, so the CLI and the
// protocol cannot drift apart. Output is JSON lines (progress events, then the result).
#include <iostream>
#include <string>

#include <c10/util/Exception.h>

#include "core/device.h"
#include "core/errors.h"
#include "worker/worker.h"

namespace {

Json parse_value(const std::string& s) {
    if (s == "true" || s == "false") return s == "true";
    try {
        size_t used = 0;
        if (s.find_first_of(".eE") == std::string::npos) {
            const long long v = std::stoll(s, &used);
            if (used == s.size()) return v;
        } else {
            const double v = std::stod(s, &used);
            if (used == s.size()) return v;
        }
    } catch (const std::exception&) {
    }
    return s;
}

void print(const Json& j) { std::cout << j.dump(-1, ' ', false, Json::error_handler_t::replace) << '\n' << std::flush; }

int usage() {
    std::cerr << "usage: shira-worker [--device auto|cpu|cuda] [serve|train|sample|init|export|convert|bench|inspect|info] [--key value]...\n";
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string command = "serve", device_name = "auto";
    Json        args    = Json::object();
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a.rfind("--", 0) == 0) {
            if (i + 1 >= argc) return usage();
            std::string key = a.substr(2), value = argv[++i];
            if (key == "device") {
                device_name = value;
            } else if (key == "targets" || key == "exclude") {  // comma-separated lists
                args[key] = split_list(value, ',');
            } else {
                args[key] = parse_value(value);
            }
        } else if (a == "-h" || a == "--help") {
            return usage();
        } else {
            command = a;
        }
    }
    try {
        const torch::Device device = device_from_name(device_name);
        if (command == "serve") return worker_serve(device);

        WorkerState st(device);
        auto emit = [](const Json& e) { print(e); };
        auto load = [&] {
            Json load_args = Json::object();
            if (args.contains("model")) load_args["path"] = args["model"];
            if (args.contains("config")) load_args["config"] = args["config"];
            if (args.contains("seed")) load_args["seed"] = args["seed"];
            if (args.contains("identity")) load_args["identity"] = args["identity"];
            worker_run_op(st, "load_model", load_args, emit);
        };
        Json result;
        if (command == "train") {
            load();
            result = worker_run_op(st, "train", args, emit);
        } else if (command == "sample") {
            load();
            if (args.contains("adapter")) {
                Json mix = {{"adapters", {{{"path", args["adapter"]}, {"alpha", args.value("alpha", Json(1.0))}}}}};
                worker_run_op(st, "apply_mix", mix, emit);
            }
            result = worker_run_op(st, "sample", args, emit);
        } else if (command == "init") {
            load();
            result = worker_run_op(st, "save_model", args, emit);
        } else if (command == "bench") {
            result = worker_run_op(st, "bench", args, emit);
        } else if (command == "export") {
            result = worker_run_op(st, "adapter_export", args, emit);
        } else if (command == "convert") {
            if (args.contains("model") || args.contains("config")) load();
            result = worker_run_op(st, "adapter_convert", args, emit);
        } else if (command == "inspect") {
            result = worker_run_op(st, "adapter_inspect", args, emit);
        } else if (command == "info") {
            result = worker_run_op(st, "info", args, emit);
        } else {
            return usage();
        }
        print({{"ok", true}, {"result", result}});
        return 0;
    } catch (const WorkerError& e) {
        print({{"ok", false}, {"error", {{"type", error_type_name(e.type)}, {"message", e.what()}}}});
    } catch (const c10::Error& e) {
        print({{"ok", false}, {"error", {{"type", "internal"}, {"message", e.what_without_backtrace()}}}});
    } catch (const std::exception& e) {
        print({{"ok", false}, {"error", {{"type", "internal"}, {"message", e.what()}}}});
    }
    return 1;
}
