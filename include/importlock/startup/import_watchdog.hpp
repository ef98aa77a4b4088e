// SPDX-License-Identifier: BSL-1.0
// importlock/startup/import_watchdog.hpp: faulthandler.dump_traceback_later
// for imports (42.27): a thread that polls the snapshot() of one or more
// systems and reports each import that has been running or waiting longer
// than a threshold, once, with the thread dump.
//
// Purpose: `import_watchdog dog(std::chrono::seconds(5)); dog.watch(system);`
// The default callback prints the report to std::cerr.
//
// What is one stuck import: a thread's outermost import (the first key of
// its import stack), or, for a thread that imports nothing, its wait for a
// module lock; it is reported once, when it has been seen for longer than
// the threshold, and again only after that thread's outermost import has
// changed. All imports that became stuck in one poll of one system are
// reported in one callback, with that system's snapshot. The age is
// measured from the first poll that saw the import: a report comes between
// threshold and threshold + 2 poll intervals after the import began.
//
// Thread-safety: every member, from any thread. The callback runs on the
// watchdog's thread, outside its lock: it may call watch/unwatch (not
// destroy the watchdog). unwatch(system) returns after any poll of that
// system ended: call it (or destroy the watchdog) before the system dies.
// Cost: nothing on the importing threads' own path; per poll and system, one
// snapshot(): every shard's state mutex and the domain's, O(n) in the
// registry's entries (uncontended claims are found through them) plus
// O(threads x locks). Imports that need a state mutex wait meanwhile.
// The destructor wakes the thread and joins it at once.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../snapshot.hpp"

namespace importlock {

// One import the watchdog found stuck.
struct stuck_import {
    std::string system;              // the name given to watch()
    std::thread::id thread;          // the importing thread
    std::string key;                 // its outermost import, or the key it waits for
    bool waiting = false;            // true: the thread imports nothing and waits for `key`
    std::chrono::nanoseconds age{};  // how long the watchdog has seen it
};

// What one poll of one system found: the newly stuck imports and the
// snapshot they were found in.
struct watchdog_report {
    std::string system;
    std::vector<stuck_import> stuck;
    import_snapshot snapshot;

    // Writes "importlock watchdog: ..." lines, then the snapshot's text.
    void write_text(std::ostream& out) const {
        for (const stuck_import& s : stuck) {
            out << "importlock watchdog: " << (system.empty() ? "" : system + ": ") << "thread "
                << s.thread << (s.waiting ? " has been waiting for '" : " has been importing '")
                << s.key << "' for at least "
                << std::chrono::duration_cast<std::chrono::milliseconds>(s.age).count() << " ms\n";
        }
        out << "imports in flight:\n";
        snapshot.write_text(out);
    }
};

class import_watchdog {
public:
    using callback_type = std::function<void(const watchdog_report&)>;
    using duration = std::chrono::nanoseconds;

    // Prints the report to std::cerr (the default callback).
    static void print_to_cerr(const watchdog_report& report) {
        report.write_text(std::cerr);
        std::cerr.flush();
    }

    // Reports imports stuck longer than `threshold`, polling every
    // `poll_interval` (default: a quarter of the threshold), clamped to
    // 1 ms ... 1 h so that no interval busy-loops or overflows the clock.
    explicit import_watchdog(duration threshold, callback_type callback = print_to_cerr,
                             std::optional<duration> poll_interval = std::nullopt)
        : threshold_(threshold),
          interval_(std::clamp<duration>(poll_interval.value_or(threshold / 4),
                                         std::chrono::milliseconds(1), std::chrono::hours(1))),
          callback_(callback ? std::move(callback) : callback_type(print_to_cerr)),
          thread_([this] { run(); }) {}

    import_watchdog(const import_watchdog&) = delete;
    import_watchdog& operator=(const import_watchdog&) = delete;

