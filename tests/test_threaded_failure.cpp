// SPDX-License-Identifier: BSL-1.0
// Failing imports with threads waiting on them (chapter 42.16, DESIGN.md §1.6):
// the importing thread gets the loader's own exception object, the lock is
// released, the key unregistered, and every waiter retries the import itself
// (failure_mode::waiters_retry) or rethrows that same exception object
// (failure_mode::waiters_share_failure, singleflight_per_key_locks).
//
// Module objects carry serial numbers from a factory (an address can be
// reused once the failed object is freed); exception objects record their own
// address when constructed and count their copies.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/policies.hpp"
#include "support/scenario.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using importlock_test::await;
using importlock_test::check_quiescent;
using importlock_test::check_ready;
using importlock_test::importer_t;
using importlock_test::run_threads;
using importlock_test::serial_factory;
using importlock_test::shares_failures_v;
using importlock_test::system_t;
using importlock_test::test_module;
using importlock_test::watchdog;

// One run of a loader (or factory): who ran it, on which module object, and
// the address of the exception object it threw (null when it did not throw).
struct run_record {
    std::thread::id thread;
    std::uint64_t serial = 0;
    const void* exception = nullptr;
};

// The runs of one loader, in order; safe from any thread.
class run_log {
public:
    // Records the start of a run; returns its number, from 1.
    int begin(std::uint64_t serial) {
        std::lock_guard lock(mutex_);
        runs_.push_back({std::this_thread::get_id(), serial, nullptr});
        return static_cast<int>(runs_.size());
    }

    void set_exception(int run, const void* address) {
        std::lock_guard lock(mutex_);
        runs_[static_cast<std::size_t>(run - 1)].exception = address;
    }

    std::vector<run_record> runs() const {
        std::lock_guard lock(mutex_);
        return runs_;
    }

private:
    mutable std::mutex mutex_;
    std::vector<run_record> runs_;
};

// The exception a loader throws. Its constructor runs on the exception object
// itself (C++17 guaranteed elision in `throw loader_failure(...)`), so the
// address it logs is the object every catcher must see; a copy is counted.
class loader_failure : public std::runtime_error {
public:
    loader_failure(int run, run_log& log, std::atomic<int>& copies)
        : std::runtime_error("loader failure in run " + std::to_string(run)),
          run_(run),
          copies_(&copies) {
        log.set_exception(run, this);
    }
    loader_failure(const loader_failure& other)
        : std::runtime_error(other), run_(other.run_), copies_(other.copies_) {
        ++*copies_;
    }
    loader_failure& operator=(const loader_failure&) = delete;

    int run() const noexcept { return run_; }

private:
    int run_;
    std::atomic<int>* copies_;
};

// How one thread's import ended.
struct outcome {
    std::thread::id thread;
    std::uint64_t serial = 0;         // the module received, 0 if none
    bool done = false;                // ... and whether it was fully initialised
    const void* exception = nullptr;  // the loader_failure caught, if any
    int exception_run = 0;
    std::string other_failure;
    // Keeps the exception alive until the outcomes are checked, after every
    // thread joined: the shared exception of waiters_share_failure would
    // otherwise be freed by whichever waiter finishes last, and libstdc++'s
    // exception_ptr count (in uninstrumented libsupc++) makes ThreadSanitizer
    // report that free as a race with the other waiters' reads.
    std::exception_ptr keep;
};

// Imports `key` through import_module (even t) or import_ref (odd t).
template <class System>
outcome import_and_record(System& sys, const std::string& key, int t) {
    outcome result;
    result.thread = std::this_thread::get_id();
    try {
        if (t % 2 == 0) {
            const auto m = sys.import_module(key);
            result.serial = m->serial;
            result.done = m->done;
        } else {
            const test_module& m = sys.import_ref(key);
            result.serial = m.serial;
            result.done = m.done;
        }
    } catch (const loader_failure& e) {
        result.exception = &e;
        result.exception_run = e.run();
        result.keep = std::current_exception();
    } catch (const std::exception& e) {
        result.other_failure = e.what();
    }
    return result;
}

}  // namespace

