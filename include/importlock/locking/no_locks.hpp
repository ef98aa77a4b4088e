// SPDX-License-Identifier: BSL-1.0
// importlock/locking/no_locks.hpp: for programs that import from one thread.
#pragma once

#include <mutex>
#include <stdexcept>

#include "lock_policy.hpp"

namespace importlock {

// A mutex that does nothing: the import state is used by one thread only.
struct null_mutex {
    void lock() noexcept {}
    bool try_lock() noexcept { return true; }
    void unlock() noexcept {}
};

// A condition variable for null_mutex. The import system never waits with
// null_mutex (a policy whose mutex is null_mutex is single-threaded: a second
// importing thread gets import_error naming the key instead); a direct
// wait() throws std::logic_error.
struct null_condition_variable {
    void wait(std::unique_lock<null_mutex>&) {
        throw std::logic_error(
            "importlock::no_locks: a second thread imported while an import was in flight; "
            "use per_key_locks for multi-threaded programs");
    }
    void notify_all() noexcept {}
};

// Takes no lock at all: no mutex, no spin lock, no wait-for graph (the
// observer slot's spin lock only while an observer is installed). Circular
// imports see partial modules, and every member of the system must be called
// from one thread at a time. Choose it for single-threaded programs.
struct no_locks {
    using mutex_type = null_mutex;
    using condition_variable_type = null_condition_variable;
    static constexpr lock_scope scope = lock_scope::per_key;
    static constexpr cycle_resolution on_cycle = cycle_resolution::partial_module;
};

}  // namespace importlock