    // Stops and joins the watchdog's thread (a callback in progress finishes first).
    ~import_watchdog() {
        {
            std::lock_guard lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        thread_.join();
    }

    // Watches `system` (anything with snapshot()) under `name` until unwatch
    // or destruction; watching it again only renames it.
    template <class System>
    void watch(System& system, std::string name = {}) {
        std::lock_guard lock(mutex_);
        for (watched& w : systems_) {
            if (w.id == &system) {
                w.name = std::move(name);
                return;
            }
        }
        systems_.push_back(
            watched{&system, std::move(name), [&system] { return system.snapshot(); }, {}});
    }

    // Stops watching `system`; no poll of it runs after this returns.
    template <class System>
    void unwatch(System& system) {
        std::lock_guard lock(mutex_);
        std::erase_if(systems_, [&](const watched& w) { return w.id == &system; });
    }

    // Returns how many stuck imports were reported so far.
    std::size_t reported() const {
        std::lock_guard lock(mutex_);
        return reported_;
    }

    // Returns how many polls have completed (for tests and health checks).
    std::size_t polls() const {
        std::lock_guard lock(mutex_);
        return polls_;
    }

    duration threshold() const noexcept { return threshold_; }
    duration poll_interval() const noexcept { return interval_; }

private:
    struct seen {
        std::string key;
        bool waiting = false;
        std::chrono::steady_clock::time_point since;
        bool reported = false;
        bool present = false;
    };
    struct watched {
        const void* id;
        std::string name;
        std::function<import_snapshot()> snapshot;
        std::unordered_map<std::thread::id, seen> threads;
    };

    void run() {
        std::unique_lock lock(mutex_);
        for (;;) {
            if (wake_.wait_for(lock, interval_, [this] { return stop_; })) return;
            std::vector<watchdog_report> reports;
            for (watched& w : systems_) {
                if (auto r = poll(w)) reports.push_back(std::move(*r));
            }
            ++polls_;
            if (reports.empty()) continue;
            lock.unlock();
            for (const watchdog_report& r : reports) {
                try {
                    callback_(r);
                } catch (...) {  // a failing callback must not end the watchdog
                }
            }
            lock.lock();
        }
    }

    // Polls one system (mutex_ held); returns a report when imports became stuck.
    std::optional<watchdog_report> poll(watched& w) {
        import_snapshot snap;
        try {
            snap = w.snapshot();
        } catch (...) {
            return std::nullopt;  // e.g. out of memory: try again next poll
        }
        const auto now = std::chrono::steady_clock::now();
        for (auto& [id, s] : w.threads) s.present = false;
        watchdog_report report;
        for (const import_snapshot::thread_state& t : snap.threads) {
            std::string key;
            bool waiting = false;
            if (!t.importing.empty()) {
                key = t.importing.front();
            } else if (t.waiting_for && waits_for_module(snap, *t.waiting_for)) {
                key = *t.waiting_for;
                waiting = true;
            } else {
                continue;
            }
            seen& s = w.threads[t.thread];
            if (!s.present && s.since != std::chrono::steady_clock::time_point{} && s.key == key &&
                s.waiting == waiting) {
                s.present = true;
            } else {
                s = seen{std::move(key), waiting, now, false, true};
            }
            if (!s.reported && now - s.since >= threshold_) {
                s.reported = true;
                report.stuck.push_back(
                    stuck_import{w.name, t.thread, s.key, s.waiting,
                                 std::chrono::duration_cast<duration>(now - s.since)});
            }
        }
        std::erase_if(w.threads, [](const auto& entry) { return !entry.second.present; });
        if (report.stuck.empty()) return std::nullopt;
        reported_ += report.stuck.size();
        report.system = w.name;
        report.snapshot = std::move(snap);
        return report;
    }

    static bool waits_for_module(const import_snapshot& snap, const std::string& key) {
        return std::any_of(snap.locks.begin(), snap.locks.end(), [&](const auto& l) {
            return l.kind == import_snapshot::node_kind::module_lock && l.key == key;
        });
    }

    const duration threshold_;
    const duration interval_;
    const callback_type callback_;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    bool stop_ = false;
    std::size_t reported_ = 0;
    std::size_t polls_ = 0;
    std::vector<watched> systems_;
    std::thread thread_;  // last: starts after every other member exists
};

}  // namespace importlock
