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
#include <unordered_map>
#include <utility>
#include <vector>

#include "../detail/chrono.hpp"
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
        std::lock_guard lock(mutex_);
        stacks_[std::this_thread::get_id()].push_back(frame{key_traits<Key>::to_string(key), {}});
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
        std::lock_guard lock(mutex_);
        const auto it = stacks_.find(std::this_thread::get_id());
        if (it == stacks_.end() || it->second.empty()) return;
        std::vector<frame>& stack = it->second;
        frame done = std::move(stack.back());
        stack.pop_back();
        if (elapsed.count() < 0) {
            elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(
                std::chrono::steady_clock::now() - done.start);
        }
        import_time_record r;
        r.key = std::move(done.key);
        r.thread = it->first;
        r.depth = stack.size();
        r.cumulative = elapsed;
        r.self = elapsed > done.nested ? elapsed - done.nested : std::chrono::nanoseconds{0};
        r.ok = ok;
        if (!stack.empty()) stack.back().nested += elapsed;
        if (stack.empty()) stacks_.erase(it);
        records_.push_back(std::move(r));
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
    std::unordered_map<std::thread::id, std::vector<frame>> stacks_;
    std::vector<import_time_record> records_;
};

}  // namespace importlock
