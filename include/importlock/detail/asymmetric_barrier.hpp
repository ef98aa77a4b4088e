// SPDX-License-Identifier: BSL-1.0
// importlock/detail/asymmetric_barrier.hpp: a memory barrier that one thread
// runs on behalf of every thread of the process (Linux membarrier(2)).
//
// Purpose: lets the lock-free readers of reclamation.hpp order their store
// "I am reading" before their loads with a compiler barrier only, while the
// rare thread that frees memory pays for a barrier on every running thread:
// with MEMBARRIER_CMD_PRIVATE_EXPEDITED, each CPU that runs a thread of this
// process executes a full memory barrier before the call returns, and a
// thread that is not running passed one when it was switched out. Without it
// every read section would need a full fence of its own (an mfence, measured
// at +3.6 ns on a 3 ns hit: benchmarks/README.md).
//
// This is the one header of include/ that goes beyond the standard library,
// and only on Linux with <linux/membarrier.h>; elsewhere, or when the kernel
// refuses the registration (before 4.14, or a seccomp filter),
// asymmetric_barrier_available() returns false and the readers use full
// fences instead. Thread-safety: any thread. Cost: register once per process
// (one system call, at the first reader registration); heavy_barrier() is
// one system call that interrupts the CPUs running this process's other
// threads (on the project's 2-core VM: about 0.4 us while no other thread
// runs, 11 us while one runs on the other core, which it interrupts).
#pragma once

#include <atomic>

#if defined(__linux__) && __has_include(<linux/membarrier.h>) && __has_include(<sys/syscall.h>)
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>
#define IMPORTLOCK_DETAIL_HAS_MEMBARRIER 1
#else
#define IMPORTLOCK_DETAIL_HAS_MEMBARRIER 0
#endif

namespace importlock::detail {

// Returns whether heavy_barrier() is a process-wide barrier; registers this
// process for it on the first call (thread-safe; one system call).
inline bool asymmetric_barrier_available() noexcept {
#if IMPORTLOCK_DETAIL_HAS_MEMBARRIER
    static const bool available = [] {
        const long commands = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
        if (commands < 0 || (commands & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) return false;
        return ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    }();
    return available;
#else
    return false;
#endif
}

// A full barrier on every running thread of the process, when `asymmetric`
// (asymmetric_barrier_available() returned true); else a full fence on this
// thread only, which pairs with full fences on the readers' side.
inline void heavy_barrier(bool asymmetric) noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
#if IMPORTLOCK_DETAIL_HAS_MEMBARRIER
    if (asymmetric) {
        // Cannot fail once registered; were it to, fall back to a plain
        // fence, which is what the readers would pair with if not registered.
        (void)::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    }
#else
    (void)asymmetric;
#endif
}

// The readers' side: orders an earlier store before later loads against a
// heavy_barrier() (a compiler barrier with `asymmetric`, a full fence otherwise).
inline void light_barrier(bool asymmetric) noexcept {
    if (asymmetric) {
        std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
        std::atomic_thread_fence(std::memory_order_seq_cst);
    }
}

}  // namespace importlock::detail
