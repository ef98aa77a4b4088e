// SPDX-License-Identifier: BSL-1.0
// tests/support/scenario.hpp: building blocks for the multi-threaded scenarios.
//
// Catch2 v2 assertions are not thread-safe: worker threads only write into
// per-thread slots, atomics or mutex-guarded containers, and the main thread
// asserts after joining them. Interleavings are forced with std::latch,
// std::barrier, or by waiting (importlock_test::await) until waiter_count(k)
// shows that a thread is parked on a module lock; never by sleeping.
#pragma once

#include <importlock/importlock.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "policies.hpp"

namespace importlock_test {

// A module whose fields other threads may read while its loader still runs (a
// partial module seen through a cycle), hence atomics. `serial` tells module
// objects apart where an address may be reused.
struct test_module {
    test_module() : serial(next_serial()) {}
    explicit test_module(std::uint64_t s) : serial(s) {}
    test_module(const test_module&) = delete;
    test_module& operator=(const test_module&) = delete;

    // Returns a process-wide unique serial number, from 1.
    static std::uint64_t next_serial() noexcept {
        static std::atomic<std::uint64_t> counter{0};
        return counter.fetch_add(1, std::memory_order_relaxed) + 1;
    }

    const std::uint64_t serial;
    std::atomic<int> value{0};
    std::atomic<bool> done{false};  // the loader sets it last: false means partial
};

template <class Policy>
using system_t = importlock::basic_import_system<std::string, test_module, Policy>;

using importer_t = importlock::importer<std::string, test_module>;

// importlock_test::threaded_policies plus singleflight_per_key_locks (per-key
// locks whose waiters share a failure): wherever no import fails, it must
// behave exactly as per_key_locks.
using scenario_policies =
    std::tuple<importlock::per_key_locks, sharded_strict_per_key_locks,
               importlock::singleflight_per_key_locks, importlock::global_lock>;

// The policies under which several loaders can run at the same time (a barrier
// inside loaders cannot complete under global_lock).
using per_key_policies = std::tuple<importlock::per_key_locks, sharded_strict_per_key_locks,
                                    importlock::singleflight_per_key_locks>;

template <class Policy>
inline constexpr bool is_global_v = Policy::scope == importlock::lock_scope::global;

template <class Policy>
inline constexpr bool is_strict_v =
    Policy::on_cycle == importlock::cycle_resolution::circular_import_error;

// Whether the threads waiting on a failed import get its exception (instead
// of retrying); on_failure is optional in a policy.
template <class Policy>
constexpr bool shares_failures() {
    if constexpr (requires { Policy::on_failure; }) {
        return Policy::on_failure == importlock::failure_mode::waiters_share_failure;
    } else {
        return false;
    }
}

template <class Policy>
inline constexpr bool shares_failures_v = shares_failures<Policy>();

// Creates module objects numbered 1, 2, 3... in creation order; copies share
// the counter (a module_spec stores the factory in a std::function).
class serial_factory {
public:
    std::shared_ptr<test_module> operator()(const std::string& /*key*/) const {
        return std::make_shared<test_module>(next_->fetch_add(1) + 1);
    }

    // Returns how many module objects were created.
    std::uint64_t created() const noexcept { return next_->load(); }

private:
    std::shared_ptr<std::atomic<std::uint64_t>> next_ =
        std::make_shared<std::atomic<std::uint64_t>>(0);
};

// Counts loader runs per key; safe from any thread.
class run_counter {
public:
    // Records one more run of `key`'s loader; returns its number, from 1.
    int record(const std::string& key) {
        std::lock_guard lock(mutex_);
        return ++runs_[key];
    }

    // Returns how many times `key`'s loader ran.
    int operator()(const std::string& key) const {
        std::lock_guard lock(mutex_);
        const auto it = runs_.find(key);
        return it == runs_.end() ? 0 : it->second;
    }

private:
    mutable std::mutex mutex_;
    std::unordered_map<std::string, int> runs_;
};

// Returns "prefix0", "prefix1", ... "prefix<n-1>".
inline std::vector<std::string> numbered_keys(const std::string& prefix, int n) {
    std::vector<std::string> keys;
    for (int i = 0; i < n; ++i) keys.push_back(prefix + std::to_string(i));
    return keys;
}

// Returns the number of threads parked on the locks of `keys`. Under a global
// lock waiter_count(k) counts every thread parked on the one lock, so it is
// asked once.
template <class System>
std::size_t waiters_on(const System& system, const std::vector<std::string>& keys) {
    if constexpr (is_global_v<typename System::lock_policy_type>) {
        return system.waiter_count(keys.front());
    } else {
        std::size_t total = 0;
        for (const auto& key : keys) total += system.waiter_count(key);
        return total;
    }
}

// Runs body(i) for every i in [0, n) on its own thread and joins them all.
// Returns a description of each exception that escaped a body (a test bug or
// an unexpected library error); an empty vector when none did.
template <class Body>
std::vector<std::string> run_threads(int n, Body body) {
    std::mutex mutex;
    std::vector<std::string> escaped;
    std::vector<std::thread> threads;
    threads.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        threads.emplace_back([&, i] {
            try {
                body(i);
            } catch (const std::exception& e) {
                std::lock_guard lock(mutex);
                escaped.push_back("thread " + std::to_string(i) + ": " + e.what());
            } catch (...) {
                std::lock_guard lock(mutex);
                escaped.push_back("thread " + std::to_string(i) + ": unknown exception");
            }
        });
    }
    for (auto& thread : threads) thread.join();
    return escaped;
}

// Checks (on the main thread) that no import is in flight: no live module
// lock, no waiter, no key initialising.
template <class System>
void check_quiescent(const System& system, const std::vector<std::string>& keys) {
    CHECK(system.lock_count() == 0);
    for (const auto& key : keys) {
        INFO("key " << key);
        CHECK_FALSE(system.is_initializing(key));
        CHECK(system.waiter_count(key) == 0);
    }
}

// Checks that `key` holds a fully initialised module.
template <class System>
void check_ready(const System& system, const std::string& key) {
    INFO("key " << key);
    CHECK(system.contains(key));
    CHECK_FALSE(system.is_initializing(key));
    const auto module = system.get(key);
    REQUIRE(module != nullptr);
    CHECK(module->done.load());
}

}  // namespace importlock_test
