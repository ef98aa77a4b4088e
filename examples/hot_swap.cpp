// SPDX-License-Identifier: BSL-1.0
// Owning handles and a hot swap: two worker threads price orders through their own
// shared_module_handle to a "pricing" rules module. An operator swaps the rules
// (erase: the next import builds version 2) while the workers are between orders.
// Each worker keeps the version it holds alive and whole until its next use, which
// picks up version 2; version 1 is destroyed when the last worker lets go of it.
// Per use, a handle costs one acquire load: no lock and no shared reference-count
// write, unlike import_module, which copies a shared_ptr on every call.
#include <importlock/importlock.hpp>

#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

struct pricing {
    int version = 0;
    int margin_percent = 0;
    std::atomic<int>* destroyed = nullptr;
    ~pricing() {
        if (destroyed != nullptr) destroyed->fetch_add(1);
        std::printf("  pricing v%d destroyed\n", version);
    }
    int price(int cost) const { return cost + cost * margin_percent / 100; }
};

int main() {
    importlock::import_system<pricing> system;
    std::atomic<int> builds{0};
    std::atomic<int> destroyed{0};
    system.finder().define("pricing", [&](pricing& p, auto&) {
        p.version = ++builds;
        p.margin_percent = p.version == 1 ? 10 : 20;
        p.destroyed = &destroyed;
        std::printf("  pricing v%d built\n", p.version);
    });

    // Phase 1: both workers price with v1. Phase 2: the operator swaps (workers wait).
    // Phase 3: both workers price again and see v2.
    std::barrier phase(3);
    std::vector<int> seen_before(2), seen_after(2);
    std::vector<std::thread> workers;
    const auto prototype = system.shared_handle("pricing");
    for (std::size_t w = 0; w < 2; ++w) {
        workers.emplace_back([&, w, handle = prototype]() mutable {
            int total = 0;
            for (int order = 0; order < 1000; ++order) total += handle->price(100);
            seen_before[w] = handle->version;
            std::printf("  worker %zu: 1000 orders at v%d, total %d\n", w, handle->version, total);
            phase.arrive_and_wait();  // the swap happens now
            phase.arrive_and_wait();
            // The handle still owns v1 here: it was erased from the system, not destroyed.
            const bool still_v1 = handle.owned()->version == 1;
            total = 0;
            for (int order = 0; order < 1000; ++order) total += handle->price(100);
            seen_after[w] = handle->version;
            std::printf("  worker %zu: owned v1 until now: %s; 1000 orders at v%d, total %d\n", w,
                        still_v1 ? "yes" : "no", handle->version, total);
        });
    }
    phase.arrive_and_wait();
    std::printf("operator: swapping the pricing rules\n");
    system.erase("pricing");
    const bool v1_alive = destroyed.load() == 0;  // the workers' handles hold it
    std::printf("operator: v1 erased from the system, still alive in the workers: %s\n",
                v1_alive ? "yes" : "no");
    phase.arrive_and_wait();
    for (auto& t : workers) t.join();

    const bool ok = v1_alive && builds == 2 && seen_before == std::vector<int>{1, 1} &&
                    seen_after == std::vector<int>{2, 2} && destroyed == 1 &&
                    system.lock_count() == 0;
    std::printf("%s: 2 builds, v1 destroyed once after both workers moved to v2\n",
                ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
}
