// SPDX-License-Identifier: BSL-1.0
// importlock/locking/per_key_locks.hpp: one module lock per key in flight.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <mutex>

#include "lock_policy.hpp"

namespace importlock {

// Locks each key separately, CPython's model since 3.3 (_ModuleLock). Choose
// it when independent keys must initialise in parallel. `Mutex` guards the
// import state and `CondVar` blocks importers; plug an instrumented mutex here
// (with std::condition_variable_any). `OnCycle` says what a circular import
// gets, `OnFailure` what the waiters of a failed import get. `Shards` splits
// the system's import state into that many shards by key hash, each with its
// own `Mutex`: cold imports of keys in different shards then take no common
// lock, and first imports from many threads scale, at the price of about
// 1.5 ns more per hit (the shard is found before the table; see
// benchmarks/README.md). 1 (the default) keeps the fastest hits.
template <class Mutex = std::mutex, class CondVar = std::condition_variable,
          cycle_resolution OnCycle = cycle_resolution::partial_module,
          failure_mode OnFailure = failure_mode::waiters_retry, std::size_t Shards = 1>
struct basic_per_key_locks {
    static_assert(Shards >= 1 && Shards <= 64 && (Shards & (Shards - 1)) == 0,
                  "importlock: basic_per_key_locks' Shards must be a power of two from 1 to 64");
    using mutex_type = Mutex;
    using condition_variable_type = CondVar;
    static constexpr lock_scope scope = lock_scope::per_key;
    static constexpr cycle_resolution on_cycle = OnCycle;
    static constexpr failure_mode on_failure = OnFailure;
    static constexpr std::size_t shards = Shards;
};

// The default: per-key locks, circular imports see partial modules (CPython).
using per_key_locks = basic_per_key_locks<>;

// Per-key locks where every cycle, same-thread or cross-thread, throws
// circular_import_error naming the chain. Choose it when a partial module
// would be a bug (e.g. dependency injection where a half-built service is fatal).
using strict_per_key_locks = basic_per_key_locks<std::mutex, std::condition_variable,
                                                 cycle_resolution::circular_import_error>;

// Per-key locks where the threads waiting on a failed import rethrow its
// exception instead of retrying, as Go's singleflight. Choose it when a failed
// initialisation is expensive and retrying at once would fail again.
using singleflight_per_key_locks =
    basic_per_key_locks<std::mutex, std::condition_variable, cycle_resolution::partial_module,
                        failure_mode::waiters_share_failure>;

// Per-key locks over 8 shards of the import state: choose it when many
// threads import many distinct keys for the first time at once (a warm-up of
// 100,000 keys, a per-tenant cache loading new tenants), and hits are not the
// hottest path.
using sharded_per_key_locks =
    basic_per_key_locks<std::mutex, std::condition_variable, cycle_resolution::partial_module,
                        failure_mode::waiters_retry, 8>;

}  // namespace importlock
