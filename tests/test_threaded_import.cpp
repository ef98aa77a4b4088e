// SPDX-License-Identifier: BSL-1.0
// Multi-threaded imports without cycles: ports of CPython's
// test_threaded_import.py and test_importlib/test_locks.py scenarios and of
// the chapter's examples (42.10 to 42.12, 42.18, 42.19).
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/policies.hpp"
#include "support/scenario.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstddef>
#include <latch>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using importlock_test::await;
using importlock_test::check_quiescent;
using importlock_test::check_ready;
using importlock_test::importer_t;
using importlock_test::is_global_v;
using importlock_test::numbered_keys;
using importlock_test::run_counter;
using importlock_test::run_threads;
using importlock_test::system_t;
using importlock_test::test_module;
using importlock_test::waiters_on;
using importlock_test::watchdog;

// Returns the thread's own order of the keys 0..count-1: ascending for thread
// 0, descending for thread 1, a shuffle seeded by the thread index otherwise.
std::vector<int> key_order(int thread, int count) {
    std::vector<int> order(static_cast<std::size_t>(count));
    std::iota(order.begin(), order.end(), 0);
    if (thread == 1) {
        std::reverse(order.begin(), order.end());
    } else if (thread > 1) {
        std::mt19937 rng(static_cast<unsigned>(thread));
        std::shuffle(order.begin(), order.end(), rng);
    }
    return order;
}

}  // namespace

// Chapter 42.10 (the five threads of `import slowmod`), as a function of the
// thread count: all threads are inside import_module before the loader ends.
TEMPLATE_LIST_TEST_CASE("threads importing one slow module: the loader runs once, all see 42",
                        "[threaded][import]", importlock_test::scenario_policies) {
    watchdog dog("slow module");
    const int n = GENERATE(1, 2, 3, 5, 7, 11, 16);
    CAPTURE(n);
    system_t<TestType> sys;
    const std::size_t others = static_cast<std::size_t>(n - 1);
    run_counter runs;
    std::atomic<std::size_t> waiters_in_loader{0};
    sys.finder().define("slowmod", [&](test_module& m, importer_t&) {
        runs.record("slowmod");
        // Every other thread is parked on slowmod's lock before the body ends.
        await([&] { return sys.waiter_count("slowmod") == others; });
        waiters_in_loader = sys.waiter_count("slowmod");
        m.value = 42;
        m.done = true;
    });

    std::vector<int> values(static_cast<std::size_t>(n), 0);
    std::vector<const test_module*> objects(static_cast<std::size_t>(n), nullptr);
    const auto escaped = run_threads(n, [&](int i) {
        const auto m = sys.import_module("slowmod");
        values[static_cast<std::size_t>(i)] = m->value;
        objects[static_cast<std::size_t>(i)] = m.get();
    });

    REQUIRE(escaped.empty());
    CHECK(runs("slowmod") == 1);
    CHECK(waiters_in_loader.load() == others);
    CHECK(values == std::vector<int>(static_cast<std::size_t>(n), 42));
    const test_module* loaded = sys.get("slowmod").get();
    CHECK(std::all_of(objects.begin(), objects.end(),
                      [&](const test_module* m) { return m == loaded; }));
    check_ready(sys, "slowmod");
    CHECK(sys.size() == 1);
    check_quiescent(sys, {"slowmod"});
}

