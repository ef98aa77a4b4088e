// SPDX-License-Identifier: BSL-1.0
// tests/support/policies.hpp: the lock policies a scenario runs under.
#pragma once

#include <importlock/importlock.hpp>

#include <tuple>

namespace importlock_test {

// Policies that allow several threads.
using threaded_policies =
    std::tuple<importlock::per_key_locks, importlock::strict_per_key_locks,
               importlock::singleflight_per_key_locks, importlock::global_lock>;

// Every policy, for single-threaded scenarios.
using all_policies = std::tuple<importlock::per_key_locks, importlock::strict_per_key_locks,
                                importlock::singleflight_per_key_locks, importlock::global_lock,
                                importlock::no_locks>;

}  // namespace importlock_test
