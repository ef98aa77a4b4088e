// SPDX-License-Identifier: BSL-1.0
// Regression tests for defects of the core (import_system.hpp and detail/),
// part 1: defects 1 to 6. Part 2 (defects 7 to 12 and the extra attacker
// cases) is test_core_regressions_2.cpp. Each TEST_CASE is tagged
// [regression][defect-N]; the header comment of each group says how the test
// fails on the core before the fix.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/policies.hpp"
#include "support/regression.hpp"
#include "support/scenario.hpp"
#include "support/watchdog.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <latch>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using importlock::import_error;
using importlock_test::await;
using importlock_test::mentions;
using importlock_test::regression_limit;
using importlock_test::watchdog;

// ---------------------------------------------------------------------------
// Defect 1: a hit can return a module whose loader is still running.
//
// The lock-free hit loads the entry's ready pointer, then copies the owning
// shared_ptr in a second step. An erase(k) and a new import of k between the
// two steps hand the reader the new, still-initialising object. Stress-shaped:
// six readers hit k in a loop while one thread erases and re-imports it with
// a loader that sleeps 300 us (the sleep only widens the window; the result
// is decided by the `done` flag the loader sets last, never by timing).
// ---------------------------------------------------------------------------

// The module of the hit races: `done` is set last by the loader.
struct race_module {
    std::atomic<bool> done{false};
};

// Parents seen unfinished by bind_child, for the dotted-key variant.
std::atomic<int> unfinished_parents_bound{0};

}  // namespace

// A child is bound to its parent before the child is ready; the parent it is
// given must be finished (it was imported fully, under its own lock, first).
template <>
struct importlock::module_traits<race_module> {
    template <class Key>
    static void bind_child(race_module& parent, const Key& /*child_key*/,
                           const std::shared_ptr<race_module>& /*child*/) {
        if (!parent.done.load()) ++unfinished_parents_bound;
    }
};

