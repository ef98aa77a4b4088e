// SPDX-License-Identifier: BSL-1.0
// importlock/observer.hpp: hooks that see every import, for logging and tracing.
#pragma once

#include <exception>
#include <string>
#include <thread>
#include <vector>

#include "detail/chrono.hpp"

namespace importlock {

// Receives the events of one or more import systems; override the hooks you
// need, the others do nothing. Install with basic_import_system::set_observer.
// Costs nothing on the hit path; one atomic load per cold import when none is
// installed.
//
// Every hook runs on the thread doing the import, concurrently with other
// threads' hooks: make them thread-safe. Every hook runs outside the
// system's internal locks: it may call the system, also to import.
// A hook that throws before the import does anything (on_import_begin,
// on_wait) aborts that import cleanly and its exception propagates; exceptions
// from hooks that report an outcome (the others) are swallowed, so the outcome
// stands.
template <class Key>
class import_observer {
public:
    virtual ~import_observer() = default;

    // This thread holds `key`'s lock and is about to find, create and load it.
    virtual void on_import_begin(const Key& key) { (void)key; }

    // The import of `key` this thread ran succeeded after `elapsed` (from
    // on_import_begin: finder, factory, loader and nested imports).
    virtual void on_import_end(const Key& key, std::chrono::nanoseconds elapsed) {
        (void)key, (void)elapsed;
    }

    // The import of `key` this thread ran failed with `error`; the key is
    // unregistered and the exception propagates after the hook.
    virtual void on_import_failed(const Key& key, std::exception_ptr error) {
        (void)key, (void)error;
    }

    // This thread is about to wait for `holder`, which holds `key`'s lock.
    virtual void on_wait(const Key& key, std::thread::id holder) { (void)key, (void)holder; }

    // The wait that on_wait announced ended after `waited`: this thread took
    // `key`'s lock, or found the module loaded, or the wait closed a cycle,
    // timed out, was cancelled or received a shared failure. Called once per
    // on_wait that returned, before anything else of the import.
    virtual void on_wait_end(const Key& key, std::chrono::nanoseconds waited) {
        (void)key, (void)waited;
    }

    // An import of `key` closed the cycle `chain` ("a", "b", "a");
    // `partial` says whether it gets the partial module (else it throws
    // circular_import_error).
    virtual void on_cycle(const Key& key, const std::vector<std::string>& chain, bool partial) {
        (void)key, (void)chain, (void)partial;
    }

    // A reload of `key` ended, successfully or not, after `elapsed`.
    virtual void on_reload(const Key& key, std::chrono::nanoseconds elapsed, bool ok) {
        (void)key, (void)elapsed, (void)ok;
    }
};

}  // namespace importlock
