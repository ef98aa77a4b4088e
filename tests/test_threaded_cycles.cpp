// SPDX-License-Identifier: BSL-1.0
// Cross-thread import cycles: CPython's test_importlib/test_locks.py
// DeadlockAvoidanceTests and test_threaded_import's circular imports.
//
// Every cycle is closed deliberately: each thread first holds its key (a
// barrier inside the loaders), and where the test says which thread closes
// the cycle, the others are first seen parked (waiter_count).
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/policies.hpp"
#include "support/scenario.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using importlock::circular_import_error;
using importlock::per_key_locks;
using importlock::strict_per_key_locks;
using importlock_test::await;
using importlock_test::check_quiescent;
using importlock_test::check_ready;
using importlock_test::importer_t;
using importlock_test::is_strict_v;
using importlock_test::numbered_keys;
using importlock_test::run_counter;
using importlock_test::run_threads;
using importlock_test::system_t;
using importlock_test::test_module;
using importlock_test::waiters_on;
using importlock_test::watchdog;

using chain_t = std::vector<std::string>;

// What one thread's top-level import ended with.
struct thread_result {
    bool finished = false;      // returned a fully initialised module
    bool circular = false;      // threw circular_import_error
    chain_t chain;              // its chain()
    std::string other_failure;  // any other exception
};

// Runs `import` and records how it ended.
template <class Import>
thread_result run_import(Import import) {
    thread_result result;
    try {
        const std::shared_ptr<test_module> m = import();
        result.finished = m != nullptr && m->done;
    } catch (const circular_import_error& e) {
        result.circular = true;
        result.chain = e.chain();
    } catch (const std::exception& e) {
        result.other_failure = e.what();
    }
    return result;
}

// Records, from any thread, which loader saw which module partially initialised.
class partial_log {
public:
    void record(const std::string& loader_key, const std::string& seen_key) {
        std::lock_guard lock(mutex_);
        entries_.push_back(loader_key + " saw " + seen_key);
    }
    std::vector<std::string> entries() const {
        std::lock_guard lock(mutex_);
        return entries_;
    }

private:
    mutable std::mutex mutex_;
    std::vector<std::string> entries_;
};

// Returns the chain {keys[first], keys[first+1], ..., keys[first]} around a ring.
chain_t ring_chain(const std::vector<std::string>& keys, std::size_t first) {
    chain_t chain;
    for (std::size_t i = 0; i <= keys.size(); ++i) chain.push_back(keys[(first + i) % keys.size()]);
    return chain;
}

}  // namespace

// test_locks.py's two-thread deadlock: thread 0 imports a, thread 1 imports b;
// each loader holds its key (barrier) and imports the other. With `closer`
// the loader of a waits until thread 1 is parked on a, so thread 0 closes the
// cycle; otherwise whoever comes second does.
TEST_CASE("per_key_locks: a cross-thread cycle a<->b gives exactly one thread a partial module",
          "[threaded][cycle]") {
    watchdog dog("a<->b, per_key_locks");
    const bool forced = GENERATE(false, true);
    CAPTURE(forced);
    system_t<per_key_locks> sys;
    run_counter runs;
    partial_log partials;
    std::barrier both_hold(2);
    std::atomic<int> partial_is_final_object{0};
    const auto define = [&](const std::string& key, const std::string& other) {
        sys.finder().define(key, [&, key, other](test_module& m, importer_t& imp) {
            runs.record(key);
            both_hold.arrive_and_wait();
            if (forced && key == "a") await([&] { return sys.waiter_count("a") == 1; });
            const auto dep = imp.import_module(other);
            if (!dep->done) {
                partials.record(key, other);
                if (dep == sys.get(other)) ++partial_is_final_object;
            }
            m.done = true;
        });
    };
    define("a", "b");
    define("b", "a");

    std::vector<thread_result> results(2);
    const auto escaped = run_threads(2, [&](int t) {
        const std::string key = t == 0 ? "a" : "b";
        results[static_cast<std::size_t>(t)] = run_import([&] { return sys.import_module(key); });
    });

    REQUIRE(escaped.empty());
    CHECK(results[0].finished);
    CHECK(results[1].finished);
    const auto seen = partials.entries();
    REQUIRE(seen.size() == 1);
    if (forced) CHECK(seen.front() == "a saw b");
    CHECK(partial_is_final_object.load() == 1);
    CHECK(runs("a") == 1);
    CHECK(runs("b") == 1);
    check_ready(sys, "a");
    check_ready(sys, "b");
    CHECK(sys.size() == 2);
    check_quiescent(sys, {"a", "b"});
}

