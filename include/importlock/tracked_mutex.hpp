// SPDX-License-Identifier: BSL-1.0
// importlock/tracked_mutex.hpp: a std::mutex whose waits are checked for
// deadlocks together with imports (chapter 42.24, "Custom Locks During
// Import").
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "detail/scope_exit.hpp"
#include "detail/tracked_wait.hpp"
#include "errors.hpp"
#include "wait_graph_domain.hpp"

namespace importlock {

// A drop-in for std::mutex (Lockable: lock, try_lock, unlock; works with
// std::lock_guard, std::unique_lock, std::scoped_lock) that takes part in a
// wait_graph_domain's wait-for graph. Before a thread blocks on it, the graph
// is walked through module locks and tracked mutexes alike; if blocking
// would close a cycle (a module takes the mutex while the thread holding it
// waits for that module's import), lock() throws deadlock_error naming every
// import and mutex of the cycle, instead of hanging. An import that would
// close such a cycle gets its lock policy's resolution (the partial module or
// circular_import_error, whose chain names the mutex). Locking a
// tracked_mutex this thread already holds throws deadlock_error instead of
// undefined behaviour.
//
// Implementation: the graph node's holder (an atomic std::thread::id) is the
// lock word: lock is one compare-exchange from id{} to this thread, unlock
// one store and a load of the waiter count; a waiter blocks in
// std::atomic::wait and every unlock that sees waiters wakes them all (they
// race for the lock again). So the graph always reads the true holder.
//
// Thread-safety: as std::mutex. Cost: uncontended, one compare-exchange to
// lock and one store plus one load to unlock, as std::mutex (no domain
// access; benchmarks/: section `mutex`); a thread that must wait takes the
// domain's mutex twice and walks the chain. Not fair. Precondition: the
// domain outlives the mutex, which is unlocked when destroyed.
class tracked_mutex {
public:
    // An unnamed mutex of the process-wide domain.
    tracked_mutex() : tracked_mutex(std::string()) {}
    // A mutex named `name` in error messages and snapshots ("mutex 'registry'").
    explicit tracked_mutex(std::string name,
                           wait_graph_domain& domain = wait_graph_domain::process_wide())
        : domain_(&domain) {
        node_.name = std::move(name);
        node_.kind = detail::wait_kind::mutex;
        node_.describe = [](const detail::wait_node& n) {
            const auto& self = static_cast<const detail::named_node&>(n);
            return self.name.empty() ? std::string("an unnamed mutex")
                                     : "mutex '" + self.name + "'";
        };
    }
    tracked_mutex(const tracked_mutex&) = delete;
    tracked_mutex& operator=(const tracked_mutex&) = delete;

    // Blocks until this thread holds the mutex; throws deadlock_error when
    // waiting would never end (see the class comment).
    void lock() {
        const std::thread::id self = std::this_thread::get_id();
        std::thread::id seen{};
        if (take(seen, self)) return;
        if (seen == self) {
            throw deadlock_error("deadlock: this thread already holds " + describe() +
                                     " (tracked_mutex is not recursive)",
                                 {describe()});
        }
        detail::tracked_wait(*domain_, node_, [&] {
            waiters_.fetch_add(1, std::memory_order_seq_cst);
            detail::scope_exit done([&]() noexcept { waiters_.fetch_sub(1); });
            for (std::thread::id holder{}; !take(holder, self); holder = std::thread::id{}) {
                node_.holder.wait(holder, std::memory_order_relaxed);
            }
        });
    }

    // Takes the mutex if it is free; never blocks, never throws (false when
    // this thread already holds it).
    bool try_lock() noexcept {
        std::thread::id seen{};
        return take(seen, std::this_thread::get_id());
    }

    // Releases the mutex. Precondition: this thread holds it.
    void unlock() noexcept {
        node_.holder.store(std::thread::id{}, std::memory_order_seq_cst);
        // notify_all: with libc++, atomics of this size share wake-up slots
        // with other addresses, so notify_one could wake the wrong waiter.
        if (waiters_.load(std::memory_order_seq_cst) != 0) node_.holder.notify_all();
    }

    // Returns the name given at construction ("" when unnamed).
    const std::string& name() const noexcept { return node_.name; }
    // Returns how errors and snapshots name it: "mutex 'registry'".
    std::string describe() const { return node_.describe(node_); }
    // Returns the thread holding it, or id{} (a snapshot: it may change at once).
    std::thread::id holder() const noexcept { return node_.holder.load(std::memory_order_acquire); }

private:
    // One compare-exchange of the holder, which is the lock word itself (so
    // the wait-for graph always reads the true holder); `seen` receives the
    // holder found when the mutex was taken.
    bool take(std::thread::id& seen, std::thread::id self) noexcept {
        return node_.holder.compare_exchange_strong(seen, self, std::memory_order_acquire,
                                                    std::memory_order_relaxed);
    }

    detail::named_node node_;  // node_.holder: the lock word (id{} when free)
    std::atomic<std::size_t> waiters_{0};
    wait_graph_domain* domain_;
};

}  // namespace importlock
