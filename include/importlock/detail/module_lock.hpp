// SPDX-License-Identifier: BSL-1.0
// importlock/detail/module_lock.hpp: the lock one import holds, CPython's _ModuleLock.
//
// A module_lock is a record, not a mutex: owner, recursion depth and waiter
// count, plus a condition variable on which other threads wait for it.
// depth and waiters are guarded by the owning system's state mutex; owner
// (in wait_node) additionally by the wait-for graph's mutex, because other
// systems' threads read it when they walk the graph. Keeping "check the graph,
// then register as a waiter" under that one mutex makes it atomic, so two
// threads closing one cycle at the same moment neither both miss it nor both
// report it.
//
// Invariant: owner == std::thread::id{} iff depth == 0.
#pragma once

#include <cstddef>
#include <string>
#include <thread>

#include "../key_traits.hpp"

namespace importlock::detail {

// What the process-wide wait-for graph sees of a lock, whatever its system.
struct wait_node {
    std::thread::id owner{};  // the thread holding the lock; id{} when free
    // Formats the lock's key for cycle reports; set by the concrete lock.
    std::string (*describe)(const wait_node&) = nullptr;
};

template <class Key, class CondVar>
struct module_lock : wait_node {
    module_lock() noexcept { describe = &describe_key; }
    module_lock(const module_lock&) = delete;
    module_lock& operator=(const module_lock&) = delete;

    const Key* key = nullptr;  // the key in the lock map; null for a global lock
    std::size_t hash = 0;      // the key's hash, so that dropping the lock never hashes
    std::size_t depth = 0;     // re-entrant acquisitions by owner
    std::size_t waiters = 0;   // threads blocked in wait() on `released`
    CondVar released;          // notified when depth drops to 0

    // Returns true when no thread holds or waits on the lock.
    bool unused() const noexcept { return depth == 0 && waiters == 0; }

    // Takes the lock for `self` if it is free or already `self`'s. O(1).
    bool try_acquire(std::thread::id self) noexcept {
        if (depth != 0 && owner != self) return false;
        owner = self;
        ++depth;
        return true;
    }

    // Drops one acquisition; wakes the waiters when the lock becomes free. O(1).
    void release() noexcept {
        if (--depth == 0) {
            owner = std::thread::id{};
            if (waiters != 0) released.notify_all();
        }
    }

private:
    static std::string describe_key(const wait_node& node) {
        const auto& self = static_cast<const module_lock&>(node);
        return self.key != nullptr ? key_traits<Key>::to_string(*self.key)
                                   : std::string("<global import lock>");
    }
};

}  // namespace importlock::detail