// The same cycle under strict_per_key_locks: the thread that closes it gets
// circular_import_error naming {its key, the other, its key}; its loader's
// failure unregisters its key, and the other thread, parked on that key,
// imports it again (the loaders close the cycle on their first run only) and
// completes normally.
TEST_CASE("strict_per_key_locks: a cross-thread cycle a<->b throws in exactly one thread",
          "[threaded][cycle]") {
    watchdog dog("a<->b, strict_per_key_locks");
    const bool forced = GENERATE(false, true);
    CAPTURE(forced);
    system_t<strict_per_key_locks> sys;
    run_counter runs;
    std::barrier both_hold(2);
    std::atomic<int> partial_seen{0};
    std::mutex serial_mutex;
    std::vector<std::uint64_t> serials_a;
    std::vector<std::uint64_t> serials_b;
    const auto define = [&](const std::string& key, const std::string& other,
                            std::vector<std::uint64_t>& serials) {
        sys.finder().define(key, [&, key, other](test_module& m, importer_t& imp) {
            {
                std::lock_guard lock(serial_mutex);
                serials.push_back(m.serial);
            }
            if (runs.record(key) == 1) {
                both_hold.arrive_and_wait();
                if (forced && key == "a") await([&] { return sys.waiter_count("a") == 1; });
                if (!imp.import_module(other)->done) ++partial_seen;
            }
            m.done = true;
        });
    };
    define("a", "b", serials_a);
    define("b", "a", serials_b);

    std::vector<thread_result> results(2);
    const auto escaped = run_threads(2, [&](int t) {
        const std::string key = t == 0 ? "a" : "b";
        results[static_cast<std::size_t>(t)] = run_import([&] { return sys.import_module(key); });
    });

    REQUIRE(escaped.empty());
    CHECK(results[0].other_failure.empty());
    CHECK(results[1].other_failure.empty());
    CHECK(partial_seen.load() == 0);
    REQUIRE(results[0].circular + results[1].circular == 1);
    const std::size_t failed = results[0].circular ? 0 : 1;
    const std::string failed_key = failed == 0 ? "a" : "b";
    const std::string other_key = failed == 0 ? "b" : "a";
    if (forced) CHECK(failed == 0);
    CHECK(results[failed].chain == chain_t{failed_key, other_key, failed_key});
    CHECK(results[1 - failed].finished);
    // The failed key's loader ran again (on the other thread), on a new object.
    CHECK(runs(failed_key) == 2);
    CHECK(runs(other_key) == 1);
    const auto& failed_serials = failed_key == "a" ? serials_a : serials_b;
    REQUIRE(failed_serials.size() == 2);
    CHECK(failed_serials[0] != failed_serials[1]);
    REQUIRE(sys.get(failed_key) != nullptr);
    CHECK(sys.get(failed_key)->serial == failed_serials[1]);
    // The thread that got the error imports its key again: now a plain hit.
    CHECK(sys.import_module(failed_key)->done);
    CHECK(runs(failed_key) == 2);
    check_ready(sys, "a");
    check_ready(sys, "b");
    CHECK(sys.size() == 2);
    check_quiescent(sys, {"a", "b"});
}

