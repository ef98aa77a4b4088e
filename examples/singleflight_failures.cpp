// SPDX-License-Identifier: BSL-1.0
// What threads waiting on a failed import get (42.16). A loader fails on its
// first run while 4 other threads wait for it. per_key_locks (CPython): the
// waiters retry and one of them runs the loader again. singleflight_per_key_locks
// (Go's singleflight): every waiter rethrows the same exception object.
#include <importlock/importlock.hpp>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <latch>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

struct catalog {
    int items = 0;
};

struct backend_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct outcome {
    int loader_runs = 0;
    int successes = 0;
    std::vector<std::exception_ptr> errors;    // one per thread that failed
    std::vector<std::exception_ptr> distinct;  // the different exception objects among them
};

template <class Policy>
outcome import_from_5_threads() {
    importlock::basic_import_system<std::string, catalog, Policy> system;
    std::atomic<int> runs{0};
    system.finder().define("catalog", [&](catalog& c, auto&) {
        if (++runs == 1) {
            // Fail only once every other thread is parked on "catalog"'s lock.
            while (system.waiter_count("catalog") != 4) std::this_thread::yield();
            throw backend_error("catalog backend unavailable");
        }
        c.items = 42;
    });

    constexpr std::size_t threads_n = 5;
    std::vector<std::exception_ptr> errors(threads_n);
    std::vector<int> items(threads_n, 0);
    std::latch start(threads_n);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < threads_n; ++i) {
        threads.emplace_back([&, i] {
            start.arrive_and_wait();
            try {
                items[i] = system.import_module("catalog")->items;
            } catch (const backend_error&) {
                errors[i] = std::current_exception();
            }
        });
    }
    for (auto& thread : threads) thread.join();

    outcome result;
    result.loader_runs = runs;
    for (std::size_t i = 0; i < threads_n; ++i) {
        if (errors[i]) {
            result.errors.push_back(errors[i]);
        } else if (items[i] == 42) {
            ++result.successes;
        }
    }
    std::printf("  loader runs: %d, threads that got the catalog: %d, that got an error: %zu\n",
                result.loader_runs, result.successes, result.errors.size());
    for (const auto& error : result.errors) {
        try {
            std::rethrow_exception(error);
        } catch (const backend_error& e) {
            std::printf("    %s (exception object at %p)\n", e.what(),
                        static_cast<const void*>(&e));
        }
    }
    for (const auto& error : result.errors) {
        bool seen = false;
        for (const auto& other : result.distinct) seen = seen || other == error;
        if (!seen) result.distinct.push_back(error);
    }
    std::printf("  distinct exception objects: %zu\n", result.distinct.size());
    // Imports that start after the failure retry it, under both policies.
    const int later = system.import_module("catalog")->items;
    std::printf("  a later import: items = %d (loader runs: %d)\n", later, runs.load());
    if (later != 42 || system.lock_count() != 0) result.successes = -1;
    return result;
}

int main() {
    std::puts("per_key_locks: the waiters retry");
    const outcome retry = import_from_5_threads<importlock::per_key_locks>();
    const bool retry_ok = retry.loader_runs == 2 && retry.successes == 4 &&
                          retry.errors.size() == 1 && retry.distinct.size() == 1;

    std::puts("singleflight_per_key_locks: the waiters share the failure");
    const outcome shared = import_from_5_threads<importlock::singleflight_per_key_locks>();
    const bool shared_ok = shared.loader_runs == 1 && shared.successes == 0 &&
                           shared.errors.size() == 5 && shared.distinct.size() == 1;

    const bool ok = retry_ok && shared_ok;
    std::puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
