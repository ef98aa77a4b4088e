// SPDX-License-Identifier: BSL-1.0
// importlock/locking/lock_policy.hpp: what makes a type a lock policy.
//
// A lock policy is a plain type with four members:
//
//   member                          meaning
//   using mutex_type                guards the import state: lock(), unlock(); a
//                                   try_lock() is retried briefly before lock()
//                                   blocks (detail/adaptive_lock.hpp)
//   using condition_variable_type   blocks importers: wait(std::unique_lock<mutex_type>&),
//                                   notify_all()
//   static constexpr lock_scope     lock_scope::per_key: one module lock per key in
//     scope                         flight; lock_scope::global: one re-entrant lock
//                                   for every import (the pre-3.3 model)
//   static constexpr                what a circular import gets: a partially
//     cycle_resolution on_cycle     initialised module, or circular_import_error
//
// Optional members (the default applies when one is absent):
//
//   static constexpr failure_mode   what threads waiting on a failed import get:
//     on_failure                    retry it themselves (default, CPython) or
//                                   the same exception (Go's singleflight;
//                                   per-key scope only: a global lock's waiters
//                                   wait for any key, so they always retry)
//   static void yield_point()       called before each step of the import
//     noexcept                      protocol that touches shared state outside
//                                   mutex_type (the registry's lock-free reads,
//                                   the release of an uncontended claim):
//                                   a test scheduler interleaves threads there.
//                                   Default: nothing. Never called while an
//                                   internal lock is held.
//   static void spin_wait_point()   called between the polls (after a short
//     noexcept                      spin) of a wait for other threads'
//                                   lock-free reads to end (before
//                                   erased entries are freed: reclamation.hpp),
//                                   with no internal lock held: a test
//                                   scheduler runs the threads waited for.
//                                   Default: nothing (the wait spins, then
//                                   yields the CPU).
//
// The shipped policies are per_key_locks (default), strict_per_key_locks,
// singleflight_per_key_locks, global_lock and no_locks; inherit one and
// override a member to customise.
#pragma once

#include <concepts>
#include <mutex>

namespace importlock {

// How many module locks a policy keeps.
enum class lock_scope {
    per_key,  // one re-entrant lock per key being imported (CPython >= 3.3)
    global,   // one re-entrant lock serialising every import (CPython < 3.3)
};

// What an import that closes a cycle gets.
enum class cycle_resolution {
    // The registered, partially initialised module (CPython: a same-thread
    // circular import, or the _DeadlockError path across threads). When the
    // cycle's key has no module yet, circular_import_error is thrown instead.
    partial_module,
    // circular_import_error naming the chain, for every cycle.
    circular_import_error,
};

// What threads that waited on an import get when its loader throws.
enum class failure_mode {
    // Each waiter retries the import itself; a loader may run again at once
    // (CPython: the module is gone from sys.modules, the next import loads it).
    waiters_retry,
    // Every thread that was waiting when the import failed rethrows the same
    // exception object (std::exception_ptr), as Go's singleflight, Guava's
    // LoadingCache and moka do; imports that start afterwards retry.
    waiters_share_failure,
};

namespace detail {

// The policy's on_failure, or failure_mode::waiters_retry when it has none.
template <class P>
constexpr failure_mode failure_mode_of() noexcept {
    if constexpr (requires { P::on_failure; }) {
        return P::on_failure;
    } else {
        return failure_mode::waiters_retry;
    }
}

// Calls the policy's yield_point(), if it has one: a scheduling point for
// test schedulers (see the table above).
template <class P>
inline void yield_point() noexcept {
    if constexpr (requires { P::yield_point(); }) P::yield_point();
}

// Calls the policy's spin_wait_point(), if it has one (see the table above).
template <class P>
inline void spin_wait_point() noexcept {
    if constexpr (requires { P::spin_wait_point(); }) P::spin_wait_point();
}

template <class P>
concept has_mutex_type = requires { typename P::mutex_type; };

template <class P>
concept has_condition_variable_type = requires { typename P::condition_variable_type; };

template <class P>
concept has_scope = requires {
    { P::scope } -> std::convertible_to<lock_scope>;
};

template <class P>
concept has_on_cycle = requires {
    { P::on_cycle } -> std::convertible_to<cycle_resolution>;
};

template <class P>
concept lockable_mutex = has_mutex_type<P> && requires(typename P::mutex_type& m) {
    m.lock();
    m.unlock();
};

template <class P>
concept waitable_condition = has_mutex_type<P> && has_condition_variable_type<P> &&
                             requires(typename P::condition_variable_type& cv,
                                      std::unique_lock<typename P::mutex_type>& lock) {
                                 cv.wait(lock);
                                 cv.notify_all();
                             };

}  // namespace detail

// Holds when P provides every member of the table above.
template <class P>
concept lock_policy = detail::lockable_mutex<P> && detail::waitable_condition<P> &&
                      detail::has_scope<P> && detail::has_on_cycle<P>;

}  // namespace importlock