namespace {

enum class hit_path { import_module, handle_share, import_module_for, import_module_until, parent };

const char* describe(hit_path path) {
    switch (path) {
        case hit_path::import_module: return "import_module";
        case hit_path::handle_share: return "handle(k).share()";
        case hit_path::import_module_for: return "import_module_for";
        case hit_path::import_module_until: return "import_module_until";
        case hit_path::parent: return "the parent import of k.child<i>";
    }
    return "?";
}

// Runs the erase/re-import churn against six readers using `path`; returns
// {unfinished modules returned, null modules returned, escaped exceptions}.
template <class Policy>
void check_hits_never_see_a_running_loader(hit_path path) {
    INFO("hit path: " << describe(path));
    watchdog dog(std::string("defect 1: ") + describe(path), regression_limit);
    using system = importlock::basic_import_system<std::string, race_module, Policy>;
    using importer = importlock::importer<std::string, race_module>;
    system sys;
    sys.finder().define("k", [](race_module& m, importer&) {
        std::this_thread::sleep_for(std::chrono::microseconds(300));  // widens the window only
        m.done.store(true);
    });
    constexpr int readers = 6;
    for (int i = 0; i < readers; ++i) {
        sys.finder().define("k.child" + std::to_string(i),
                            [](race_module& m, importer&) { m.done.store(true); });
    }
    sys.import_module("k");
    unfinished_parents_bound = 0;
    std::atomic<bool> stop{false};
    std::atomic<int> unfinished{0};
    std::atomic<int> nulls{0};
    std::atomic<long> hits{0};
    std::latch start(readers + 1);
    // The parent path does far more per import (erase, the child's lock), so
    // it gets more cycles; half of its readers only call get("k"), which
    // contends on the entry's owner lock as hits do.
    const int cycles = path == hit_path::parent ? 500 : 400;
    const auto escaped = importlock_test::run_threads(readers + 1, [&](int t) {
        start.arrive_and_wait();
        if (t == readers) {  // the churn: erase k and import it again
            for (int i = 0; i < cycles; ++i) {
                try {
                    sys.erase("k");
                } catch (const import_error&) {
                    // a reader is loading k right now: fine, import waits for it
                }
                sys.import_module("k");
            }
            stop = true;
            return;
        }
        const std::string child = "k.child" + std::to_string(t);
        auto handle = sys.handle("k");
        while (!stop.load()) {
            std::shared_ptr<race_module> m;
            switch (path) {
                case hit_path::import_module: m = sys.import_module("k"); break;
                case hit_path::handle_share: m = handle.share(); break;
                case hit_path::import_module_for:
                    m = sys.import_module_for("k", std::chrono::hours(1));
                    break;
                case hit_path::import_module_until:
                    m = sys.import_module_until(
                        "k", std::chrono::steady_clock::now() + std::chrono::hours(1));
                    break;
                case hit_path::parent:
                    if (t % 2 == 1) {
                        if (sys.get("k") != nullptr) ++hits;  // contention only
                        continue;
                    }
                    sys.erase(child);  // only this thread imports its child
                    m = sys.import_module(child);
                    break;
            }
            ++hits;
            if (m == nullptr) {
                ++nulls;
            } else if (!m->done.load()) {
                ++unfinished;
            }
        }
    });
    INFO("reader imports: " << hits.load());
    CHECK(escaped.empty());
    for (const auto& e : escaped) INFO(e);
    CHECK(nulls.load() == 0);
    CHECK(unfinished.load() == 0);
    CHECK(unfinished_parents_bound.load() == 0);
    CHECK(sys.lock_count() == 0);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("defect 1: import_module never returns a module whose loader runs",
                        "[regression][defect-1][threaded]", importlock_test::threaded_policies) {
    check_hits_never_see_a_running_loader<TestType>(hit_path::import_module);
}

TEMPLATE_LIST_TEST_CASE("defect 1: handle(k).share() never returns a module whose loader runs",
                        "[regression][defect-1][threaded]", importlock_test::threaded_policies) {
    check_hits_never_see_a_running_loader<TestType>(hit_path::handle_share);
}

TEMPLATE_LIST_TEST_CASE("defect 1: import_module_for never returns a module whose loader runs",
                        "[regression][defect-1][threaded]", importlock_test::threaded_policies) {
    check_hits_never_see_a_running_loader<TestType>(hit_path::import_module_for);
}

TEMPLATE_LIST_TEST_CASE("defect 1: import_module_until never returns a module whose loader runs",
                        "[regression][defect-1][threaded]", importlock_test::threaded_policies) {
    check_hits_never_see_a_running_loader<TestType>(hit_path::import_module_until);
}

TEMPLATE_LIST_TEST_CASE("defect 1: a dotted key's child is never bound to an unfinished parent",
                        "[regression][defect-1][threaded]", importlock_test::threaded_policies) {
    check_hits_never_see_a_running_loader<TestType>(hit_path::parent);
}

// ---------------------------------------------------------------------------
// Defect 2: a module whose destructor imports during teardown.
//
// Old core: clear() unregisters every module, then destroys them; a
// destructor that imports registers a new module after the sweep, so clear()
// returns with size() == 1. In ~basic_import_system that late module is only
// destroyed with the registry, after the finder and the lock map are gone: a
// destructor of the late module that imports again uses them (heap-use-after-
// free under ASan; without ASan: memory corruption or a crash).
// ---------------------------------------------------------------------------

namespace {

using importlock_test::destruction_log;
using importlock_test::hook_module;

template <class Policy>
using hook_system = importlock::basic_import_system<std::string, hook_module, Policy>;
using hook_importer = importlock::importer<std::string, hook_module>;

}  // namespace

TEMPLATE_LIST_TEST_CASE("defect 2: clear() also tears down modules imported by destructors",
                        "[regression][defect-2][teardown]", importlock_test::all_policies) {
    destruction_log log;  // declared first: outlives the system and its modules
    int late_imported = 0;
    int late_refused = 0;
    hook_system<TestType> sys;
    sys.finder().define(
        "late", [&](hook_module& m, hook_importer&) { m.on_destroy = [&] { log.add("late"); }; });
    sys.finder().define("a", [&](hook_module& m, hook_importer&) {
        m.on_destroy = [&] {
            log.add("a");
            try {
                sys.import_module("late");
                ++late_imported;
            } catch (const import_error&) {
                ++late_refused;
            }
        };
    });
    sys.import_module("a");
    sys.clear();
    CHECK(late_imported == 1);  // imports from destructors during clear() succeed...
    CHECK(late_refused == 0);
    CHECK(sys.size() == 0);  // ... and are torn down by the same clear()
    CHECK_FALSE(sys.contains("late"));
    CHECK(log.names() == std::vector<std::string>{"a", "late"});
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("defect 2: destroying the system with a destructor that imports",
                        "[regression][defect-2][teardown]", importlock_test::all_policies) {
    // Every module created is destroyed exactly once, while the system is
    // still whole; imports made by destructors during ~basic_import_system
    // either succeed (and are torn down too) or throw import_error.
    std::atomic<int> created{0};
    std::atomic<int> destroyed{0};
    int imported = 0;
    int refused = 0;
    int other_errors = 0;
    {
        hook_system<TestType> sys;
        const auto import_from_destructor = [&](const std::string& key) {
            try {
                sys.import_module(key);
                ++imported;
            } catch (const import_error&) {
                ++refused;
            } catch (...) {
                ++other_errors;
            }
        };
        sys.finder().define("later", [&](hook_module& m, hook_importer&) {
            ++created;
            m.on_destroy = [&] { ++destroyed; };
        });
        sys.finder().define("late", [&, import_from_destructor](hook_module& m, hook_importer&) {
            ++created;
            m.on_destroy = [&, import_from_destructor] {
                ++destroyed;
                import_from_destructor("later");
            };
        });
        sys.finder().define("a", [&, import_from_destructor](hook_module& m, hook_importer&) {
            ++created;
            m.on_destroy = [&, import_from_destructor] {
                ++destroyed;
                import_from_destructor("late");
            };
        });
        sys.import_module("a");
        REQUIRE(created == 1);
    }
    CHECK(other_errors == 0);
    CHECK(created.load() == destroyed.load());
    // "a"'s destructor tried "late"; if that worked, "late"'s tried "later".
    CHECK(imported + refused == (imported > 0 ? 2 : 1));
    CHECK(created.load() == 1 + imported);
}

// ---------------------------------------------------------------------------
// Defect 3: the importer a loader receives dies with the loader.
//
// Old core: the importer is a local of the function that runs the loader, so
// a module that keeps it, or a helper thread the loader started, calls
// through a dangling reference once the loader returned: stack-use-after-
// return (ASan with ASAN_OPTIONS=detect_stack_use_after_return=1); without
// ASan, scribble_stack() overwrites the dead frame first and the virtual call
// goes through a garbage vtable pointer (SIGSEGV).
// ---------------------------------------------------------------------------

namespace {

struct lazy_module {
    importlock::importer<std::string, lazy_module>* imp = nullptr;
    std::shared_ptr<lazy_module> later;
    int value = 0;
};

template <class Policy>
using lazy_system = importlock::basic_import_system<std::string, lazy_module, Policy>;
using lazy_importer = importlock::importer<std::string, lazy_module>;

template <class System>
void define_leaves(System& sys) {
    sys.finder().define("early", [](lazy_module& m, lazy_importer&) { m.value = 1; });
    sys.finder().define("later", [](lazy_module& m, lazy_importer&) { m.value = 2; });
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("defect 3: a module imports through the importer it kept",
                        "[regression][defect-3]", importlock_test::all_policies) {
    lazy_system<TestType> sys;
    define_leaves(sys);
    sys.finder().define("k", [](lazy_module& m, lazy_importer& imp) {
        imp.import_module("early");
        m.imp = &imp;  // kept for lazy imports later
    });
    const auto k = sys.import_module("k");
    importlock_test::scribble_stack();
    k->later = k->imp->import_module("later");  // the loader returned long ago
    REQUIRE(k->later != nullptr);
    CHECK(k->later->value == 2);
    CHECK(&k->imp->import_ref("later") == k->later.get());
    CHECK(k->imp->get("early") == sys.get("early"));
    // Imports after the loader returned are not the loader's dependencies.
    CHECK(sys.dependencies("k") == std::vector<std::string>{"early"});
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("defect 3: a helper thread imports through the importer after the loader",
                        "[regression][defect-3][threaded]", importlock_test::threaded_policies) {
    watchdog dog("defect 3: helper thread", regression_limit);
    lazy_system<TestType> sys;
    define_leaves(sys);
    std::latch loader_returned(1);
    std::thread helper;
    std::shared_ptr<lazy_module> got;
    std::string helper_error;
    sys.finder().define("k", [&](lazy_module&, lazy_importer& imp) {
        helper = std::thread([&imp, &loader_returned, &got, &helper_error] {
            loader_returned.wait();
            try {
                got = imp.import_module("later");
            } catch (const std::exception& e) {
                helper_error = e.what();
            }
        });
    });
    const auto k = sys.import_module("k");
    importlock_test::scribble_stack();
    loader_returned.count_down();
    helper.join();
    CHECK(helper_error.empty());
    REQUIRE(got != nullptr);
    CHECK(got->value == 2);
    CHECK(sys.dependencies("k").empty());
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------
// Defect 4: deep imports crash.
//
// Old core: 10,000 nested imports, or one dotted key of 20,000 components
// (each parent imported first, recursively), overflow the 8 MiB stack:
// SIGSEGV (Catch2 reports "FATAL ERROR ... SIGSEGV"; ASan: stack-overflow).
// The fix adds a configurable limit, set_max_import_depth(n) /
// max_import_depth(), default 1000, and throws import_depth_error (an
// import_error whose message says "depth" or "deep" and names the key). The
// API is used behind a requires-expression so that this file compiles on the
// old core, where those checks FAIL instead.
// ---------------------------------------------------------------------------

namespace {

struct depth_module {
    int value = 0;
};

template <class Policy>
using depth_system = importlock::basic_import_system<std::string, depth_module, Policy>;
using depth_importer = importlock::importer<std::string, depth_module>;

// Defines prefix0 -> prefix1 -> ... -> prefix<n-1>: each loader imports the next.
template <class System>
void define_chain(System& sys, const std::string& prefix, int n) {
    for (int i = 0; i < n; ++i) {
        const std::string next = i + 1 < n ? prefix + std::to_string(i + 1) : std::string();
        sys.finder().define(prefix + std::to_string(i),
                            [next](depth_module& m, depth_importer& imp) {
                                if (!next.empty()) imp.import_module(next);
                                m.value = 1;
                            });
    }
}

template <class System>
inline constexpr bool has_depth_api = requires(System& s, const System& cs) {
    s.set_max_import_depth(std::size_t{});
    { cs.max_import_depth() } -> std::convertible_to<std::size_t>;
};

bool says_depth(const std::string& message) {
    return mentions(message, "depth") || mentions(message, "deep");
}

// Imports `key` expecting an import_error; returns it (key and message).
template <class System>
std::optional<std::pair<std::string, std::string>> import_expecting_error(System& sys,
                                                                          const std::string& key) {
    try {
        sys.import_module(key);
    } catch (const import_error& e) {
        return std::pair<std::string, std::string>(e.key(), e.what());
    }
    return std::nullopt;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("defect 4: 10000 nested imports fail with a depth error and no crash",
                        "[regression][defect-4][limits]", importlock_test::all_policies) {
    watchdog dog("defect 4: 10000 nested imports", regression_limit);
    depth_system<TestType> sys;
    define_chain(sys, "n", 10000);
    const auto error = import_expecting_error(sys, "n0");
    REQUIRE(error.has_value());
    INFO("message: " << error->second);
    CHECK(says_depth(error->second));
    // The default limit is 1000 levels: n0 is level 1, n1000 level 1001.
    CHECK(error->first == "n1000");
    CHECK(mentions(error->second, "n1000"));
    CHECK(sys.lock_count() == 0);
    CHECK(sys.size() == 0);
}

TEMPLATE_LIST_TEST_CASE("defect 4: 500 nested imports below the default limit succeed",
                        "[regression][defect-4][limits]", importlock_test::all_policies) {
    depth_system<TestType> sys;
    define_chain(sys, "n", 500);
    CHECK(sys.import_module("n0")->value == 1);
    CHECK(sys.size() == 500);
    CHECK(sys.contains("n499"));
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("defect 4: set_max_import_depth(50): level 51 throws and nothing is left",
                        "[regression][defect-4][limits]", importlock_test::all_policies) {
    using system = depth_system<TestType>;
    system sys;
    if constexpr (has_depth_api<system>) {
        CHECK(sys.max_import_depth() == 1000);
        sys.set_max_import_depth(50);
        CHECK(sys.max_import_depth() == 50);
        define_chain(sys, "ok", 50);
        CHECK(sys.import_module("ok0")->value == 1);  // exactly 50 levels
        CHECK(sys.size() == 50);
        define_chain(sys, "n", 51);
        const auto error = import_expecting_error(sys, "n0");
        REQUIRE(error.has_value());
        INFO("message: " << error->second);
        CHECK(says_depth(error->second));
        CHECK(error->first == "n50");
        CHECK(mentions(error->second, "n50"));
        CHECK(sys.lock_count() == 0);
        CHECK(sys.size() == 50);
        for (int i = 0; i <= 50; ++i) {
            INFO("key n" << i);
            CHECK_FALSE(sys.contains("n" + std::to_string(i)));
            CHECK_FALSE(sys.is_initializing("n" + std::to_string(i)));
        }
        // The limit is not sticky: the chain imports once the limit allows it.
        sys.set_max_import_depth(1000);
        CHECK(sys.import_module("n0")->value == 1);
    } else {
        FAIL("basic_import_system has no set_max_import_depth(std::size_t) / max_import_depth()");
    }
}

TEMPLATE_LIST_TEST_CASE("defect 4: a dotted key of 20000 components fails fast",
                        "[regression][defect-4][limits]", importlock_test::all_policies) {
    watchdog dog("defect 4: dotted key of 20000 components", regression_limit);
    using finder = importlock::function_finder<std::string, depth_module>;
    using system = importlock::basic_import_system<std::string, depth_module, TestType, finder>;
    // Every key is found, so only a limit can stop the parent chain.
    system sys(finder([](const std::string&) {
        importlock::module_spec<std::string, depth_module> spec;
        spec.loader = [](depth_module& m, depth_importer&) { m.value = 1; };
        return std::optional<importlock::module_spec<std::string, depth_module>>(spec);
    }));
    std::string key = "a";
    for (int i = 1; i < 20000; ++i) key += ".a";
    const auto error = import_expecting_error(sys, key);
    REQUIRE(error.has_value());
    INFO("message (first 200 chars): " << error->second.substr(0, 200));
    CHECK(says_depth(error->second));
    CHECK(sys.lock_count() == 0);
    CHECK_FALSE(sys.contains(key));
}

// ---------------------------------------------------------------------------
// Defect 5: teardown order breaks after reload.
//
// Old core: reload(dep), successful or failed, restamps dep as the newest
// ready module, so clear() and the destructor destroy dep before "user",
// whose loader imported it (the log reads {"dep", "user"}).
// ---------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("defect 5: dependents are torn down first after a reload",
                        "[regression][defect-5][teardown]", importlock_test::all_policies) {
    const bool reload_fails = GENERATE(false, true);
    const bool by_destructor = GENERATE(false, true);
    CAPTURE(reload_fails, by_destructor);
    destruction_log log;
    bool user_outlived_dep = false;
    std::atomic<bool> dep_alive{false};  // declared before the system: outlives its modules
    int dep_runs = 0;
    {
        hook_system<TestType> sys;
        sys.finder().define("dep", [&](hook_module& m, hook_importer&) {
            if (++dep_runs == 2 && reload_fails) throw std::runtime_error("reload fails");
            dep_alive = true;
            m.on_destroy = [&] {
                dep_alive = false;
                log.add("dep");
            };
        });
        sys.finder().define("user", [&](hook_module& m, hook_importer& imp) {
            imp.import_ref("dep");  // used by reference, not owned
            m.on_destroy = [&] {
                if (!dep_alive) user_outlived_dep = true;
                log.add("user");
            };
        });
        sys.finder().define("other", [&](hook_module& m, hook_importer&) {
            m.on_destroy = [&] { log.add("other"); };
        });
        sys.import_module("user");
        sys.import_module("other");
        if (reload_fails) {
            CHECK_THROWS_AS(sys.reload("dep"), std::runtime_error);
        } else {
            sys.reload("dep");
        }
        REQUIRE(sys.contains("dep"));
        CHECK(sys.dependencies("user") == std::vector<std::string>{"dep"});
        if (!by_destructor) {
            CHECK(sys.clear() == 3);
            CHECK(sys.size() == 0);
        }
    }
    CHECK_FALSE(user_outlived_dep);
    const auto names = log.names();
    REQUIRE(names.size() == 3);
    CHECK(log.index_of("user") < log.index_of("dep"));
}

// ---------------------------------------------------------------------------
// Defect 6: far deadlines time out at once.
//
// Old core: import_module_until computes `deadline - Clock::now()` in the
// common (nanosecond) type; 342 years of steady_clock hours, or
// sys_days{2500y/1/1}, overflow it (UBSan: signed integer overflow in
// <chrono>), the deadline looks past, and the import throws
// import_timeout_error at once while another thread holds the key. A NaN
// duration converts to an integer (UBSan: "nan is outside the range of
// representable values"); it must be rejected with std::invalid_argument
// naming the key.
// ---------------------------------------------------------------------------

namespace {

// How a timed import on a key held by another thread ended.
struct timed_outcome {
    bool got_finished_module = false;
    bool returned_before_release = false;  // it did not wait for the holder
    std::string timeout_message;           // import_timeout_error
    std::string invalid_argument_message;  // std::invalid_argument
    std::string other_error;
    bool timeout_named_holder = false;
};

// Thread H holds "slow" (its loader waits on a latch); thread W runs
// `timed(sys)`. W is let go either when it parks on the lock (the holder is
// then released) or when it returns on its own (at once: a timeout, an
// invalid argument). Returns how W's import ended.
template <class Policy, class Timed>
timed_outcome import_while_held(Timed timed) {
    watchdog dog("defect 6: timed import of a held key", regression_limit);
    importlock_test::system_t<Policy> sys;
    std::latch entered(1);
    std::latch release(1);
    sys.finder().define("slow", [&](importlock_test::test_module& m, importlock_test::importer_t&) {
        entered.count_down();
        release.wait();
        m.done = true;
    });
    std::thread::id holder_id;
    std::thread holder([&] {
        holder_id = std::this_thread::get_id();
        sys.import_module("slow");
    });
    entered.wait();
    const std::thread::id holder_seen = holder_id;
    timed_outcome out;
    std::atomic<bool> finished{false};
    std::thread waiter([&] {
        try {
            const auto m = timed(sys);
            out.got_finished_module = m != nullptr && m->done.load();
        } catch (const importlock::import_timeout_error& e) {
            out.timeout_message = e.what();
            out.timeout_named_holder = e.holder() == holder_seen;
        } catch (const std::invalid_argument& e) {
            out.invalid_argument_message = e.what();
        } catch (const std::exception& e) {
            out.other_error = e.what();
        }
        finished = true;
    });
    await([&] { return finished.load() || sys.waiter_count("slow") == 1; });
    out.returned_before_release = finished.load();
    release.count_down();
    waiter.join();
    holder.join();
    return out;
}

void check_waited_without_limit(const timed_outcome& out) {
    INFO("timeout: " << out.timeout_message);
    INFO("invalid_argument: " << out.invalid_argument_message);
    INFO("other: " << out.other_error);
    CHECK_FALSE(out.returned_before_release);
    CHECK(out.got_finished_module);
}

void check_timed_out_at_once(const timed_outcome& out) {
    INFO("invalid_argument: " << out.invalid_argument_message);
    INFO("other: " << out.other_error);
    CHECK(out.returned_before_release);
    CHECK_FALSE(out.got_finished_module);
    CHECK(mentions(out.timeout_message, "'slow'"));
    CHECK(out.timeout_named_holder);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("defect 6: import_module_until 342 years ahead in steady_clock hours waits",
                        "[regression][defect-6][limits][threaded]",
                        importlock_test::threaded_policies) {
    check_waited_without_limit(import_while_held<TestType>([](auto& sys) {
        using namespace std::chrono;
        const auto far = time_point_cast<hours>(steady_clock::now()) + hours(342LL * 365 * 24);
        return sys.import_module_until("slow", far);
    }));
}

TEMPLATE_LIST_TEST_CASE("defect 6: import_module_until sys_days{2500y/1/1} waits",
                        "[regression][defect-6][limits][threaded]",
                        importlock_test::threaded_policies) {
    check_waited_without_limit(import_while_held<TestType>([](auto& sys) {
        using namespace std::chrono;
        return sys.import_module_until("slow", sys_days{year{2500} / 1 / 1});
    }));
}

TEMPLATE_LIST_TEST_CASE("defect 6: import_module_for with a NaN duration is invalid_argument",
                        "[regression][defect-6][limits][threaded]",
                        importlock_test::threaded_policies) {
    const auto out = import_while_held<TestType>([](auto& sys) {
        return sys.import_module_for(
            "slow", std::chrono::duration<double>(std::numeric_limits<double>::quiet_NaN()));
    });
    INFO("timeout: " << out.timeout_message);
    INFO("other: " << out.other_error);
    CHECK(out.returned_before_release);
    CHECK_FALSE(out.got_finished_module);
    CHECK(mentions(out.invalid_argument_message, "slow"));
}

TEMPLATE_LIST_TEST_CASE("defect 6: far but representable limits wait without limit",
                        "[regression][defect-6][limits][threaded]",
                        importlock_test::threaded_policies) {
    SECTION("+infinity seconds") {
        check_waited_without_limit(import_while_held<TestType>([](auto& sys) {
            return sys.import_module_for(
                "slow", std::chrono::duration<double>(std::numeric_limits<double>::infinity()));
        }));
    }
    SECTION("342 years in hours, as a duration") {
        check_waited_without_limit(import_while_held<TestType>([](auto& sys) {
            return sys.import_module_for("slow", std::chrono::hours(342LL * 365 * 24));
        }));
    }
    SECTION("steady_clock::time_point::max()") {
        check_waited_without_limit(import_while_held<TestType>([](auto& sys) {
            return sys.import_module_until("slow", std::chrono::steady_clock::time_point::max());
        }));
    }
}

TEMPLATE_LIST_TEST_CASE("defect 6: zero and negative limits time out at once on a held key",
                        "[regression][defect-6][limits][threaded]",
                        importlock_test::threaded_policies) {
    SECTION("zero milliseconds") {
        check_timed_out_at_once(import_while_held<TestType>(
            [](auto& sys) { return sys.import_module_for("slow", std::chrono::milliseconds(0)); }));
    }
    SECTION("-5 seconds") {
        check_timed_out_at_once(import_while_held<TestType>(
            [](auto& sys) { return sys.import_module_for("slow", std::chrono::seconds(-5)); }));
    }
    SECTION("-infinity seconds") {
        check_timed_out_at_once(import_while_held<TestType>([](auto& sys) {
            return sys.import_module_for(
                "slow", std::chrono::duration<double>(-std::numeric_limits<double>::infinity()));
        }));
    }
    SECTION("a deadline in the past") {
        check_timed_out_at_once(import_while_held<TestType>([](auto& sys) {
            return sys.import_module_until(
                "slow", std::chrono::steady_clock::now() - std::chrono::hours(1));
        }));
    }
}
