// SPDX-License-Identifier: BSL-1.0
// Soak: 16 threads on a 1000-key random dependency graph with cycles run every
// operation at once (import_module, import_ref, handles, timed imports,
// reload, erase, block, clear, and the queries snapshot, dependencies,
// dependents, lock_count and the DOT graph) with injected loader failures, under a
// watchdog. At quiescence: nothing initialising, every registered module
// initialised, each successful initialisation counted once by the loader and
// once by the observer (reloads apart), no lock and no waiter left.
// IMPORTLOCK_STRESS_SCALE multiplies the operations per thread.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/watchdog.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

using importlock_test::watchdog;

constexpr int key_count = 1000;
constexpr int thread_count = 16;

struct mod {
    std::atomic<int> key{-1};
};

// The policies under stress. singleflight_per_key_locks is left out here:
// it rethrows one exception object in many threads, and libstdc++'s
// reference count for it is not instrumented, so ThreadSanitizer reports its
// destruction as a race (a false positive; test_threaded_failure and
// test_extensions cover singleflight without concurrent destruction).
using stressed_policies = std::tuple<importlock::per_key_locks, importlock::strict_per_key_locks,
                                     importlock::global_lock, importlock::sharded_per_key_locks>;

int stress_scale() {
    const char* text = std::getenv("IMPORTLOCK_STRESS_SCALE");
    const int scale = text != nullptr ? std::atoi(text) : 1;
    return scale > 0 ? scale : 1;
}

// Counts successful initialisations as the observer sees them.
struct counting_observer : importlock::import_observer<int> {
    explicit counting_observer(std::size_t n) : ends(n) {}
    void on_import_end(const int& key, std::chrono::nanoseconds) override {
        ends[static_cast<std::size_t>(key)].fetch_add(1, std::memory_order_relaxed);
    }
    std::vector<std::atomic<int>> ends;
};

}  // namespace

TEMPLATE_LIST_TEST_CASE("every operation at once on a random graph with cycles",
                        "[stress][threaded]", stressed_policies) {
    watchdog dog("stress all operations", std::chrono::seconds(600));
    const auto seed = importlock_test::catch_seed();
    INFO("seed " << seed);
    std::mt19937 graph_rng(seed);

    importlock::basic_import_system<int, mod, TestType> system;
    auto observer = std::make_shared<counting_observer>(key_count);
    system.set_observer(observer);

    // Forward edges mostly, some back edges (cycles); 5% of keys fail on odd runs.
    std::vector<std::vector<int>> deps(key_count);
    std::vector<bool> flaky(key_count);
    for (int k = 0; k < key_count; ++k) {
        const int edges = static_cast<int>(graph_rng() % 3);
        for (int e = 0; e < edges; ++e) {
            const bool back = graph_rng() % 10 == 0;
            const int span = static_cast<int>(graph_rng() % 50) + 1;
            const int d = back ? k - span : k + span;
            if (d >= 0 && d < key_count) deps[static_cast<std::size_t>(k)].push_back(d);
        }
        flaky[static_cast<std::size_t>(k)] = graph_rng() % 20 == 0;
    }

    std::vector<std::atomic<int>> runs(key_count);         // loader starts
    std::vector<std::atomic<int>> completions(key_count);  // imports whose loader returned
    std::vector<std::atomic<int>> reload_runs(key_count);  // loader starts during a reload
    for (int k = 0; k < key_count; ++k) {
        system.finder().define(k, [&, k](mod& m, importlock::importer<int, mod>& imp) {
            const auto index = static_cast<std::size_t>(k);
            const bool reloading = m.key.load() == k;  // a reload runs on a finished module
            const int run = ++(reloading ? reload_runs : runs)[index];
            for (int d : deps[index]) imp.import_module(d);
            if (flaky[index] && run % 2 == 1) throw std::runtime_error("injected");
            m.key = k;
            if (!reloading) ++completions[index];
        });
    }

    const int operations = 2000 * stress_scale();
    std::vector<std::thread> threads;
    std::atomic<long> unexpected{0};
    for (int t = 0; t < thread_count; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(seed + static_cast<std::uint32_t>(t) + 1);
            for (int i = 0; i < operations; ++i) {
                const int k = static_cast<int>(rng() % key_count);
                try {
                    switch (rng() % 22) {
                        case 0: system.reload(k); break;
                        case 1: system.erase(k); break;
                        case 2:
                            system.block(k);
                            system.erase(k);
                            break;
                        case 3: system.import_module_for(k, std::chrono::microseconds(50)); break;
                        case 4: (void)system.handle(k).get(); break;
                        case 5:
                            if (t == 0 && i % 200 == 0) system.clear();
                            break;
                        case 6:
                        case 7:
                        case 8: (void)system.import_ref(k); break;
                        case 20: {
                            // A snapshot pins uncontended claims while it reads them.
                            const importlock::import_snapshot snap = system.snapshot();
                            for (const auto& lock : snap.locks) {
                                if (lock.depth != 0 && lock.owner == std::thread::id{}) {
                                    ++unexpected;
                                }
                            }
                            break;
                        }
                        case 21:
                            // Dependencies are written by loaders without the state mutex.
                            (void)system.dependencies(k);
                            (void)system.dependents(k);
                            (void)system.lock_count();
                            if (t == 1 && i % 100 == 0) {
                                std::ostringstream dot;
                                system.write_dependency_dot(dot);
                            }
                            break;
                        default: (void)system.import_module(k); break;
                    }
                } catch (const importlock::import_error&) {
                    // timeouts, cycles (strict), blocked keys, erase during
                    // initialisation, reload of a key not loaded: all allowed
                } catch (const std::runtime_error& e) {
                    if (std::string(e.what()) != "injected") ++unexpected;
                } catch (...) {
                    ++unexpected;
                }
            }
        });
    }
    for (auto& thread : threads) thread.join();
    system.set_observer(nullptr);

    REQUIRE(unexpected == 0);
    REQUIRE(system.lock_count() == 0);
    REQUIRE(system.snapshot().empty());
    std::size_t registered = 0;
    for (int k = 0; k < key_count; ++k) {
        const auto index = static_cast<std::size_t>(k);
        INFO("key " << k);
        REQUIRE_FALSE(system.is_initializing(k));
        if (system.contains(k)) {
            ++registered;
            REQUIRE(system.get(k)->key == k);  // registered means initialised
        }
        // Every loader that returned during an import made exactly one
        // successful initialisation, which the observer saw once.
        REQUIRE(completions[index].load() == observer->ends[index].load());
        REQUIRE(completions[index].load() <= runs[index].load());
    }
    REQUIRE(registered == system.size());

    // The system still works: a final import of every key succeeds or fails
    // only through the graph (strict cycles) or the injected failures.
    int finished = 0;
    for (int k = 0; k < key_count; ++k) {
        try {
            if (system.import_module(k)->key.load() == k) ++finished;
        } catch (const importlock::circular_import_error&) {
        } catch (const std::runtime_error&) {
        }
    }
    REQUIRE(finished > 0);
    REQUIRE(system.lock_count() == 0);
}
