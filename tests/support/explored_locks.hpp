// SPDX-License-Identifier: BSL-1.0
// tests/support/explored_locks.hpp: lock policies whose every synchronisation step is a
// scheduling point of the schedule explorer (schedule_explorer.hpp).
//
// The state mutex and the module locks' condition variables of a system built on one
// of these are explorer::mutex and explorer::condition_variable, and yield_point()
// parks the calling thread, so explorer::run() controls every interleaving of the
// import protocol. Outside explorer::run() the system works single-threaded only
// (setup, checks); concurrent use from unmanaged threads is not supported.
#pragma once

#include <importlock/importlock.hpp>

#include "support/schedule_explorer.hpp"

#include <tuple>

namespace importlock_test {

// Per-key (or, with Scope = global, one re-entrant) locks over explorer primitives,
// with the optional `static void yield_point() noexcept` member: the core calls it
// at each step that touches shared state outside the policy mutex (the published
// pointer, registry slots, the hit path), and it becomes a scheduling point.
template <importlock::cycle_resolution OnCycle = importlock::cycle_resolution::partial_module,
          importlock::failure_mode OnFailure = importlock::failure_mode::waiters_retry,
          importlock::lock_scope Scope = importlock::lock_scope::per_key>
struct basic_explored_locks {
    using mutex_type = explorer::mutex;
    using condition_variable_type = explorer::condition_variable;
    static constexpr importlock::lock_scope scope = Scope;
    static constexpr importlock::cycle_resolution on_cycle = OnCycle;
    static constexpr importlock::failure_mode on_failure = OnFailure;

    static void yield_point() noexcept { explorer::yield_point(); }
    static void spin_wait_point() noexcept { explorer::spin_point(); }
};

// per_key_locks under the explorer: partial modules for cycles, waiters retry.
struct explored_locks : basic_explored_locks<> {
    static constexpr const char* name = "per_key";
};

// strict_per_key_locks under the explorer: every cycle throws circular_import_error.
struct explored_strict_locks
    : basic_explored_locks<importlock::cycle_resolution::circular_import_error> {
    static constexpr const char* name = "strict";
};

// singleflight_per_key_locks under the explorer: waiters share a failure.
struct explored_singleflight_locks
    : basic_explored_locks<importlock::cycle_resolution::partial_module,
                           importlock::failure_mode::waiters_share_failure> {
    static constexpr const char* name = "singleflight";
};

// global_lock under the explorer: one re-entrant lock for every import.
struct explored_global_lock : basic_explored_locks<importlock::cycle_resolution::partial_module,
                                                   importlock::failure_mode::waiters_retry,
                                                   importlock::lock_scope::global> {
    static constexpr const char* name = "global";
};

using explored_policies = std::tuple<explored_locks, explored_strict_locks,
                                     explored_singleflight_locks, explored_global_lock>;

}  // namespace importlock_test
