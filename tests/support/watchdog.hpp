// SPDX-License-Identifier: BSL-1.0
// tests/support/watchdog.hpp: turn a hang into a failure.
//
// A watchdog aborts the process with a message if it is still armed after its
// limit. The limit never decides a result: it is far above any honest run and
// only stops a deadlocked test from blocking CI.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

namespace importlock_test {

class watchdog {
public:
    explicit watchdog(std::string what, std::chrono::seconds limit = std::chrono::seconds(120))
        : what_(std::move(what)), thread_([this, limit] {
              std::unique_lock lock(mutex_);
              if (!done_cv_.wait_for(lock, limit, [this] { return done_; })) {
                  std::fprintf(stderr, "watchdog: '%s' still running after %lld s: hang\n",
                               what_.c_str(), static_cast<long long>(limit.count()));
                  std::fflush(stderr);
                  std::abort();
              }
          }) {}

    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;

    ~watchdog() {
        {
            std::lock_guard lock(mutex_);
            done_ = true;
        }
        done_cv_.notify_all();
        thread_.join();
    }

private:
    std::string what_;
    std::mutex mutex_;
    std::condition_variable done_cv_;
    bool done_ = false;
    std::thread thread_;
};

// Spins (yielding) until `condition()` holds. Used to wait until a thread is
// parked on a module lock; the enclosing watchdog bounds it.
template <class Condition>
void await(Condition&& condition) {
    while (!condition()) std::this_thread::yield();
}

}  // namespace importlock_test