// test_threaded_import's task(): every thread imports the same chain of
// modules in its own order. c0 imports c1 ... imports c8; the leaf's loader
// waits until every other thread is parked on some lock of the chain, so all
// orders contend. Without a cycle nobody may see a partial module.
TEMPLATE_LIST_TEST_CASE("threads importing a chain of 9 keys in different orders",
                        "[threaded][import]", importlock_test::scenario_policies) {
    watchdog dog("chain of 9 keys");
    const int n = GENERATE(1, 2, 3, 7, 11, 16);
    CAPTURE(n);
    constexpr int chain_length = 9;
    const auto keys = numbered_keys("c", chain_length);
    system_t<TestType> sys;
    run_counter runs;
    std::atomic<int> partial_seen{0};
    std::atomic<std::size_t> parked_at_leaf{0};
    for (int i = 0; i < chain_length; ++i) {
        sys.finder().define(
            keys[static_cast<std::size_t>(i)], [&, i](test_module& m, importer_t& imp) {
                runs.record(keys[static_cast<std::size_t>(i)]);
                if (i + 1 < chain_length) {
                    const auto next = imp.import_module(keys[static_cast<std::size_t>(i + 1)]);
                    if (!next->done || next->value != i + 1) ++partial_seen;
                } else {
                    await([&] { return waiters_on(sys, keys) == static_cast<std::size_t>(n - 1); });
                    parked_at_leaf = waiters_on(sys, keys);
                }
                m.value = i;
                m.done = true;
            });
    }

    std::vector<int> bad_results(static_cast<std::size_t>(n), 0);
    const auto escaped = run_threads(n, [&](int t) {
        for (const int i : key_order(t, chain_length)) {
            const auto m = sys.import_module(keys[static_cast<std::size_t>(i)]);
            if (!m->done || m->value != i) ++bad_results[static_cast<std::size_t>(t)];
        }
    });

    REQUIRE(escaped.empty());
    CHECK(parked_at_leaf.load() == static_cast<std::size_t>(n - 1));
    CHECK(partial_seen.load() == 0);
    CHECK(bad_results == std::vector<int>(static_cast<std::size_t>(n), 0));
    for (const auto& key : keys) {
        INFO("key " << key);
        CHECK(runs(key) == 1);
        check_ready(sys, key);
    }
    CHECK(sys.size() == static_cast<std::size_t>(chain_length));
    check_quiescent(sys, keys);
}

// test_threaded_import's parallel module init: half the threads import a then
// b, the other half b then a. Each loader waits until every thread that is not
// running a loader is parked, so both loaders see the full crowd.
TEMPLATE_LIST_TEST_CASE("20 and 50 threads importing two modules in alternating order",
                        "[threaded][import]", importlock_test::scenario_policies) {
    watchdog dog("two modules, alternating order");
    const int n = GENERATE(20, 50);
    CAPTURE(n);
    const std::vector<std::string> keys{"alpha", "beta"};
    system_t<TestType> sys;
    run_counter runs;
    // Per-key: the two loaders run at once on two threads, the rest are parked.
    // Global: one loader at a time, every other thread parked on the global lock.
    const std::size_t parked = static_cast<std::size_t>(is_global_v<TestType> ? n - 1 : n - 2);
    std::atomic<int> crowd_seen{0};
    std::barrier both_inside(2);
    std::barrier both_saw_crowd(2);
    for (const auto& key : keys) {
        sys.finder().define(key, [&, key](test_module& m, importer_t&) {
            runs.record(key);
            if constexpr (!is_global_v<TestType>) both_inside.arrive_and_wait();
            await([&] { return waiters_on(sys, keys) == parked; });
            ++crowd_seen;
            // Neither loader ends (and frees its waiters) before both saw the crowd.
            if constexpr (!is_global_v<TestType>) both_saw_crowd.arrive_and_wait();
            m.value = key == "alpha" ? 1 : 2;
            m.done = true;
        });
    }

    std::vector<const test_module*> alpha(static_cast<std::size_t>(n), nullptr);
    std::vector<const test_module*> beta(static_cast<std::size_t>(n), nullptr);
    std::vector<int> values_ok(static_cast<std::size_t>(n), 0);
    const auto escaped = run_threads(n, [&](int t) {
        const auto slot = static_cast<std::size_t>(t);
        std::shared_ptr<test_module> a;
        std::shared_ptr<test_module> b;
        if (t % 2 == 0) {
            a = sys.import_module("alpha");
            b = sys.import_module("beta");
        } else {
            b = sys.import_module("beta");
            a = sys.import_module("alpha");
        }
        alpha[slot] = a.get();
        beta[slot] = b.get();
        values_ok[slot] = a->done && b->done && a->value == 1 && b->value == 2;
    });

    REQUIRE(escaped.empty());
    CHECK(runs("alpha") == 1);
    CHECK(runs("beta") == 1);
    CHECK(crowd_seen.load() == 2);
    CHECK(values_ok == std::vector<int>(static_cast<std::size_t>(n), 1));
    CHECK(std::count(alpha.begin(), alpha.end(), sys.get("alpha").get()) == n);
    CHECK(std::count(beta.begin(), beta.end(), sys.get("beta").get()) == n);
    CHECK(sys.get("alpha") != sys.get("beta"));
    CHECK(sys.size() == 2);
    check_quiescent(sys, keys);
}

