// SPDX-License-Identifier: BSL-1.0
// importlock/detail/spin_lock.hpp: a tiny lock for a few instructions of work.
//
// Held only to copy or swap a std::shared_ptr (one reference-count update).
// std::atomic<std::shared_ptr> would do, but libstdc++ 12's releases its
// internal lock with memory_order_relaxed after a load, which ThreadSanitizer
// rightly reports as a race with a later store. Waiters yield, so a holder
// preempted on a busy machine is not starved.
#pragma once

#include <atomic>
#include <thread>

namespace importlock::detail {

class spin_lock {
public:
    void lock() noexcept {
        while (busy_.exchange(true, std::memory_order_acquire)) {
            while (busy_.load(std::memory_order_relaxed)) std::this_thread::yield();
        }
    }
    void unlock() noexcept { busy_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> busy_{false};
};

}  // namespace importlock::detail
