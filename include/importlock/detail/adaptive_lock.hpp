// SPDX-License-Identifier: BSL-1.0
// importlock/detail/adaptive_lock.hpp: takes a policy's mutex, spinning
// briefly before blocking.
//
// Purpose: a shard's state mutex is held for a few hundred nanoseconds on a
// cold import (a registry insert and a claim). A std::mutex found taken puts
// the thread to sleep in the kernel, and the holder's unlock then makes a
// system call to wake it: microseconds each, far longer than the wait they
// replace. Two threads importing distinct keys into one system spent most of
// their time there (benchmarks/README.md, "Spin before blocking").
// lock_adaptively() first retries try_lock() up to spin_rounds times, one CPU
// pause instruction apart (about 1-3 us in all), then blocks in lock(). The
// attempts are close together on purpose: with a growing pause between them
// (1, 2, 4 ... 32 pauses) a thread often missed the short moments the mutex
// was free, fell through to lock() and slept, and two importing threads were
// slower than with no spinning at all in half the runs (the same section).
// A mutex without try_lock() (the lock policy asks only for lock() and
// unlock()) is locked directly.
//
// Thread-safety: as the mutex's own. Cost: uncontended, one try_lock(), the
// same as lock(); contended, at most spin_rounds failed try_lock()s before
// lock(). Never throws unless the mutex's lock() does.
#pragma once

#include <mutex>

namespace importlock::detail {

// One CPU pause: tells the core (and a hyper-threaded sibling) that this
// thread spins. Elsewhere a no-op (the spin is then a plain retry loop).
inline void cpu_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

// The number of try_lock() attempts before lock_adaptively() blocks.
inline constexpr int spin_rounds = 64;

// Locks `m` (see the header comment) and returns the lock, owned.
template <class Mutex>
std::unique_lock<Mutex> lock_adaptively(Mutex& m) {
    if constexpr (requires { static_cast<bool>(m.try_lock()); }) {
        for (int round = 0; round < spin_rounds; ++round) {
            if (m.try_lock()) return std::unique_lock<Mutex>(m, std::adopt_lock);
            cpu_pause();
        }
    }
    return std::unique_lock<Mutex>(m);
}

}  // namespace importlock::detail