// Chapter 42.11: independent keys do not share a lock. Per-key: all n loaders
// are inside their loaders at once (a barrier of n that every one passes).
// Global lock: they run one after the other, each while all the threads that
// have not run yet are parked on the global lock.
TEMPLATE_LIST_TEST_CASE("independent keys initialise in parallel only with per-key locks",
                        "[threaded][import]", importlock_test::scenario_policies) {
    watchdog dog("independent keys");
    const int n = GENERATE(2, 3, 7, 11, 16);
    CAPTURE(n);
    const auto keys = numbered_keys("independent", n);
    system_t<TestType> sys;
    run_counter runs;
    std::barrier all_inside(n);
    std::atomic<int> inside{0};
    std::atomic<int> max_inside{0};
    std::atomic<int> passed_barrier{0};
    std::atomic<int> next_turn{0};
    std::mutex order_mutex;
    std::vector<std::string> order;  // loader entries, then exits, as "+k" / "-k"
    std::vector<int> parked_ok(static_cast<std::size_t>(n), 0);
    for (int i = 0; i < n; ++i) {
        const std::string key = keys[static_cast<std::size_t>(i)];
        sys.finder().define(key, [&, key](test_module& m, importer_t&) {
            runs.record(key);
            {
                std::lock_guard lock(order_mutex);
                order.push_back("+" + key);
            }
            const int now = ++inside;
            int seen = max_inside.load();
            while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
            }
            if constexpr (is_global_v<TestType>) {
                // The threads that have not run yet are all parked on the one lock.
                const int turn = next_turn++;
                const auto expected = static_cast<std::size_t>(n - 1 - turn);
                await([&] { return sys.waiter_count(key) == expected; });
                parked_ok[static_cast<std::size_t>(turn)] = inside.load() == 1;
            } else {
                all_inside.arrive_and_wait();
                ++passed_barrier;
            }
            --inside;
            {
                std::lock_guard lock(order_mutex);
                order.push_back("-" + key);
            }
            m.done = true;
        });
    }

    const auto escaped =
        run_threads(n, [&](int t) { (void)sys.import_module(keys[static_cast<std::size_t>(t)]); });

    REQUIRE(escaped.empty());
    for (const auto& key : keys) {
        CHECK(runs(key) == 1);
        check_ready(sys, key);
    }
    REQUIRE(order.size() == static_cast<std::size_t>(2 * n));
    if constexpr (is_global_v<TestType>) {
        CHECK(max_inside.load() == 1);
        CHECK(parked_ok == std::vector<int>(static_cast<std::size_t>(n), 1));
        // Strictly one after the other: +x -x +y -y ...
        for (std::size_t j = 0; j < order.size(); j += 2) {
            INFO("entry " << order[j] << " then " << order[j + 1]);
            CHECK(order[j][0] == '+');
            CHECK(order[j + 1] == "-" + order[j].substr(1));
        }
    } else {
        CHECK(passed_barrier.load() == n);
        CHECK(max_inside.load() == n);
        // Every loader entered before any left.
        for (std::size_t j = 0; j < order.size(); ++j) {
            CHECK(order[j][0] == (j < static_cast<std::size_t>(n) ? '+' : '-'));
        }
    }
    CHECK(sys.size() == static_cast<std::size_t>(n));
    check_quiescent(sys, keys);
}

