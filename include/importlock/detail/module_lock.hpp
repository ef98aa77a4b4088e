// importlock/detail/module_lock.hpp: the lock one import holds, CPython's _ModuleLock.
//
// A module_lock is a record, not a mutex: owner, recursion depth and waiter
// count, guarded by the import system's state mutex, plus a condition
// variable on which other threads wait for it. Keeping every record under one
// mutex makes "check the wait-for graph, then register as a waiter" a single
// atomic step, so two threads closing one cycle at the same moment can
// neither both miss it nor both report it.
//
// Thread-safety: none of its own; every member is used with the owning
// system's state mutex held. Invariant: owner == ThreadId{} iff depth == 0.
#pragma once

#include <cstddef>
#include <thread>

namespace importlock::detail {

template <class Key, class CondVar, class ThreadId = std::thread::id>
struct module_lock {
    const Key* key = nullptr;  // the key in the lock map; null for a global lock
    ThreadId owner{};          // the thread holding the lock; ThreadId{} when free
    std::size_t depth = 0;     // re-entrant acquisitions by owner
    std::size_t waiters = 0;   // threads blocked in wait() on `released`
    CondVar released;          // notified when depth drops to 0

    // Returns true when no thread holds or waits on the lock.
    bool unused() const noexcept { return depth == 0 && waiters == 0; }

    // Takes the lock for `self` if it is free or already `self`'s. O(1).
    bool try_acquire(ThreadId self) noexcept {
        if (depth != 0 && owner != self) return false;
        owner = self;
        ++depth;
        return true;
    }

    // Drops one acquisition; wakes the waiters when the lock becomes free. O(1).
    void release() {
        if (--depth == 0) {
            owner = ThreadId{};
            if (waiters != 0) released.notify_all();
        }
    }
};

}  // namespace importlock::detail
