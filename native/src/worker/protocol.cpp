// The JSON-lines protocol loop (see worker.h): one request per line on stdin, replies and events on stdout. Ops
// marked long_running in the op table run on one job thread; read_only ops and cancel are answered meanwhile,
// anything else gets "busy". Every failure becomes an error reply; no request can end the process but shutdown.
#include <unistd.h>

#include <functional>
#include <iostream>
#include <mutex>
#include <thread>

#include <torch/version.h>

#include "core/errors.h"
#include "worker/worker.h"

namespace {

struct Server {
    explicit Server(torch::Device device) : state(device) {}
    WorkerState       state;
    std::mutex        out_mutex;
    std::thread       job;
    std::atomic<bool> busy{false};

    void write(const Json& j) {
        // dump with replace: invalid UTF-8 from a request echoed in an error must not throw here.
        const std::string           line = j.dump(-1, ' ', false, Json::error_handler_t::replace);
        std::lock_guard<std::mutex> lock(out_mutex);
        std::cout << line << '\n' << std::flush;
    }

    static Json error_reply(const Json& id, ErrorType type, const std::string& message) {
        return {{"id", id}, {"ok", false}, {"error", {{"type", error_type_name(type)}, {"message", message}}}};
    }
    void reply_error(const Json& id, ErrorType type, const std::string& message) {
        write(error_reply(id, type, message));
    }

    // `before_reply` runs just before the final reply is written: a job clears `busy` there, so a client
    // that sends its next request as soon as it reads the reply never sees a stale "busy".
    void run(const Json& id, const std::string& op, const Json& args, const std::function<void()>& before_reply = {}) {
        Json reply;
        try {
            Json result = worker_run_op(state, op, args, [&](Json e) {
                e["id"] = id;
                write(e);
            });
            reply       = {{"id", id}, {"ok", true}, {"result", result}};
        } catch (const WorkerError& e) {
            reply = error_reply(id, e.type, e.what());
        } catch (const c10::Error& e) {
            reply = error_reply(id, ERROR_TYPE_INTERNAL, e.what_without_backtrace());
        } catch (const std::exception& e) {
            reply = error_reply(id, ERROR_TYPE_INTERNAL, e.what());
        }
        if (before_reply) before_reply();
        write(reply);
    }

    void join_job() {
        if (job.joinable()) job.join();
    }

    // Returns false when the loop should stop.
    bool handle_line(const std::string& line) {
        Json req, id = nullptr;
        try {
            req = Json::parse(line);
        } catch (const std::exception& e) {
            reply_error(nullptr, ERROR_TYPE_BAD_INPUT, std::string("malformed JSON: ") + e.what());
            return true;
        }
        if (!req.is_object()) {
            reply_error(nullptr, ERROR_TYPE_BAD_INPUT, "a request must be a JSON object {id, op, args}");
            return true;
        }
        if (req.contains("id")) id = req["id"];
        if (!req.contains("op") || !req["op"].is_string()) {
            reply_error(id, ERROR_TYPE_BAD_INPUT, "'op' must be a string");
            return true;
        }
        const std::string op   = req["op"].get<std::string>();
        const Json        args = req.contains("args") ? req["args"] : Json::object();
        if (op == "cancel") {
            const bool running = busy.load();
            if (running) state.cancel = true;
            write({{"id", id}, {"ok", true}, {"result", {{"cancelling", running}}}});
            return true;
        }
        if (op == "shutdown") {
            state.cancel = true;
            join_job();
            write({{"id", id}, {"ok", true}, {"result", {{"shutdown", true}}}});
            return false;
        }
        const WorkerOp* spec = worker_op(op);  // unknown: answered by worker_run_op (or "busy" while a job runs)
        if (spec && spec->read_only) {         // safe beside a running job
            run(id, op, args);
            return true;
        }
        if (busy.load()) {
            reply_error(id, ERROR_TYPE_BUSY, "a train/sample/bench job is running; send cancel or wait");
            return true;
        }
        if (!spec || !spec->long_running) {
            run(id, op, args);
            return true;
        }
        join_job();
        state.cancel = false;
        busy         = true;
        job          = std::thread([this, id, op, args] { run(id, op, args, [this] { busy = false; }); });
        return true;
    }
};

}  // namespace

int worker_serve(torch::Device device) {
    Server server(device);
    server.write({{"event", "ready"},
                  {"version", SHIRA_WORKER_VERSION},
                  {"device", device.str()},
                  {"torch", TORCH_VERSION},
                  {"pid", (int64_t)getpid()}});
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        if (!server.handle_line(line)) return 0;
    }
    server.state.cancel = true;  // stdin closed: the host is gone, stop promptly
    server.join_job();
    return 0;
}