// test_locks.py's DeadlockAvoidanceTests with NTHREADS: thread i holds ring
// key i (a barrier of n inside the loaders) before importing key (i+1) mod n.
// With `forced`, loader 0 waits until the n-1 others are parked, so thread 0
// closes the ring. Strict loaders close the ring on their first run only, so
// the thread parked on the failed key imports it again and the ring unwinds.
TEMPLATE_LIST_TEST_CASE("a ring of n threads each holding its key and importing the next",
                        "[threaded][cycle]", importlock_test::per_key_policies) {
    watchdog dog("ring of threads");
    const int n = GENERATE(3, 10, 16);
    const bool forced = GENERATE(false, true);
    CAPTURE(n, forced);
    const auto keys = numbered_keys("ring", n);
    const auto count = static_cast<std::size_t>(n);
    system_t<TestType> sys;
    run_counter runs;
    partial_log partials;
    std::barrier all_hold(n);
    for (std::size_t i = 0; i < count; ++i) {
        sys.finder().define(keys[i], [&, i](test_module& m, importer_t& imp) {
            const bool first = runs.record(keys[i]) == 1;
            if (first) {
                all_hold.arrive_and_wait();
                if (forced && i == 0) {
                    await([&] { return waiters_on(sys, keys) == count - 1; });
                }
                const auto& next = keys[(i + 1) % count];
                if (!imp.import_module(next)->done) partials.record(keys[i], next);
            }
            m.done = true;
        });
    }

    std::vector<thread_result> results(count);
    const auto escaped = run_threads(n, [&](int t) {
        const auto slot = static_cast<std::size_t>(t);
        results[slot] = run_import([&] { return sys.import_module(keys[slot]); });
    });

    REQUIRE(escaped.empty());
    std::vector<std::size_t> failed;
    for (std::size_t t = 0; t < count; ++t) {
        INFO("thread " << t);
        CHECK(results[t].other_failure.empty());
        if (results[t].circular) {
            failed.push_back(t);
        } else {
            CHECK(results[t].finished);
        }
    }
    if constexpr (is_strict_v<TestType>) {
        CHECK(partials.entries().empty());
        REQUIRE(failed.size() == 1);
        const std::size_t closer = failed.front();
        if (forced) CHECK(closer == 0);
        CHECK(results[closer].chain.size() == count + 1);
        CHECK(results[closer].chain == ring_chain(keys, closer));
        for (std::size_t i = 0; i < count; ++i) {
            INFO("key " << keys[i]);
            CHECK(runs(keys[i]) == (i == closer ? 2 : 1));
        }
    } else {
        CHECK(failed.empty());
        const auto seen = partials.entries();
        REQUIRE(seen.size() == 1);
        if (forced) CHECK(seen.front() == keys[0] + " saw " + keys[1]);
        for (const auto& key : keys) CHECK(runs(key) == 1);
    }
    for (const auto& key : keys) check_ready(sys, key);
    CHECK(sys.size() == count);
    check_quiescent(sys, keys);
}

// A cycle that runs through two keys per thread: thread 1 imports A whose
// loader imports C; thread 2 imports B whose loader imports D; C imports B and
// D imports A. Both threads first hold A and B (barrier), then C and D
// (barrier); C's loader then waits until thread 2 is parked on A, so thread 1
// closes the cycle when C imports B. C and D close the cycle on their first
// run only.
TEMPLATE_LIST_TEST_CASE("a two-thread cycle through four keys: A->C->B->D->A", "[threaded][cycle]",
                        importlock_test::per_key_policies) {
    watchdog dog("A->C->B->D->A");
    system_t<TestType> sys;
    run_counter runs;
    partial_log partials;
    std::barrier hold_a_and_b(2);
    std::barrier hold_c_and_d(2);
    const auto define = [&](const std::string& key, const std::string& dependency,
                            bool closes_cycle) {
        sys.finder().define(key,
                            [&, key, dependency, closes_cycle](test_module& m, importer_t& imp) {
                                const bool first = runs.record(key) == 1;
                                if (first)
                                    (closes_cycle ? hold_c_and_d : hold_a_and_b).arrive_and_wait();
                                if (first && key == "C")
                                    await([&] { return sys.waiter_count("A") == 1; });
                                if (first || !closes_cycle) {
                                    if (!imp.import_module(dependency)->done)
                                        partials.record(key, dependency);
                                }
                                m.done = true;
                            });
    };
    define("A", "C", false);
    define("B", "D", false);
    define("C", "B", true);
    define("D", "A", true);

    std::vector<thread_result> results(2);
    const auto escaped = run_threads(2, [&](int t) {
        const std::string key = t == 0 ? "A" : "B";
        results[static_cast<std::size_t>(t)] = run_import([&] { return sys.import_module(key); });
    });

    REQUIRE(escaped.empty());
    CHECK(results[0].other_failure.empty());
    CHECK(results[1].other_failure.empty());
    CHECK(results[1].finished);
    const std::vector<std::string> keys{"A", "B", "C", "D"};
    if constexpr (is_strict_v<TestType>) {
        CHECK(partials.entries().empty());
        REQUIRE(results[0].circular);
        const chain_t& chain = results[0].chain;
        REQUIRE(chain.size() >= 3);
        CHECK(chain.front() == chain.back());
        CHECK(std::find(chain.begin(), chain.end(), "B") != chain.end());
        // The import cycle as seen from thread 1, starting at the key thread 2
        // waits for: A imports C, C imports B, B (on thread 2) imports D, D
        // imports A. Naming only the locks ({"A", "B", "A"}) would say that A
        // imports B, which no loader does.
        CHECK(chain == chain_t{"A", "C", "B", "D", "A"});
        // C failed, then A; thread 2, parked on A, imported both again.
        CHECK(runs("A") == 2);
        CHECK(runs("C") == 2);
        CHECK(runs("B") == 1);
        CHECK(runs("D") == 1);
    } else {
        CHECK(results[0].finished);
        CHECK(partials.entries() == std::vector<std::string>{"C saw B"});
        for (const auto& key : keys) CHECK(runs(key) == 1);
    }
    for (const auto& key : keys) check_ready(sys, key);
    CHECK(sys.size() == 4);
    check_quiescent(sys, keys);
}