// The loader fails on its first run, after all N other threads are parked on
// the key. Exactly one waiter runs the loader again; all of them get that
// second object, never the failed one.
TEMPLATE_LIST_TEST_CASE("a loader failing on its first run while N threads wait",
                        "[threaded][failure]", importlock_test::scenario_policies) {
    watchdog dog("failing first run with waiters");
    const int waiters = GENERATE(1, 3, 8);
    const int n = waiters + 1;
    CAPTURE(waiters);
    system_t<TestType> sys;
    serial_factory factory;
    run_log log;
    std::atomic<int> copies{0};
    sys.finder().define(
        "flaky",
        [&](test_module& m, importer_t&) {
            const int run = log.begin(m.serial);
            if (run == 1) {
                await(
                    [&] { return sys.waiter_count("flaky") == static_cast<std::size_t>(waiters); });
                throw loader_failure(run, log, copies);
            }
            m.value = run;
            m.done = true;
        },
        factory);

    std::vector<outcome> outcomes(static_cast<std::size_t>(n));
    const auto escaped = run_threads(n, [&](int t) {
        outcomes[static_cast<std::size_t>(t)] = import_and_record(sys, "flaky", t);
    });

    REQUIRE(escaped.empty());
    CHECK(copies.load() == 0);
    if constexpr (shares_failures_v<TestType>) {
        // Every waiter rethrows the failed import's own exception object.
        const auto runs = log.runs();
        REQUIRE(runs.size() == 1);
        REQUIRE(runs[0].exception != nullptr);
        for (const auto& o : outcomes) {
            CHECK(o.other_failure.empty());
            CHECK(o.serial == 0);
            CHECK(o.exception == runs[0].exception);
            CHECK(o.exception_run == 1);
        }
        CHECK_FALSE(sys.contains("flaky"));
        CHECK(sys.size() == 0);
        check_quiescent(sys, {"flaky"});
        // An import that starts afterwards runs the loader again.
        CHECK(sys.import_module("flaky")->serial != runs[0].serial);
        CHECK(log.runs().size() == 2);
        check_ready(sys, "flaky");
        check_quiescent(sys, {"flaky"});
        return;
    }
    const auto runs = log.runs();
    REQUIRE(runs.size() == 2);
    CHECK(runs[0].exception != nullptr);
    CHECK(runs[1].exception == nullptr);
    CHECK(runs[0].serial != runs[1].serial);
    CHECK(factory.created() == 2);
    int failed = 0;
    for (const auto& o : outcomes) {
        CHECK(o.other_failure.empty());
        if (o.exception != nullptr) {
            ++failed;
            // The loader's own exception object, on the thread that ran it.
            CHECK(o.exception == runs[0].exception);
            CHECK(o.exception_run == 1);
            CHECK(o.thread == runs[0].thread);
        } else {
            CHECK(o.serial == runs[1].serial);
            CHECK(o.serial != runs[0].serial);
            CHECK(o.done);
        }
    }
    CHECK(failed == 1);
    // The retry ran on one of the waiters.
    CHECK(runs[1].thread != runs[0].thread);
    check_ready(sys, "flaky");
    CHECK(sys.get("flaky")->serial == runs[1].serial);
    CHECK(sys.size() == 1);
    check_quiescent(sys, {"flaky"});
}

// The loader always fails: each of the N waiters runs it again in turn and
// gets the exception of its own run; nobody gets a module.
TEMPLATE_LIST_TEST_CASE("a loader that always fails while N threads wait", "[threaded][failure]",
                        importlock_test::scenario_policies) {
    watchdog dog("always failing loader with waiters");
    const int waiters = GENERATE(1, 3, 8);
    const int n = waiters + 1;
    CAPTURE(waiters);
    system_t<TestType> sys;
    serial_factory factory;
    run_log log;
    std::atomic<int> copies{0};
    std::atomic<int> registered_during_run{0};
    sys.finder().define(
        "broken",
        [&](test_module& m, importer_t&) {
            const int run = log.begin(m.serial);
            if (run == 1) {
                await([&] {
                    return sys.waiter_count("broken") == static_cast<std::size_t>(waiters);
                });
            }
            if (sys.get("broken").get() == &m && sys.is_initializing("broken")) {
                ++registered_during_run;
            }
            throw loader_failure(run, log, copies);
        },
        factory);

    std::vector<outcome> outcomes(static_cast<std::size_t>(n));
    const auto escaped = run_threads(n, [&](int t) {
        outcomes[static_cast<std::size_t>(t)] = import_and_record(sys, "broken", t);
    });

    REQUIRE(escaped.empty());
    CHECK(copies.load() == 0);
    const auto runs = log.runs();
    // Retrying waiters run the loader once each; sharing waiters never do.
    const std::size_t expected_runs = shares_failures_v<TestType> ? 1 : static_cast<std::size_t>(n);
    REQUIRE(runs.size() == expected_runs);
    CHECK(factory.created() == expected_runs);
    CHECK(registered_during_run.load() == static_cast<int>(expected_runs));
    std::set<int> runs_caught;
    for (const auto& o : outcomes) {
        CHECK(o.other_failure.empty());
        CHECK(o.serial == 0);
        REQUIRE(o.exception != nullptr);
        REQUIRE(o.exception_run >= 1);
        REQUIRE(o.exception_run <= n);
        const run_record& run = runs[static_cast<std::size_t>(o.exception_run - 1)];
        // Retrying: each thread got the exception object of the run it
        // executed itself. Sharing: everybody got the one run's object.
        CHECK(o.exception == run.exception);
        if (!shares_failures_v<TestType>) CHECK(o.thread == run.thread);
        runs_caught.insert(o.exception_run);
    }
    CHECK(runs_caught.size() == expected_runs);
    std::set<std::uint64_t> serials;
    for (const auto& run : runs) serials.insert(run.serial);
    CHECK(serials.size() == expected_runs);
    CHECK_FALSE(sys.contains("broken"));
    CHECK(sys.get("broken") == nullptr);
    CHECK(sys.size() == 0);
    check_quiescent(sys, {"broken"});
}

