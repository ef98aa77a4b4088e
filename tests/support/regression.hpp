// SPDX-License-Identifier: BSL-1.0
// tests/support/regression.hpp: helpers shared by the core regression tests
// (tests/test_core_regressions*.cpp).
//
// As in scenario.hpp, worker threads never assert: they write into atomics or
// mutex-guarded slots and the main thread asserts after joining them.
#pragma once

#include <importlock/importlock.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace importlock_test {

// The watchdog limit of the regression tests: far above an honest run (each
// takes well under 5 s, also under the sanitizers), low enough that a hang on
// the old core is reported quickly.
inline constexpr std::chrono::seconds regression_limit{60};

// Returns whether `text` contains `needle`.
inline bool mentions(const std::string& text, const std::string& needle) {
    return text.find(needle) != std::string::npos;
}

// A module that runs a hook when it is destroyed (teardown tests). The hook is
// set by the loader; it may import, reload or erase through the system.
struct hook_module {
    hook_module() = default;
    hook_module(const hook_module&) = delete;
    hook_module& operator=(const hook_module&) = delete;
    ~hook_module() {
        if (on_destroy) on_destroy();
    }

    std::function<void()> on_destroy;
    std::shared_ptr<hook_module> dep;
};

// The order in which modules were destroyed; safe from any thread.
class destruction_log {
public:
    void add(std::string name) {
        std::lock_guard lock(mutex_);
        names_.push_back(std::move(name));
    }
    std::vector<std::string> names() const {
        std::lock_guard lock(mutex_);
        return names_;
    }
    // Returns the position of `name` in the log, or -1.
    long index_of(const std::string& name) const {
        std::lock_guard lock(mutex_);
        for (std::size_t i = 0; i < names_.size(); ++i) {
            if (names_[i] == name) return static_cast<long>(i);
        }
        return -1;
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::string> names_;
};

// Overwrites a large stretch of the calling thread's stack below the caller's
// frame, so that anything still referring into a frame that has returned
// (the importer of a loader that finished) reads garbage instead of the
// stale-but-intact bytes it would otherwise find. Without ASan the old core
// then calls through a garbage vtable pointer and crashes; under ASan with
// detect_stack_use_after_return=1 the first access is reported anyway.
[[gnu::noinline]] inline void scribble_stack() {
    constexpr std::size_t size = 256 * 1024;
    volatile unsigned char bytes[size];
    for (std::size_t i = 0; i < size; ++i) bytes[i] = 0xA5;
    (void)bytes[size / 2];
}

}  // namespace importlock_test
