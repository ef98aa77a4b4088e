// SPDX-License-Identifier: BSL-1.0
// A diagnosing session (42.27, 42.28): provoke a cross-thread circular import,
// watch it with an observer, take a live snapshot while a thread waits (a
// thread dump for imports), then print the import-time report and the
// dependency graph.
#include <importlock/importlock.hpp>

#include <atomic>
#include <barrier>
#include <cstdio>
#include <iostream>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct module {
    int value = 0;
};

// Logs cycles and waits as they happen, and feeds the import-time recorder.
class session_observer : public importlock::import_time_recorder<std::string> {
public:
    void on_wait(const std::string& key, std::thread::id) override {
        std::lock_guard lock(mutex_);
        waits_.push_back(key);
    }
    void on_cycle(const std::string& key, const std::vector<std::string>& chain,
                  bool partial) override {
        std::lock_guard lock(mutex_);
        std::string line = "  cycle while importing " + key + ":";
        for (const auto& k : chain) line += " " + k;
        cycles_.push_back(line + (partial ? " (partial module handed out)" : " (error)"));
    }
    std::vector<std::string> cycles() const {
        std::lock_guard lock(mutex_);
        return cycles_;
    }
    std::size_t waits() const {
        std::lock_guard lock(mutex_);
        return waits_.size();
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::string> cycles_;
    std::vector<std::string> waits_;
};

}  // namespace

int main() {
    importlock::import_system<module> system;
    auto observer = std::make_shared<session_observer>();
    system.set_observer(observer);

    // 1. app imports config and db; config and db import each other, and two
    //    threads start at config and db at the same time: a cross-thread cycle.
    std::barrier both(2);
    std::atomic<int> arrivals{0};
    system.finder().define("app", [](module& m, auto& imp) {
        imp.import_module("config");
        imp.import_module("db");
        m.value = 1;
    });
    system.finder().define("config", [&](module& m, auto& imp) {
        if (arrivals++ < 2) both.arrive_and_wait();  // both threads hold their key
        imp.import_module("db");
        m.value = 2;
    });
    system.finder().define("db", [&](module& m, auto& imp) {
        if (arrivals++ < 2) both.arrive_and_wait();
        imp.import_module("config");
        m.value = 3;
    });
    std::thread first([&] { system.import_module("config"); });
    std::thread second([&] { system.import_module("db"); });
    first.join();
    second.join();
    std::puts("1. two threads closed a cycle config <-> db:");
    for (const auto& line : observer->cycles()) std::puts(line.c_str());

    // 2. A slow import, another thread waiting for it: take a snapshot as a
    //    watchdog would.
    std::latch release(1);
    system.finder().define("slow.cache", [&](module& m, auto&) {
        release.wait();
        m.value = 4;
    });
    system.finder().define("slow", [](module&, auto&) {});
    std::thread holder([&] { system.import_module("slow.cache"); });
    while (!system.is_initializing("slow.cache")) std::this_thread::yield();
    std::thread waiter([&] { system.import_module("slow.cache"); });
    while (system.waiter_count("slow.cache") == 0) std::this_thread::yield();
    const importlock::import_snapshot snapshot = system.snapshot();
    std::puts("\n2. snapshot while an import is in flight:");
    std::cout << snapshot.to_text();
    release.count_down();
    holder.join();
    waiter.join();

    system.import_module("app");

    // 3. The import-time report, CPython's -X importtime layout per thread.
    std::puts("\n3. import time:");
    observer->write(std::cout);

    // 4. The dependency graph, as Graphviz DOT.
    std::puts("\n4. dependency graph:");
    system.write_dependency_dot(std::cout);

    const bool ok = observer->cycles().size() == 1 && snapshot.locks.size() == 1 &&
                    snapshot.threads.size() == 2 && observer->waits() >= 1 &&
                    system.get("app")->value == 1 && system.lock_count() == 0 &&
                    system.snapshot().empty();
    return ok ? 0 : 1;
}