// A package whose loader imports its child and then fails (first run only),
// while N threads wait on the package: half of them import "pkg", half
// "pkg.child" (which imports its parent first). The child stays loaded; the
// package is imported again by one waiter; nobody gets the failed package.
TEMPLATE_LIST_TEST_CASE("a parent failing after its child loaded while threads wait on it",
                        "[threaded][failure][parent]", importlock_test::scenario_policies) {
    watchdog dog("failing parent with waiters");
    const int waiters = GENERATE(1, 3, 8);
    const int n = waiters + 1;
    CAPTURE(waiters);
    system_t<TestType> sys;
    serial_factory factory;
    run_log pkg_log;
    run_log child_log;
    std::atomic<int> copies{0};
    std::atomic<int> child_saw_partial_parent{0};
    std::atomic<int> parent_saw_partial_child{0};
    sys.finder().define(
        "pkg",
        [&](test_module& m, importer_t& imp) {
            const int run = pkg_log.begin(m.serial);
            if (run == 1) {
                await([&] { return sys.waiter_count("pkg") == static_cast<std::size_t>(waiters); });
            }
            if (!imp.import_module("pkg.child")->done) ++parent_saw_partial_child;
            if (run == 1) throw loader_failure(run, pkg_log, copies);
            m.done = true;
        },
        factory);
    sys.finder().define(
        "pkg.child",
        [&](test_module& m, importer_t& imp) {
            child_log.begin(m.serial);
            // Imported by the package's own loader: the parent is partial.
            if (!imp.get("pkg")->done) ++child_saw_partial_parent;
            m.done = true;
        },
        factory);

    std::vector<outcome> outcomes(static_cast<std::size_t>(n));
    const auto escaped = run_threads(n, [&](int t) {
        const std::string key = t % 4 < 2 ? "pkg" : "pkg.child";
        outcomes[static_cast<std::size_t>(t)] = import_and_record(sys, key, t);
    });

    REQUIRE(escaped.empty());
    if constexpr (shares_failures_v<TestType>) {
        // Everybody, also the threads importing the child, waited on the
        // package and rethrows its exception; the child stays loaded.
        const auto pkg_runs = pkg_log.runs();
        REQUIRE(pkg_runs.size() == 1);
        REQUIRE(child_log.runs().size() == 1);
        CHECK(copies.load() == 0);
        for (const auto& o : outcomes) {
            CHECK(o.other_failure.empty());
            CHECK(o.serial == 0);
            CHECK(o.exception == pkg_runs[0].exception);
        }
        CHECK_FALSE(sys.contains("pkg"));
        check_ready(sys, "pkg.child");
        CHECK(sys.size() == 1);
        check_quiescent(sys, {"pkg", "pkg.child"});
        CHECK(sys.import_module("pkg")->serial != pkg_runs[0].serial);
        CHECK(pkg_log.runs().size() == 2);
        CHECK(child_log.runs().size() == 1);
        check_ready(sys, "pkg");
        check_quiescent(sys, {"pkg", "pkg.child"});
        return;
    }
    const auto pkg_runs = pkg_log.runs();
    const auto child_runs = child_log.runs();
    REQUIRE(pkg_runs.size() == 2);
    REQUIRE(child_runs.size() == 1);
    CHECK(child_saw_partial_parent.load() == 1);
    CHECK(parent_saw_partial_child.load() == 0);
    CHECK(child_runs[0].thread == pkg_runs[0].thread);
    CHECK(copies.load() == 0);
    int failed = 0;
    for (int t = 0; t < n; ++t) {
        const outcome& o = outcomes[static_cast<std::size_t>(t)];
        INFO("thread " << t);
        CHECK(o.other_failure.empty());
        if (o.exception != nullptr) {
            ++failed;
            CHECK(o.exception == pkg_runs[0].exception);
            CHECK(o.thread == pkg_runs[0].thread);
        } else {
            CHECK(o.done);
            CHECK(o.serial != pkg_runs[0].serial);
            CHECK(o.serial == (t % 4 < 2 ? pkg_runs[1].serial : child_runs[0].serial));
        }
    }
    CHECK(failed == 1);
    check_ready(sys, "pkg");
    check_ready(sys, "pkg.child");
    CHECK(sys.get("pkg")->serial == pkg_runs[1].serial);
    CHECK(sys.get("pkg.child")->serial == child_runs[0].serial);
    CHECK(sys.size() == 2);
    check_quiescent(sys, {"pkg", "pkg.child"});
}

