// SPDX-License-Identifier: BSL-1.0
// tests/support/policies.hpp: the lock policies a scenario runs under.
#pragma once

#include <importlock/importlock.hpp>

#include <condition_variable>
#include <mutex>
#include <tuple>

namespace importlock_test {

// strict_per_key_locks over 8 shards of the import state: the policy lists
// below use it in place of strict_per_key_locks, so that every threaded and
// single-threaded scenario also runs on a sharded state (strict and partial
// semantics do not depend on the shard count; per_key_locks and
// singleflight_per_key_locks cover one shard).
using sharded_strict_per_key_locks =
    importlock::basic_per_key_locks<std::mutex, std::condition_variable,
                                    importlock::cycle_resolution::circular_import_error,
                                    importlock::failure_mode::waiters_retry, 8>;

// Policies that allow several threads.
using threaded_policies =
    std::tuple<importlock::per_key_locks, sharded_strict_per_key_locks,
               importlock::singleflight_per_key_locks, importlock::global_lock>;

// Every policy, for single-threaded scenarios.
using all_policies = std::tuple<importlock::per_key_locks, sharded_strict_per_key_locks,
                                importlock::singleflight_per_key_locks, importlock::global_lock,
                                importlock::no_locks>;

}  // namespace importlock_test
