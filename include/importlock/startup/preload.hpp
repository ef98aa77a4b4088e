// SPDX-License-Identifier: BSL-1.0
// importlock/startup/preload.hpp: import a start-up's keys on N threads before
// the workers start (42.26), scheduled by a recorded startup_profile: longest
// remaining path first, each key once its recorded dependencies are done.
//
// Purpose: `preload(system, profile, threads)` or `preload(system, keys,
// threads)` returns a preload_report (wall time, keys imported, failures with
// their exceptions, the recorded critical path). plan_preload(profile) is the
// schedule without running it.
//
// Thread-safety: preload may run while other threads import from the same
// system (it only calls import_module); the profile is read once at the
// start. The calling thread is one of the `threads` workers; the others are
// std::threads, joined before preload returns.
// Cost: planning O(keys log keys + edges); running, per key, one import_module
// plus a mutex-guarded pop from the ready queue and, with a profile, a push of
// each dependent that became ready. Loaders still import their dependencies
// themselves: the preload only orders the work, so a missing or stale edge
// costs parallelism, never correctness.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <ostream>
#include <queue>
#include <ranges>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "../detail/describe_exception.hpp"
#include "../key_traits.hpp"
#include "startup_profile.hpp"

namespace importlock {

// A key whose preload import threw.
template <class Key>
struct preload_failure {
    Key key;
    std::exception_ptr error;  // what import_module threw
};

// What a preload did.
template <class Key>
struct preload_report {
    std::chrono::nanoseconds wall_time{};  // from the first import's start to the last's end
    std::size_t threads = 0;               // workers used (the caller included)
    std::vector<Key> started;              // keys in the order workers took them
    std::vector<Key> imported;             // keys imported (or found loaded), completion order
    std::vector<preload_failure<Key>> failures;  // in completion order; the others went on
    // With a profile: the recorded longest chain, dependencies first, and its
    // recorded self time; the recorded total self time of every key.
    std::vector<Key> critical_path;
    std::chrono::nanoseconds critical_path_time{};
    std::chrono::nanoseconds total_work{};
    std::size_t broken_edges = 0;  // recorded back edges (circular imports) ignored

    bool ok() const noexcept { return failures.empty(); }

    // The best wall time `threads` workers could reach by the recorded costs:
    // max(critical path, total work / threads). Zero without a profile.
    std::chrono::nanoseconds bound() const noexcept {
        const auto per_thread =
            threads == 0 ? total_work
                         : total_work / static_cast<std::chrono::nanoseconds::rep>(threads);
        return std::max(critical_path_time, per_thread);
    }

    // Writes a summary: counts, times, the critical path, each failure's message.
    void write(std::ostream& out) const {
        using traits = key_traits<Key>;
        const auto us = [](std::chrono::nanoseconds d) { return d.count() / 1000; };
        out << "preload: " << imported.size() << " imported, " << failures.size() << " failed, "
            << threads << " threads, " << us(wall_time) << " us";
        if (total_work.count() > 0) {
            out << " (recorded work " << us(total_work) << " us, critical path "
                << us(critical_path_time) << " us, bound " << us(bound()) << " us)";
        }
        out << "\n";
        if (!critical_path.empty()) {
            out << "critical path:";
            for (std::size_t i = 0; i < critical_path.size(); ++i) {
                out << (i == 0 ? " " : " -> ") << traits::to_string(critical_path[i]);
            }
            out << "\n";
        }
        for (const preload_failure<Key>& f : failures) {
            out << "failed: " << traits::to_string(f.key) << ": "
                << detail::describe_exception(f.error) << "\n";
        }
    }

    std::string to_string() const {
        return detail::write_to_string([this](std::ostream& out) { write(out); });
    }
};

// The schedule plan_preload derives from a profile.
template <class Key>
struct preload_plan {
    std::vector<Key> keys;                             // the profile's keys, in its order
    std::vector<std::chrono::nanoseconds> cost;        // recorded self time per key
    std::vector<std::vector<std::size_t>> deps;        // per key: keys it waits for
    std::vector<std::vector<std::size_t>> dependents;  // the reverse
    std::vector<std::chrono::nanoseconds> priority;    // cost + longest chain of dependents
    std::vector<std::size_t> critical_path;            // indices, dependencies first
    std::chrono::nanoseconds critical_path_time{};
    std::chrono::nanoseconds total_work{};
    std::size_t broken_edges = 0;

