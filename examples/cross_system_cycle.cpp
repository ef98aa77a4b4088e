// SPDX-License-Identifier: BSL-1.0
// Two independent import systems (42.18) whose loaders import from each other
// on two threads, each holding its own key first (42.9): the wait-for graph is
// process-wide, so nothing hangs and exactly one thread gets the other
// system's partially initialised module.
#include <importlock/importlock.hpp>

#include <atomic>
#include <barrier>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

// Read by the other thread while its loader still runs (a partial module
// seen through a cycle), hence atomics.
struct node {
    std::atomic<int> value{0};
    std::atomic<bool> done{false};  // set last: false means partial
};

using system_t = importlock::import_system<node>;

int main() {
    system_t a;  // two systems: separate registries and module locks
    system_t b;
    std::barrier both_hold(2);  // each thread holds its own key before importing the other
    std::atomic<bool> alpha_first_run{true};
    std::atomic<bool> beta_first_run{true};
    std::atomic<int> partial_seen{0};
    std::mutex print_mutex;
    const auto report = [&](const char* who, const char* what, const node& seen) {
        const bool partial = !seen.done.load();
        if (partial) ++partial_seen;
        std::lock_guard lock(print_mutex);
        std::printf("  %s got %s: %s (value %d)\n", who, what,
                    partial ? "partially initialised" : "finished", seen.value.load());
    };

    a.finder().define("alpha", [&](node& n, auto&) {
        if (alpha_first_run.exchange(false)) both_hold.arrive_and_wait();
        const auto beta = b.import_module("beta");  // waits for thread 2, or closes the cycle
        report("alpha's loader (system A)", "B's beta", *beta);
        n.value = 1;
        n.done = true;
    });
    b.finder().define("beta", [&](node& n, auto&) {
        if (beta_first_run.exchange(false)) both_hold.arrive_and_wait();
        const auto alpha = a.import_module("alpha");
        report("beta's loader (system B)", "A's alpha", *alpha);
        n.value = 2;
        n.done = true;
    });

    std::puts("thread 1 imports alpha from A, thread 2 imports beta from B:");
    std::thread one([&] { a.import_module("alpha"); });
    std::thread two([&] { b.import_module("beta"); });
    one.join();
    two.join();

    const bool finished = a.get("alpha")->done && b.get("beta")->done;
    std::printf("no deadlock; partial modules seen: %d; both finished: %d\n", partial_seen.load(),
                finished);
    const bool ok = partial_seen == 1 && finished && a.lock_count() == 0 && b.lock_count() == 0;
    std::puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
