// shira-worker entry point.
//
//   shira-worker [--device auto|cpu|cuda] [serve]          JSON-lines protocol on stdin/stdout (worker.h)
//   shira-worker [--device ...] <subcommand> [--key value]...   one op, output as JSON lines
//
// The subcommands and their usage lines come from the op table (worker/op_table.cpp; `shira-worker --help` lists
// them). Every "--key value" becomes an argument of the op of the same name, so the CLI and the protocol cannot
// drift apart; --targets and --exclude take comma-separated lists, and --identity ID goes to load_model with
// --model/--config (train records it as the adapter's base_identity). Output: progress events, then the result.
#include <algorithm>
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
    std::cerr << "usage: shira-worker [--device auto|cpu|cuda] [serve | <subcommand> [--key value]...]\n"
              << "  serve      JSON-lines protocol on stdin/stdout (the default)\n";
    for (const WorkerOp& op : worker_ops()) {
        if (!op.cli) continue;
        std::string name = op.cli;
        name.resize(std::max<size_t>(name.size(), 10), ' ');
        std::cerr << "  " << name << " " << op.cli_args << "\n";
    }
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::string command = "serve", device_name = "auto";
    Json        args = Json::object();
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "-h" || a == "--help") return usage();
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
        } else {
            command = a;
        }
    }
    const WorkerOp* op = command == "serve" ? nullptr : worker_cli_op(command);
    if (command != "serve" && !op) return usage();
    try {
        const torch::Device device = device_from_name(device_name);
        if (command == "serve") return worker_serve(device);

        WorkerState st(device);
        auto        emit      = [](const Json& e) { print(e); };
        const bool  has_model = args.contains("model") || args.contains("config");
        if (op->cli_setup == CLI_SETUP_MODEL || op->cli_setup == CLI_SETUP_MODEL_AND_MIX ||
            (op->cli_setup == CLI_SETUP_MODEL_IF_GIVEN && has_model)) {
            Json load_args = Json::object();
            if (args.contains("model")) load_args["path"] = args["model"];
            if (args.contains("config")) load_args["config"] = args["config"];
            if (args.contains("seed")) load_args["seed"] = args["seed"];
            if (args.contains("identity")) load_args["identity"] = args["identity"];
            worker_run_op(st, "load_model", load_args, emit);
        }
        if (op->cli_setup == CLI_SETUP_MODEL_AND_MIX && args.contains("adapter")) {
            Json mix = {{"adapters", {{{"path", args["adapter"]}, {"alpha", args.value("alpha", Json(1.0))}}}}};
            worker_run_op(st, "apply_mix", mix, emit);
        }
        const Json result = worker_run_op(st, op->name, args, emit);
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
