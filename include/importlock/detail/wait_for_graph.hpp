// SPDX-License-Identifier: BSL-1.0
// importlock/detail/wait_for_graph.hpp: which thread waits on which lock.
//
// The graph has an edge thread -> lock for every thread blocked on a lock,
// and each lock has an edge lock -> holder. Before a thread blocks it walks
// lock -> holder -> lock the holder waits on -> ...; reaching itself means that
// blocking would deadlock (CPython's _ModuleLock.has_deadlock).
//
// Thread-safety: none; callers serialise every call (the wait_graph_domain
// mutex). Cost: add_wait/remove_wait O(1) expected; find_cycle
// O(length of the chain) expected, bounded by the number of waiting threads
// because each thread waits on one lock at a time. Space: one entry per
// blocked thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

#include "flat_map.hpp"

namespace importlock::detail {

// What a node of the graph is: a key's module lock, a system's global import
// lock, a tracked_mutex, or a tracked_thread's end (which its own thread
// "holds" while it runs).
enum class wait_kind : unsigned char { module_lock, global_lock, mutex, thread };

// What a wait-for graph sees of a lock, whatever its system: its holder, and
// how to name it in a cycle report.
struct wait_node {
    // The thread holding the lock; id{} when free. Atomic: threads of other
    // systems read it while walking the graph.
    std::atomic<std::thread::id> holder{};
    // Formats the lock for cycle reports ("db", "<global import lock>",
    // "mutex 'registry'", "the end of thread 3").
    std::string (*describe)(const wait_node&) = nullptr;
    wait_kind kind = wait_kind::module_lock;
    // The import system whose module lock this is; null for tracked mutexes
    // and thread ends.
    const void* owner = nullptr;
};

// Lock must expose a member `holder` of type ThreadId (ThreadId{} when free).
template <class Lock, class ThreadId = std::thread::id, class Hash = std::hash<ThreadId>>
class wait_for_graph {
public:
    // Records that `thread` is about to block on `lock`. Precondition: the
    // thread waits on nothing else.
    void add_wait(ThreadId thread, const Lock* lock) {
        if (const Lock** waits = waiting_.find(thread)) {
            *waits = lock;  // (a broken precondition: the newer wait is the true one)
        } else {
            waiting_.insert_new(thread, lock);
        }
    }

    // Records that `thread` no longer waits.
    void remove_wait(ThreadId thread) noexcept { waiting_.erase(thread); }

    // Returns the lock `thread` waits on, or null.
    const Lock* waiting_on(ThreadId thread) const noexcept {
        const Lock* const* found = waiting_.find(thread);
        return found == nullptr ? nullptr : *found;
    }

    // Returns the locks from `wanted` to one owned by `self` when blocking
    // `self` on `wanted` would close a cycle, else an empty vector. The first
    // element is `wanted`; the last is owned by `self`.
    std::vector<const Lock*> find_cycle(ThreadId self, const Lock* wanted) const {
        std::vector<const Lock*> chain;
        const Lock* lock = wanted;
        // Each step visits a distinct waiting thread unless the graph already
        // holds a cycle, which the protocol forbids; the bound guards it.
        for (std::size_t step = 0; lock != nullptr && step <= waiting_.size(); ++step) {
            chain.push_back(lock);
            const ThreadId holder = lock->holder;
            if (holder == self) return chain;
            if (holder == ThreadId{}) break;
            lock = waiting_on(holder);
        }
        chain.clear();
        return chain;
    }

    // Returns the number of blocked threads.
    std::size_t size() const noexcept { return waiting_.size(); }

    // Calls f(thread, lock) for every blocked thread, in unspecified order.
    template <class F>
    void for_each(F&& f) const {
        waiting_.for_each([&f](const ThreadId& thread, const Lock* lock) { f(thread, lock); });
    }

private:
    struct thread_equal {
        bool operator()(const ThreadId& a, const ThreadId& b) const noexcept { return a == b; }
    };
    // Blocked thread -> the lock it waits on (detail/flat_map.hpp).
    flat_map<ThreadId, const Lock*, Hash, thread_equal> waiting_;
};

}  // namespace importlock::detail
