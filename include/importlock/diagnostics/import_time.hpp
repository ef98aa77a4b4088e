// SPDX-License-Identifier: BSL-1.0
// importlock/diagnostics/import_time.hpp: CPython's `-X importtime`, correct
// under concurrent imports.
#pragma once

#include <cstddef>
#include <exception>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../detail/chrono.hpp"
#include "../detail/flat_map.hpp"
#include "../key_traits.hpp"
#include "../observer.hpp"

namespace importlock {

// One import that ran its loader, as import_time_recorder saw it.
struct import_time_record {
    std::string key;                        // formatted key
    std::thread::id thread;                 // the thread that ran the import
    std::size_t depth = 0;                  // nesting on that thread: 0 = outermost
    std::chrono::nanoseconds self{};        // cumulative minus nested imports that ran
    std::chrono::nanoseconds cumulative{};  // finder, factory, loader, nested imports
    bool ok = true;                         // false if the import failed
};

// Records self and cumulative time of every import that runs a loader, with
// its nesting, per thread: concurrent imports on other threads never count
// as nested (CPython's counters are per interpreter and mix them). Install it
// on one or more systems with the same Key: `system.set_observer(recorder)`.
//
// Thread-safety: all members; hooks take one internal mutex (cold path only).
template <class Key>
class import_time_recorder : public import_observer<Key> {
public:
    void on_import_begin(const Key& key) override {
        frame begun{key_traits<Key>::to_string(key), {}};
        const std::thread::id self = std::this_thread::get_id();
        std::lock_guard lock(mutex_);
        std::vector<frame>* stack = stacks_.find(self);
        if (stack == nullptr) stack = &stacks_.insert_new(self, std::vector<frame>());
        stack->push_back(std::move(begun));
    }

    void on_import_end(const Key&, std::chrono::nanoseconds elapsed) override {
        finish(elapsed, true);
    }

    void on_import_failed(const Key&, std::exception_ptr) override {
        // The elapsed time of a failed import is not reported to the hook;
        // it is recorded with its nested time as self time zero.
        finish(std::chrono::nanoseconds{-1}, false);
    }

    // Returns the records so far, in completion order (nested imports
    // before the import that made them, as CPython prints them).
    std::vector<import_time_record> records() const {
        std::lock_guard lock(mutex_);
        return records_;
    }

    // Forgets the records (imports in flight still complete into new ones).
    void reset() {
        std::lock_guard lock(mutex_);
        records_.clear();
    }

    // Writes the records in CPython's `-X importtime` layout, one block per
    // thread when several threads imported:
    //   import time: self [us] | cumulative | imported package
    //   import time:        12 |         12 |   child
    //   import time:        30 |         42 | parent
    void write(std::ostream& out) const {
        const std::vector<import_time_record> all = records();
        std::vector<std::thread::id> threads;
        for (const auto& r : all) {
            bool seen = false;
            for (const auto& t : threads) seen = seen || t == r.thread;
            if (!seen) threads.push_back(r.thread);
        }
        out << "import time: self [us] | cumulative | imported package\n";
        for (const auto& thread : threads) {
            if (threads.size() > 1) out << "import time: -- thread " << thread << "\n";
            for (const auto& r : all) {
                if (r.thread != thread) continue;
                out << "import time: " << pad(micros(r.self), 9) << " | "
                    << pad(micros(r.cumulative), 10) << " | " << std::string(2 * r.depth, ' ')
                    << r.key << (r.ok ? "" : " (failed)") << "\n";
            }
        }
    }

    // Returns write's output.
    std::string to_string() const {
        return detail::write_to_string([this](std::ostream& out) { write(out); });
    }

private:
    struct frame {
        std::string key;
        std::chrono::nanoseconds nested{};  // cumulative time of nested imports
        std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
    };

    void finish(std::chrono::nanoseconds elapsed, bool ok) {
        const std::thread::id self = std::this_thread::get_id();
        std::lock_guard lock(mutex_);
        std::vector<frame>* const found = stacks_.find(self);
        if (found == nullptr || found->empty()) return;
        std::vector<frame>& stack = *found;
        frame done = std::move(stack.back());
        stack.pop_back();
        if (elapsed.count() < 0) {
            elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(
                std::chrono::steady_clock::now() - done.start);
        }
        import_time_record r;
        r.key = std::move(done.key);
        r.thread = self;
        r.depth = stack.size();
        r.cumulative = elapsed;
        r.self = elapsed > done.nested ? elapsed - done.nested : std::chrono::nanoseconds{0};
        r.ok = ok;
        if (!stack.empty()) stack.back().nested += elapsed;
        records_.push_back(std::move(r));
        if (stack.empty()) stacks_.erase(self);
    }

    static long long micros(std::chrono::nanoseconds d) {
        return static_cast<long long>(
            std::chrono::duration_cast<std::chrono::microseconds>(d).count());
    }

    static std::string pad(long long value, std::size_t width) {
        std::string text = std::to_string(value);
        return text.size() >= width ? text : std::string(width - text.size(), ' ') + text;
    }

    mutable std::mutex mutex_;
    struct thread_equal {
        bool operator()(std::thread::id a, std::thread::id b) const noexcept { return a == b; }
    };
    // Each thread's imports in flight, innermost last (detail/flat_map.hpp).
    detail::flat_map<std::thread::id, std::vector<frame>, std::hash<std::thread::id>, thread_equal>
        stacks_;
    std::vector<import_time_record> records_;
};

}  // namespace importlock
