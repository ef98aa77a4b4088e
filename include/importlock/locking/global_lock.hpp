// SPDX-License-Identifier: BSL-1.0
// importlock/locking/global_lock.hpp: one re-entrant lock for every import.
#pragma once

#include <condition_variable>
#include <mutex>

#include "lock_policy.hpp"

namespace importlock {

// Serialises every import behind one re-entrant lock, CPython's model before
// 3.3. Circular imports on one thread still see partial modules; cross-thread
// cycles cannot form. Choose it for simplicity when imports are rare; beware
// that a loader which waits on another thread's import (e.g. joins a thread
// that imports) deadlocks, as it did in CPython 2.
struct global_lock {
    using mutex_type = std::mutex;
    using condition_variable_type = std::condition_variable;
    static constexpr lock_scope scope = lock_scope::global;
    static constexpr cycle_resolution on_cycle = cycle_resolution::partial_module;
};

}  // namespace importlock