// A same-thread cycle inside a cross-thread wait: thread 0 imports X while
// n-1 threads are parked on X's lock; X's loader imports Y, whose loader
// imports X on the same thread. The re-entrant import gets the partial X
// (circular_import_error under strict, which Y's loader tolerates here); the
// parked threads then get the finished X.
TEMPLATE_LIST_TEST_CASE("a same-thread cycle while other threads wait on the key",
                        "[threaded][cycle]", importlock_test::scenario_policies) {
    watchdog dog("same-thread cycle inside a cross-thread wait");
    const int n = GENERATE(2, 3, 7, 11, 16);
    CAPTURE(n);
    system_t<TestType> sys;
    run_counter runs;
    partial_log partials;
    std::mutex chain_mutex;
    std::vector<chain_t> chains;
    std::thread::id x_thread;
    std::thread::id y_thread;
    sys.finder().define("X", [&](test_module& m, importer_t& imp) {
        runs.record("X");
        x_thread = std::this_thread::get_id();
        await([&] { return sys.waiter_count("X") == static_cast<std::size_t>(n - 1); });
        if (!imp.import_module("Y")->done) partials.record("X", "Y");
        m.done = true;
    });
    sys.finder().define("Y", [&](test_module& m, importer_t& imp) {
        runs.record("Y");
        y_thread = std::this_thread::get_id();
        try {
            const auto x = imp.import_module("X");
            if (!x->done) partials.record("Y", "X");
        } catch (const circular_import_error& e) {
            std::lock_guard lock(chain_mutex);
            chains.push_back(e.chain());
        }
        m.done = true;
    });

    std::vector<thread_result> results(static_cast<std::size_t>(n));
    const auto escaped = run_threads(n, [&](int t) {
        results[static_cast<std::size_t>(t)] = run_import([&] { return sys.import_module("X"); });
    });

    REQUIRE(escaped.empty());
    for (const auto& result : results) {
        CHECK(result.finished);
        CHECK_FALSE(result.circular);
        CHECK(result.other_failure.empty());
    }
    CHECK(x_thread == y_thread);
    CHECK(runs("X") == 1);
    CHECK(runs("Y") == 1);
    if constexpr (is_strict_v<TestType>) {
        CHECK(partials.entries().empty());
        CHECK(chains == std::vector<chain_t>{{"X", "Y", "X"}});
    } else {
        CHECK(partials.entries() == std::vector<std::string>{"Y saw X"});
        CHECK(chains.empty());
    }
    check_ready(sys, "X");
    check_ready(sys, "Y");
    CHECK(sys.size() == 2);
    check_quiescent(sys, {"X", "Y"});
}

