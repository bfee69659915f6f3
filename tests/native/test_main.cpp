// shira-worker-tests: tiny configs, fixed seeds, CPU. Runs one case by name (ctest does) or all; cases register
// themselves with SHIRA_TEST (test_util.h) from the test_<concern>.cpp files.
#include "test_util.h"

std::map<std::string, TestFn>& test_registry() {
    static std::map<std::string, TestFn> cases;
    return cases;
}

std::map<std::string, ToolFn>& tool_registry() {
    static std::map<std::string, ToolFn> tools;
    return tools;
}

int main(int argc, char** argv) {
    // One thread: the machines are shared, and an oversubscribed OpenMP pool is many times slower.
    torch::set_num_threads(1);
    if (argc > 1) {
        const auto tool = tool_registry().find(argv[1]);
        if (tool != tool_registry().end()) return tool->second();
    }
    const auto& cases = test_registry();
    int         run   = 0;
    for (const auto& [name, fn] : cases) {
        if (argc > 1 && name != argv[1]) continue;
        ++run;
        std::printf("[%s]\n", name.c_str());
        const int before = g_failures;
        try {
            fn();
        } catch (const std::exception& e) {
            std::fprintf(stderr, "  uncaught exception: %s\n", e.what());
            ++g_failures;
        }
        std::printf("[%s] %s\n", name.c_str(), g_failures == before ? "ok" : "FAILED");
    }
    if (run == 0) {
        std::fprintf(stderr, "unknown test case '%s'\n", argc > 1 ? argv[1] : "");
        return 2;
    }
    return g_failures == 0 ? 0 : 1;
}