// test_threaded_import's test_import_hangers / a loader that starts a thread:
// the loader of "outer" starts a thread that imports "inner" and joins it,
// while other threads wait for "outer". Per-key only: under global_lock the
// joined thread would wait for the lock its joiner holds (a deadlock the
// policy documents).
TEMPLATE_LIST_TEST_CASE("a loader that starts a thread importing another key and joins it",
                        "[threaded][import]", importlock_test::per_key_policies) {
    watchdog dog("loader joins an importing thread");
    const int n = GENERATE(1, 2, 3, 7, 11, 16);
    CAPTURE(n);
    system_t<TestType> sys;
    run_counter runs;
    std::atomic<int> inner_saw_outer_initialising{0};
    std::atomic<int> helper_ok{0};
    sys.finder().define("inner", [&](test_module& m, importer_t& imp) {
        runs.record("inner");
        if (sys.is_initializing("outer")) ++inner_saw_outer_initialising;
        // The partial outer is visible through get, as sys.modules.get.
        if (imp.get("outer") != nullptr && !imp.get("outer")->done) ++inner_saw_outer_initialising;
        m.value = 7;
        m.done = true;
    });
    sys.finder().define("outer", [&](test_module& m, importer_t& imp) {
        runs.record("outer");
        await([&] { return sys.waiter_count("outer") == static_cast<std::size_t>(n - 1); });
        std::thread helper([&] {
            try {
                if (imp.import_module("inner")->value == 7) ++helper_ok;
            } catch (...) {
            }
        });
        helper.join();
        m.value = imp.import_module("inner")->value + 1;  // a hit now
        m.done = true;
    });

    std::vector<int> values(static_cast<std::size_t>(n), 0);
    const auto escaped = run_threads(
        n, [&](int t) { values[static_cast<std::size_t>(t)] = sys.import_module("outer")->value; });

    REQUIRE(escaped.empty());
    CHECK(helper_ok.load() == 1);
    CHECK(inner_saw_outer_initialising.load() == 2);
    CHECK(values == std::vector<int>(static_cast<std::size_t>(n), 8));
    CHECK(runs("outer") == 1);
    CHECK(runs("inner") == 1);
    check_ready(sys, "outer");
    check_ready(sys, "inner");
    CHECK(sys.size() == 2);
    check_quiescent(sys, {"outer", "inner"});
}

// One key reached three ways at once: import_module, import_ref, and get
// (which never imports and returns the module even while it initialises).
// The loader waits until every importer is parked and every get-thread has
// seen the initialising module.
TEMPLATE_LIST_TEST_CASE("one key through import_module, import_ref and get from many threads",
                        "[threaded][import]", importlock_test::scenario_policies) {
    watchdog dog("import_module, import_ref, get");
    const int n = GENERATE(1, 2, 3, 7, 11, 16);
    CAPTURE(n);
    system_t<TestType> sys;
    run_counter runs;
    // Thread t: t % 3 == 0 import_module, 1 import_ref, 2 get.
    int importers = 0;
    int getters = 0;
    for (int t = 0; t < n; ++t) (t % 3 == 2 ? getters : importers)++;
    std::atomic<int> getters_saw_module{0};
    sys.finder().define("shared", [&](test_module& m, importer_t&) {
        runs.record("shared");
        await([&] {
            return sys.waiter_count("shared") == static_cast<std::size_t>(importers - 1) &&
                   getters_saw_module.load() == getters;
        });
        m.value = 5;
        m.done = true;
    });

    std::vector<const test_module*> objects(static_cast<std::size_t>(n), nullptr);
    std::vector<int> done_when_seen(static_cast<std::size_t>(n), -1);
    const auto escaped = run_threads(n, [&](int t) {
        const auto slot = static_cast<std::size_t>(t);
        switch (t % 3) {
            case 0: {
                const auto m = sys.import_module("shared");
                objects[slot] = m.get();
                done_when_seen[slot] = m->done;
                break;
            }
            case 1: {
                test_module& m = sys.import_ref("shared");
                objects[slot] = &m;
                done_when_seen[slot] = m.done;
                break;
            }
            default: {
                std::shared_ptr<test_module> m;
                while ((m = sys.get("shared")) == nullptr) std::this_thread::yield();
                objects[slot] = m.get();
                done_when_seen[slot] = m->done;
                ++getters_saw_module;
                break;
            }
        }
    });

    REQUIRE(escaped.empty());
    CHECK(runs("shared") == 1);
    const test_module* loaded = sys.get("shared").get();
    REQUIRE(loaded != nullptr);
    CHECK(std::count(objects.begin(), objects.end(), loaded) == n);
    for (int t = 0; t < n; ++t) {
        INFO("thread " << t);
        // Importers get the finished module; getters saw it while it initialised.
        CHECK(done_when_seen[static_cast<std::size_t>(t)] == (t % 3 == 2 ? 0 : 1));
    }
    check_ready(sys, "shared");
    CHECK(sys.size() == 1);
    check_quiescent(sys, {"shared"});
}

