// SPDX-License-Identifier: BSL-1.0
// importlock/detail/observer_slot.hpp: the observer a system reports to.
//
// Purpose: holds the installed import_observer (or none) so that a cold
// import without one pays one atomic load, and installing or removing one is
// safe while imports run.
//
// Thread-safety: every member, any thread. load() returns a counted copy, so
// a hook may run while set() replaces the observer; hooks are called by the
// system outside every internal lock. Cost: load() is one acquire load when
// empty, else a spin lock held for one reference-count increment.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "spin_lock.hpp"

namespace importlock::detail {

template <class Observer>
class observer_slot {
public:
    // Installs `observer` (null: none); the previous one is released outside
    // the lock.
    void set(std::shared_ptr<Observer> observer) noexcept {
        const bool installed = observer != nullptr;
        {
            // The flag is stored under the lock too: two racing set() calls
            // then leave flag and pointer in the same order.
            std::lock_guard guard(lock_);
            observer_.swap(observer);
            installed_.store(installed, std::memory_order_release);
        }
    }

    // Returns the installed observer, or null.
    std::shared_ptr<Observer> load() const noexcept {
        if (!installed_.load(std::memory_order_acquire)) return nullptr;
        std::lock_guard guard(lock_);
        return observer_;
    }

    // Calls an outcome hook; its exceptions are swallowed so that the
    // outcome it reports stands (see observer.hpp).
    template <class Hook>
    static void notify(Hook&& hook) noexcept {
        try {
            hook();
        } catch (...) {
        }
    }

private:
    std::atomic<bool> installed_{false};
    mutable spin_lock lock_;
    std::shared_ptr<Observer> observer_;
};

}  // namespace importlock::detail