// The strict version where the loaders let the error propagate: every thread
// parked on X retries the import itself and meets its own same-thread cycle;
// no thread receives another's exception and nothing stays registered.
TEST_CASE("strict_per_key_locks: every waiter retrying a same-thread cycle gets its own error",
          "[threaded][cycle]") {
    watchdog dog("strict same-thread cycle, propagating");
    const int n = GENERATE(1, 2, 3, 7, 11, 16);
    CAPTURE(n);
    system_t<strict_per_key_locks> sys;
    run_counter runs;
    sys.finder().define("X", [&](test_module& m, importer_t& imp) {
        if (runs.record("X") == 1) {
            await([&] { return sys.waiter_count("X") == static_cast<std::size_t>(n - 1); });
        }
        (void)imp.import_module("Y");
        m.done = true;
    });
    sys.finder().define("Y", [&](test_module& m, importer_t& imp) {
        runs.record("Y");
        (void)imp.import_module("X");
        m.done = true;
    });

    std::vector<thread_result> results(static_cast<std::size_t>(n));
    const auto escaped = run_threads(n, [&](int t) {
        results[static_cast<std::size_t>(t)] = run_import([&] { return sys.import_module("X"); });
    });

    REQUIRE(escaped.empty());
    for (const auto& result : results) {
        CHECK(result.circular);
        CHECK(result.chain == chain_t{"X", "Y", "X"});
        CHECK(result.other_failure.empty());
    }
    CHECK(runs("X") == n);
    CHECK(runs("Y") == n);
    CHECK_FALSE(sys.contains("X"));
    CHECK_FALSE(sys.contains("Y"));
    CHECK(sys.size() == 0);
    check_quiescent(sys, {"X", "Y"});
}

// A reload that would close a cross-thread cycle: thread 1 reloads b, whose
// loader imports a and parks on it; thread 0, inside a's loader, then reloads
// b. Waiting would deadlock, so that reload throws circular_import_error
// under every per-key policy (a reload has no partial module to offer).
TEMPLATE_LIST_TEST_CASE("a reload that would close a cross-thread cycle throws",
                        "[threaded][cycle][reload]", importlock_test::per_key_policies) {
    watchdog dog("reload closing a cycle");
    system_t<TestType> sys;
    run_counter runs;
    std::barrier both_hold(2);
    std::mutex chain_mutex;
    std::vector<chain_t> chains;
    std::atomic<int> other_failures{0};
    sys.finder().define("b", [&](test_module& m, importer_t& imp) {
        if (runs.record("b") == 2) {  // the reload
            both_hold.arrive_and_wait();
            if (!imp.import_module("a")->done) ++other_failures;
        }
        m.done = true;
    });
    sys.finder().define("a", [&](test_module& m, importer_t&) {
        runs.record("a");
        both_hold.arrive_and_wait();
        await([&] { return sys.waiter_count("a") == 1; });
        try {
            (void)sys.reload("b");
        } catch (const circular_import_error& e) {
            std::lock_guard lock(chain_mutex);
            chains.push_back(e.chain());
        } catch (...) {
            ++other_failures;
        }
        m.done = true;
    });
    const auto b = sys.import_module("b");

    std::vector<int> finished(2, 0);
    const auto escaped = run_threads(2, [&](int t) {
        if (t == 0) {
            finished[0] = sys.import_module("a")->done;
        } else {
            finished[1] = sys.reload("b") == b;
        }
    });

    REQUIRE(escaped.empty());
    CHECK(finished == std::vector<int>{1, 1});
    CHECK(other_failures.load() == 0);
    CHECK(chains == std::vector<chain_t>{{"a", "b", "a"}});
    CHECK(runs("a") == 1);
    CHECK(runs("b") == 2);
    check_ready(sys, "a");
    check_ready(sys, "b");
    CHECK(sys.size() == 2);
    check_quiescent(sys, {"a", "b"});
}

// Under global_lock a cross-thread cycle cannot form: while one thread runs
// a's loader the other is parked on the global lock, so the whole cycle
// a->b->a runs on one thread (a same-thread partial module) and the other
// thread then gets the finished module.
TEST_CASE("global_lock: a<->b imported from two threads never forms a cross-thread cycle",
          "[threaded][cycle]") {
    watchdog dog("a<->b, global_lock");
    system_t<importlock::global_lock> sys;
    run_counter runs;
    partial_log partials;
    std::mutex ids_mutex;
    std::vector<std::thread::id> loader_threads;
    const auto define = [&](const std::string& key, const std::string& other) {
        sys.finder().define(key, [&, key, other](test_module& m, importer_t& imp) {
            {
                std::lock_guard lock(ids_mutex);
                loader_threads.push_back(std::this_thread::get_id());
            }
            // The first loader waits until the other thread is parked on the global lock.
            if (runs.record(key) == 1 && !sys.is_initializing(other)) {
                await([&] { return sys.waiter_count(key) == 1; });
            }
            if (!imp.import_module(other)->done) partials.record(key, other);
            m.done = true;
        });
    };
    define("a", "b");
    define("b", "a");

    std::vector<thread_result> results(2);
    const auto escaped = run_threads(2, [&](int t) {
        const std::string key = t == 0 ? "a" : "b";
        results[static_cast<std::size_t>(t)] = run_import([&] { return sys.import_module(key); });
    });

    REQUIRE(escaped.empty());
    CHECK(results[0].finished);
    CHECK(results[1].finished);
    REQUIRE(loader_threads.size() == 2);
    CHECK(loader_threads[0] == loader_threads[1]);
    const auto seen = partials.entries();
    REQUIRE(seen.size() == 1);
    CHECK((seen.front() == "b saw a" || seen.front() == "a saw b"));
    CHECK(runs("a") == 1);
    CHECK(runs("b") == 1);
    check_ready(sys, "a");
    check_ready(sys, "b");
    CHECK(sys.size() == 2);
    check_quiescent(sys, {"a", "b"});
}