// Chapter 42.19: importers started while a reload runs wait for it and see the
// reloaded state; the module object never changes.
TEMPLATE_LIST_TEST_CASE("reload concurrent with imports", "[threaded][import][reload]",
                        importlock_test::scenario_policies) {
    watchdog dog("reload concurrent with imports");
    const int n = GENERATE(1, 2, 3, 7, 11, 16);
    CAPTURE(n);
    system_t<TestType> sys;
    run_counter runs;
    std::latch reload_started(1);
    std::atomic<int> initialising_during_reload{-1};
    std::atomic<int> get_during_reload_ok{0};
    sys.finder().define("config", [&](test_module& m, importer_t&) {
        const int run = runs.record("config");
        if (run == 2) {  // the reload
            reload_started.count_down();
            await([&] { return sys.waiter_count("config") == static_cast<std::size_t>(n); });
            initialising_during_reload = sys.is_initializing("config");
            // get still returns the registered (reloading) object.
            if (sys.get("config").get() == &m && sys.contains("config")) ++get_during_reload_ok;
        }
        m.value = run;
        m.done = true;
    });

    const auto original = sys.import_module("config");
    REQUIRE(original->value == 1);

    std::shared_ptr<test_module> reloaded;
    std::thread reloader([&] {
        try {
            reloaded = sys.reload("config");
        } catch (...) {
        }
    });
    reload_started.wait();
    std::vector<const test_module*> objects(static_cast<std::size_t>(n), nullptr);
    std::vector<int> values(static_cast<std::size_t>(n), 0);
    const auto escaped = run_threads(n, [&](int t) {
        const auto slot = static_cast<std::size_t>(t);
        if (t % 2 == 0) {
            const auto m = sys.import_module("config");
            objects[slot] = m.get();
            values[slot] = m->value;
        } else {
            test_module& m = sys.import_ref("config");
            objects[slot] = &m;
            values[slot] = m.value;
        }
    });
    reloader.join();

    REQUIRE(escaped.empty());
    CHECK(reloaded == original);
    CHECK(runs("config") == 2);
    CHECK(original->value == 2);
    CHECK(values == std::vector<int>(static_cast<std::size_t>(n), 2));
    CHECK(std::count(objects.begin(), objects.end(), original.get()) == n);
    CHECK(get_during_reload_ok.load() == 1);
    // Not asserted: is_initializing() during a reload (the header says "its
    // loader is running"; the implementation and CPython's _exec say no).
    CAPTURE(initialising_during_reload.load());
    CHECK(sys.get("config") == original);
    check_ready(sys, "config");
    CHECK(sys.size() == 1);
    check_quiescent(sys, {"config"});
}

