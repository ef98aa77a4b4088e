// SPDX-License-Identifier: BSL-1.0
// importlock/detail/shared_spin_lock.hpp: a reader-writer lock for short
// critical sections, one atomic word.
//
// Purpose: the finder's tables are read on every cold import (a hash lookup
// and a copy of the spec) and written rarely (define). std::shared_mutex
// (pthread_rwlock) costs about 100 instructions and two atomic operations
// per read; this costs two atomic operations and a few instructions.
//
// Protocol: bit 0 is set while a writer holds or wants the lock; the other
// bits count readers (2 per reader). A reader adds 2 and holds the lock
// unless the writer bit was set, in which case it takes its 2 back and waits
// for the bit to clear (writers are preferred: a stream of readers cannot
// starve define). A writer sets the bit, then waits until the readers are
// gone. Waiters yield, so a holder preempted on a busy machine is not
// starved, but every critical section must be short: it is not a mutex to
// hold across user code.
//
// Thread-safety: any thread. Not recursive, not upgradable. Cost: lock_shared
// and unlock_shared one atomic read-modify-write each, uncontended; lock one
// compare-and-swap, unlock one atomic subtraction.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

namespace importlock::detail {

class shared_spin_lock {
public:
    void lock_shared() noexcept {
        for (;;) {
            if ((word_.fetch_add(reader, std::memory_order_acquire) & writer) == 0) return;
            word_.fetch_sub(reader, std::memory_order_relaxed);
            while ((word_.load(std::memory_order_relaxed) & writer) != 0) std::this_thread::yield();
        }
    }
    void unlock_shared() noexcept { word_.fetch_sub(reader, std::memory_order_release); }

    void lock() noexcept {
        std::uint32_t w = word_.load(std::memory_order_relaxed);
        for (;;) {
            if ((w & writer) != 0) {
                std::this_thread::yield();
                w = word_.load(std::memory_order_relaxed);
            } else if (word_.compare_exchange_weak(w, w | writer, std::memory_order_acquire,
                                                   std::memory_order_relaxed)) {
                break;
            }
        }
        while (word_.load(std::memory_order_acquire) != writer) std::this_thread::yield();
    }
    void unlock() noexcept { word_.fetch_sub(writer, std::memory_order_release); }

    // Returns whether a writer holds or waits for the lock (for tests).
    bool writer_waiting() const noexcept {
        return (word_.load(std::memory_order_acquire) & writer) != 0;
    }

    // Holds the lock shared (reader) for a scope.
    class shared_guard {
    public:
        explicit shared_guard(shared_spin_lock& lock) noexcept : lock_(lock) {
            lock_.lock_shared();
        }
        shared_guard(const shared_guard&) = delete;
        shared_guard& operator=(const shared_guard&) = delete;
        ~shared_guard() { lock_.unlock_shared(); }

    private:
        shared_spin_lock& lock_;
    };

    // Holds the lock exclusively (writer) for a scope.
    class unique_guard {
    public:
        explicit unique_guard(shared_spin_lock& lock) noexcept : lock_(lock) { lock_.lock(); }
        unique_guard(const unique_guard&) = delete;
        unique_guard& operator=(const unique_guard&) = delete;
        ~unique_guard() { lock_.unlock(); }

    private:
        shared_spin_lock& lock_;
    };

private:
    static constexpr std::uint32_t writer = 1;
    static constexpr std::uint32_t reader = 2;
    std::atomic<std::uint32_t> word_{0};
};

}  // namespace importlock::detail