// A factory (CPython's create_module) that fails on its first call, after N
// threads are parked on the key: no module was registered yet, the lock is
// released all the same and one waiter imports the key.
TEMPLATE_LIST_TEST_CASE("a module factory failing on its first call while N threads wait",
                        "[threaded][failure]", importlock_test::scenario_policies) {
    watchdog dog("failing factory with waiters");
    const int waiters = GENERATE(1, 3, 8);
    const int n = waiters + 1;
    CAPTURE(waiters);
    system_t<TestType> sys;
    serial_factory make;
    run_log factory_log;
    run_log loader_log;
    std::atomic<int> copies{0};
    std::atomic<int> registered_while_factory_ran{0};
    sys.finder().define(
        "lazy",
        [&](test_module& m, importer_t&) {
            loader_log.begin(m.serial);
            m.done = true;
        },
        [&](const std::string& key) {
            const int run = factory_log.begin(0);
            if (sys.contains(key)) ++registered_while_factory_ran;
            if (run == 1) {
                await([&] { return sys.waiter_count(key) == static_cast<std::size_t>(waiters); });
                throw loader_failure(run, factory_log, copies);
            }
            return make(key);
        });

    std::vector<outcome> outcomes(static_cast<std::size_t>(n));
    const auto escaped = run_threads(n, [&](int t) {
        outcomes[static_cast<std::size_t>(t)] = import_and_record(sys, "lazy", t);
    });

    REQUIRE(escaped.empty());
    if constexpr (shares_failures_v<TestType>) {
        const auto factory_runs = factory_log.runs();
        REQUIRE(factory_runs.size() == 1);
        CHECK(loader_log.runs().empty());
        CHECK(copies.load() == 0);
        for (const auto& o : outcomes) {
            CHECK(o.other_failure.empty());
            CHECK(o.exception == factory_runs[0].exception);
        }
        CHECK_FALSE(sys.contains("lazy"));
        CHECK(sys.size() == 0);
        check_quiescent(sys, {"lazy"});
        CHECK(sys.import_module("lazy")->done);
        CHECK(factory_log.runs().size() == 2);
        CHECK(loader_log.runs().size() == 1);
        check_quiescent(sys, {"lazy"});
        return;
    }
    const auto factory_runs = factory_log.runs();
    const auto loader_runs = loader_log.runs();
    REQUIRE(factory_runs.size() == 2);
    REQUIRE(loader_runs.size() == 1);
    CHECK(registered_while_factory_ran.load() == 0);
    CHECK(copies.load() == 0);
    int failed = 0;
    for (const auto& o : outcomes) {
        CHECK(o.other_failure.empty());
        if (o.exception != nullptr) {
            ++failed;
            CHECK(o.exception == factory_runs[0].exception);
            CHECK(o.thread == factory_runs[0].thread);
        } else {
            CHECK(o.done);
            CHECK(o.serial == loader_runs[0].serial);
        }
    }
    CHECK(failed == 1);
    CHECK(loader_runs[0].thread == factory_runs[1].thread);
    check_ready(sys, "lazy");
    CHECK(sys.size() == 1);
    check_quiescent(sys, {"lazy"});
}