// Reloads of one key from many threads run one at a time on the same object.
TEMPLATE_LIST_TEST_CASE("concurrent reloads of one key are serialised", "[threaded][reload]",
                        importlock_test::scenario_policies) {
    watchdog dog("concurrent reloads");
    const int n = GENERATE(1, 2, 3, 7, 11, 16);
    CAPTURE(n);
    system_t<TestType> sys;
    run_counter runs;
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
    sys.finder().define("plugin", [&](test_module& m, importer_t&) {
        const int run = runs.record("plugin");
        if (++inside != 1) ++overlaps;
        // The first reload waits until all the other reloaders are parked.
        if (run == 2) {
            await([&] { return sys.waiter_count("plugin") == static_cast<std::size_t>(n - 1); });
        }
        m.value += 1;
        --inside;
        m.done = true;
    });
    const auto original = sys.import_module("plugin");

    std::vector<const test_module*> objects(static_cast<std::size_t>(n), nullptr);
    const auto escaped = run_threads(
        n, [&](int t) { objects[static_cast<std::size_t>(t)] = sys.reload("plugin").get(); });

    REQUIRE(escaped.empty());
    CHECK(runs("plugin") == n + 1);
    CHECK(original->value == n + 1);
    CHECK(overlaps.load() == 0);
    CHECK(std::count(objects.begin(), objects.end(), original.get()) == n);
    CHECK(sys.get("plugin") == original);
    check_ready(sys, "plugin");
    CHECK(sys.size() == 1);
    check_quiescent(sys, {"plugin"});
}

// Chapter 42.18 (subinterpreters): two systems share no registry, lock or
// wait-for graph. The loader of "k" in `first` waits until "k" was imported
// from `second` by other threads, which would deadlock if the two systems
// shared k's lock (or, under global_lock, the global lock).
TEMPLATE_LIST_TEST_CASE("two instances used from many threads stay independent",
                        "[threaded][import][instances]", importlock_test::scenario_policies) {
    watchdog dog("two instances");
    const int n = GENERATE(2, 3, 7, 11, 16);
    CAPTURE(n);
    system_t<TestType> first;
    system_t<TestType> second;
    run_counter first_runs;
    run_counter second_runs;
    std::latch second_loaded(1);
    first.finder().define("k", [&](test_module& m, importer_t&) {
        first_runs.record("k");
        second_loaded.wait();
        await([&] { return first.waiter_count("k") == static_cast<std::size_t>(n - 1); });
        m.value = 1;
        m.done = true;
    });
    second.finder().define("k", [&](test_module& m, importer_t&) {
        second_runs.record("k");
        // Runs while `first` initialises "k" on another thread.
        await([&] { return first.is_initializing("k"); });
        m.value = 2;
        m.done = true;
        second_loaded.count_down();
    });

    std::vector<const test_module*> from_first(static_cast<std::size_t>(n), nullptr);
    std::vector<const test_module*> from_second(static_cast<std::size_t>(n), nullptr);
    std::vector<int> values_ok(static_cast<std::size_t>(n), 0);
    std::atomic<int> second_busy_while_first_loads{0};
    const auto escaped = run_threads(n, [&](int t) {
        const auto slot = static_cast<std::size_t>(t);
        std::shared_ptr<test_module> a;
        std::shared_ptr<test_module> b;
        if (t == 0) {  // imports from `first` first: its loader waits for `second`
            a = first.import_module("k");
            b = second.import_module("k");
        } else {
            b = second.import_module("k");
            if (first.is_initializing("k")) ++second_busy_while_first_loads;
            a = first.import_module("k");
        }
        from_first[slot] = a.get();
        from_second[slot] = b.get();
        values_ok[slot] = a->value == 1 && b->value == 2;
    });

    REQUIRE(escaped.empty());
    CHECK(first_runs("k") == 1);
    CHECK(second_runs("k") == 1);
    CHECK(values_ok == std::vector<int>(static_cast<std::size_t>(n), 1));
    CHECK(std::count(from_first.begin(), from_first.end(), first.get("k").get()) == n);
    CHECK(std::count(from_second.begin(), from_second.end(), second.get("k").get()) == n);
    CHECK(first.get("k") != second.get("k"));
    // Every thread but 0 imported from `second` while `first` was initialising "k".
    CHECK(second_busy_while_first_loads.load() == n - 1);
    check_quiescent(first, {"k"});
    check_quiescent(second, {"k"});
    // Erasing from one leaves the other alone.
    CHECK(first.erase("k"));
    CHECK_FALSE(first.contains("k"));
    CHECK(second.contains("k"));
    CHECK(first.size() == 0);
    CHECK(second.size() == 1);
}