    // Returns the key indices a single worker would take them in: ready
    // keys by priority, ties by profile order.
    std::vector<std::size_t> sequential_order() const {
        std::vector<std::size_t> pending(keys.size());
        for (std::size_t i = 0; i < keys.size(); ++i) pending[i] = deps[i].size();
        auto queue = make_queue();
        for (std::size_t i = 0; i < keys.size(); ++i) {
            if (pending[i] == 0) queue.push(i);
        }
        std::vector<std::size_t> order;
        while (!queue.empty()) {
            const std::size_t k = queue.top();
            queue.pop();
            order.push_back(k);
            for (const std::size_t d : dependents[k]) {
                if (--pending[d] == 0) queue.push(d);
            }
        }
        return order;
    }

    // A max-queue of indices by (priority, earlier profile position).
    auto make_queue() const {
        const auto lower = [this](std::size_t a, std::size_t b) {
            return priority[a] != priority[b] ? priority[a] < priority[b] : a > b;
        };
        return std::priority_queue<std::size_t, std::vector<std::size_t>, decltype(lower)>(lower);
    }
};

// Derives the schedule from `profile`: the recorded graph with back edges
// (cycles) removed by a depth-first search in profile order; a key's
// priority is its cost plus the longest chain of keys that depend on it.
template <class Key>
preload_plan<Key> plan_preload(const startup_profile<Key>& profile) {
    preload_plan<Key> plan;
    plan.keys = profile.keys();
    plan.cost = profile.self_times();
    const std::size_t n = plan.keys.size();
    std::vector<std::vector<std::size_t>> out(n);  // recorded: from imported to
    for (const auto& [from, to] : profile.edge_indices()) out[from].push_back(to);
    plan.deps.assign(n, {});
    plan.dependents.assign(n, {});
    // Iterative DFS along "imported" edges; an edge to a key on the stack
    // closes a cycle and is dropped. Post-order: dependencies first.
    enum class mark : unsigned char { fresh, open, done };
    std::vector<mark> state(n, mark::fresh);
    std::vector<std::size_t> post;
    post.reserve(n);
    std::vector<std::pair<std::size_t, std::size_t>> stack;  // (node, next edge)
    for (std::size_t root = 0; root < n; ++root) {
        if (state[root] != mark::fresh) continue;
        state[root] = mark::open;
        stack.emplace_back(root, 0);
        while (!stack.empty()) {
            auto& [node, next] = stack.back();
            if (next == out[node].size()) {
                state[node] = mark::done;
                post.push_back(node);
                stack.pop_back();
                continue;
            }
            const std::size_t to = out[node][next++];
            if (state[to] == mark::open) {
                ++plan.broken_edges;
                continue;
            }
            plan.deps[node].push_back(to);
            plan.dependents[to].push_back(node);
            if (state[to] == mark::fresh) {
                state[to] = mark::open;
                stack.emplace_back(to, 0);  // invalidates node/next: not used after
            }
        }
    }
    // Dependents come after their dependencies in `post`: rank them first.
    plan.priority.assign(n, {});
    std::vector<std::size_t> next_on_path(n, n);
    for (std::size_t i = n; i-- > 0;) {
        const std::size_t k = post[i];
        std::chrono::nanoseconds longest{};
        for (const std::size_t d : plan.dependents[k]) {
            if (next_on_path[k] == n || plan.priority[d] > longest) {
                longest = plan.priority[d];
                next_on_path[k] = d;
            }
        }
        plan.priority[k] = plan.cost[k] + longest;
        plan.total_work += plan.cost[k];
    }
    if (n > 0) {
        std::size_t start = 0;
        for (std::size_t k = 1; k < n; ++k) {
            if (plan.priority[k] > plan.priority[start]) start = k;
        }
        plan.critical_path_time = plan.priority[start];
        for (std::size_t k = start; k != n; k = next_on_path[k]) plan.critical_path.push_back(k);
    }
    return plan;
}

namespace detail {

// Runs `work()` on `threads` workers: the caller and up to threads - 1
// std::threads. When the system refuses a thread (std::system_error) or
// memory runs out, the workers started so far, with the caller, do the work.
template <class Work>
void run_preload_workers(std::size_t threads, Work& work) {
    std::vector<std::thread> pool;
    struct joiner {
        std::vector<std::thread>& pool;
        ~joiner() {
            for (std::thread& t : pool) t.join();
        }
    } join_all{pool};
    try {
        pool.reserve(threads - 1);
        for (std::size_t w = 1; w < threads; ++w) pool.emplace_back([&work] { work(); });
    } catch (...) {  // fewer workers; the work itself is unchanged
    }
    work();
}

template <class System, class Key>
bool preload_one(System& system, const Key& key, std::exception_ptr& error) noexcept {
    try {
        (void)system.import_module(key);
        return true;
    } catch (...) {
        error = std::current_exception();
        return false;
    }
}

}  // namespace detail

// Imports every key of `profile` into `system` with `threads` workers (0
// counts as 1), by plan_preload's schedule: a key starts once the keys it
// recorded as imports are done (a failed one counts as done), the ready key
// with the longest remaining recorded path first. Failures are reported, the
// other keys go on. Keys the finder no longer knows fail with
// module_not_found_error.
template <class System>
preload_report<typename System::key_type> preload(
    System& system, const startup_profile<typename System::key_type>& profile,
    std::size_t threads) {
    using Key = typename System::key_type;
    const preload_plan<Key> plan = plan_preload(profile);
    const std::size_t n = plan.keys.size();
    preload_report<Key> report;
    report.threads = std::max<std::size_t>(1, std::min(threads, n));
    report.total_work = plan.total_work;
    report.critical_path_time = plan.critical_path_time;
    report.broken_edges = plan.broken_edges;
    for (const std::size_t k : plan.critical_path) report.critical_path.push_back(plan.keys[k]);
    if (n == 0) return report;

    std::mutex mutex;
    std::condition_variable ready_cv;
    auto ready = plan.make_queue();
    std::vector<std::size_t> pending(n);
    for (std::size_t i = 0; i < n; ++i) {
        pending[i] = plan.deps[i].size();
        if (pending[i] == 0) ready.push(i);
    }
    std::size_t unfinished = n;
    const auto start = std::chrono::steady_clock::now();
    auto work = [&] {
        std::unique_lock lock(mutex);
        for (;;) {
            ready_cv.wait(lock, [&] { return !ready.empty() || unfinished == 0; });
            if (ready.empty()) return;  // everything finished
            const std::size_t k = ready.top();
            ready.pop();
            report.started.push_back(plan.keys[k]);
            lock.unlock();
            std::exception_ptr error;
            const bool ok = detail::preload_one(system, plan.keys[k], error);
            lock.lock();
            if (ok) {
                report.imported.push_back(plan.keys[k]);
            } else {
                report.failures.push_back({plan.keys[k], std::move(error)});
            }
            std::size_t woken = 0;
            for (const std::size_t d : plan.dependents[k]) {
                if (--pending[d] == 0) {
                    ready.push(d);
                    ++woken;
                }
            }
            // One newly ready key this worker takes itself; more wake the others.
            if (--unfinished == 0 || woken > 1) ready_cv.notify_all();
        }
    };
    detail::run_preload_workers(report.threads, work);
    report.wall_time = std::chrono::steady_clock::now() - start;
    return report;
}

// Imports every key of `keys` into `system` with `threads` workers (0 counts
// as 1), each worker taking the next key in the given order. Failures are
// reported, the other keys go on; no critical path (no recorded graph).
template <class System, std::ranges::input_range Keys>
    requires std::convertible_to<std::ranges::range_reference_t<const Keys&>,
                                 typename System::key_type> &&
             (!std::is_same_v<std::remove_cvref_t<Keys>,
                              startup_profile<typename System::key_type>>)
preload_report<typename System::key_type> preload(System& system, const Keys& keys,
                                                  std::size_t threads) {
    using Key = typename System::key_type;
    std::vector<Key> order;
    for (auto&& key : keys) order.emplace_back(key);
    preload_report<Key> report;
    const std::size_t n = order.size();
    report.threads = std::max<std::size_t>(1, std::min(threads, n));
    if (n == 0) return report;
    std::mutex mutex;
    std::atomic<std::size_t> next{0};
    const auto start = std::chrono::steady_clock::now();
    auto work = [&] {
        for (;;) {
            const std::size_t k = next.fetch_add(1, std::memory_order_relaxed);
            if (k >= n) return;
            {
                std::lock_guard lock(mutex);
                report.started.push_back(order[k]);
            }
            std::exception_ptr error;
            const bool ok = detail::preload_one(system, order[k], error);
            std::lock_guard lock(mutex);
            if (ok) {
                report.imported.push_back(order[k]);
            } else {
                report.failures.push_back({order[k], std::move(error)});
            }
        }
    };
    detail::run_preload_workers(report.threads, work);
    report.wall_time = std::chrono::steady_clock::now() - start;
    return report;
}

// preload(system, {"a", "b"}, threads).
template <class System>
preload_report<typename System::key_type> preload(
    System& system, std::initializer_list<typename System::key_type> keys, std::size_t threads) {
    return preload(system, std::vector<typename System::key_type>(keys), threads);
}

}  // namespace importlock
