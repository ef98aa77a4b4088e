// SPDX-License-Identifier: BSL-1.0
// The chapter's threaded import (42.10): five threads import one slow module;
// its body runs once and every thread sees the finished module.
#include <importlock/importlock.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct slow_module {
    int value = 0;
};

int main() {
    importlock::import_system<slow_module> modules;
    std::atomic<int> runs{0};
    std::mutex print_mutex;
    const auto say = [&](const std::string& line) {
        std::lock_guard lock(print_mutex);
        std::puts(line.c_str());
    };

    modules.finder().define("slowmod", [&](slow_module& m, auto&) {
        ++runs;
        say("slowmod start");
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        m.value = 42;
        say("slowmod end");
    });

    std::vector<std::thread> threads;
    for (int i = 0; i < 5; ++i) {
        threads.emplace_back([&] {
            const auto module = modules.import_module("slowmod");
            say(std::to_string(module->value));
        });
    }
    for (auto& thread : threads) thread.join();

    std::printf("loader runs: %d, module locks left: %zu\n", runs.load(), modules.lock_count());
    return runs == 1 && modules.lock_count() == 0 ? 0 : 1;
}