// The state is sharded by key hash (detail/import_state.hpp): a thread's
// import stack spans shards, and the cycle chain is read from the frames of
// the threads in the cycle, not from one shard. Thread 1 imports p0 -> ... ->
// p5 and thread 2 q0 -> ... -> q5 (12 keys over the 8 shards of
// sharded_strict_per_key_locks); both
// hold their six keys (barrier); q5 then imports p0 and parks, and p5, once it
// sees that, imports q0 and closes the cycle. The chain names all 12 imports.
// p5 and q5 close the cycle on their first run only (thread 2 then imports
// the p chain again, from q5).
TEST_CASE("a cycle through two six-key stacks spread over the shards names every import",
          "[threaded][cycle][shards]") {
    watchdog dog("two six-key stacks");
    system_t<importlock_test::sharded_strict_per_key_locks> sys;
    run_counter runs;
    std::barrier all_held(2);
    const auto name = [](char side, int i) { return std::string(1, side) + std::to_string(i); };
    for (char side : {'p', 'q'}) {
        for (int i = 0; i < 6; ++i) {
            sys.finder().define(name(side, i), [&, side, i](test_module& m, importer_t& imp) {
                const bool first = runs.record(name(side, i)) == 1;
                if (i < 5) {
                    imp.import_module(name(side, i + 1));
                } else if (first) {
                    all_held.arrive_and_wait();
                    if (side == 'p') await([&] { return sys.waiter_count("p0") == 1; });
                    imp.import_module(name(side == 'p' ? 'q' : 'p', 0));
                }
                m.done = true;
            });
        }
    }
    std::vector<thread_result> results(2);
    const auto escaped = run_threads(2, [&](int t) {
        results[static_cast<std::size_t>(t)] =
            run_import([&] { return sys.import_module(t == 0 ? "p0" : "q0"); });
    });
    REQUIRE(escaped.empty());
    REQUIRE(results[0].circular);
    CHECK(results[0].chain ==
          chain_t{"p0", "p1", "p2", "p3", "p4", "p5", "q0", "q1", "q2", "q3", "q4", "q5", "p0"});
    CHECK(results[1].finished);  // q5 got p0 once thread 1 unwound
    CHECK(runs("p0") == 2);
    CHECK(runs("q0") == 1);
    CHECK(sys.lock_count() == 0);
}

// A same-thread cycle whose stack also holds another system's import: A's
// a1 imports B's b1, which imports A's a2, which imports a1 again. A's chain
// holds A's imports only, read across A's shards past B's frame.
TEST_CASE("a re-entry chain skips the frames of another system on the same thread",
          "[cycle][shards]") {
    system_t<importlock_test::sharded_strict_per_key_locks> a;
    system_t<importlock_test::sharded_strict_per_key_locks> b;
    a.finder().define("a1", [&](test_module&, importer_t&) { b.import_module("b1"); });
    b.finder().define("b1", [&](test_module&, importer_t&) { a.import_module("a2"); });
    a.finder().define("a2", [&](test_module&, importer_t& imp) { imp.import_module("a1"); });
    try {
        a.import_module("a1");
        FAIL("no circular_import_error");
    } catch (const circular_import_error& e) {
        CHECK(e.chain() == chain_t{"a1", "a2", "a1"});
    }
    CHECK(a.lock_count() == 0);
    CHECK(b.lock_count() == 0);
    CHECK_FALSE(a.contains("a1"));
    CHECK_FALSE(b.contains("b1"));
}
