// SPDX-License-Identifier: BSL-1.0
// Randomised stress (moodycamel's fuzz tests, abseil's seeded graph tests):
// each round builds a random dependency graph of K keys with forward edges,
// some back edges (cycles, self-imports included) and some keys whose loader
// throws on its first run, then T threads import random roots through
// import_module and import_ref. The end state is checked against the loader
// logs and a reachability oracle, then a single-threaded sweep imports every
// key and checks again.
//
// The seed comes from Catch (--rng-seed); IMPORTLOCK_STRESS_SCALE (an integer,
// default 1) multiplies the rounds and iterations for longer runs.
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
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(IMPORTLOCK_CATCH2_V3)
#include <catch2/catch_get_random_seed.hpp>
#endif

namespace {

using importlock::circular_import_error;
using importlock_test::importer_t;
using importlock_test::is_strict_v;
using importlock_test::numbered_keys;
using importlock_test::run_threads;
using importlock_test::system_t;
using importlock_test::test_module;
using importlock_test::watchdog;

constexpr std::size_t key_count = 60;

using importlock_test::catch_seed;

// Returns IMPORTLOCK_STRESS_SCALE, or 1 when unset or not a positive integer.
int stress_scale() {
    const char* text = std::getenv("IMPORTLOCK_STRESS_SCALE");
    if (text == nullptr) return 1;
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || value < 1 || value > 100000) return 1;
    return static_cast<int>(value);
}

// The thrown by a loader on its first run when the key is marked to fail.
struct injected_failure : std::runtime_error {
    explicit injected_failure(const std::string& key)
        : std::runtime_error("injected failure in " + key) {}
};

// A random dependency graph and what an oracle knows about it.
struct dependency_graph {
    std::vector<std::vector<std::size_t>> deps;  // imported in this order
    std::vector<char> fails_first;               // the loader throws on its first run
    std::vector<char> on_cycle;                  // the key reaches itself
    std::vector<char> reaches_cycle;             // the key reaches a key on a cycle
    std::vector<char> reaches_failure;           // the key reaches a fails_first key
};

// Returns reach[i][j]: j is reachable from i in one or more edges.
std::vector<std::vector<char>> reachability(const std::vector<std::vector<std::size_t>>& deps) {
    const std::size_t k = deps.size();
    std::vector<std::vector<char>> reach(k, std::vector<char>(k, 0));
    for (std::size_t from = 0; from < k; ++from) {
        std::vector<std::size_t> stack(deps[from].begin(), deps[from].end());
        while (!stack.empty()) {
            const std::size_t at = stack.back();
            stack.pop_back();
            if (reach[from][at]) continue;
            reach[from][at] = 1;
            stack.insert(stack.end(), deps[at].begin(), deps[at].end());
        }
    }
    return reach;
}

dependency_graph make_graph(std::mt19937_64& rng, std::size_t k) {
    dependency_graph g;
    g.deps.resize(k);
    g.fails_first.resize(k);
    std::uniform_int_distribution<int> percent(0, 99);
    for (std::size_t i = 0; i < k; ++i) {
        if (i + 1 < k) {
            std::uniform_int_distribution<std::size_t> forward(i + 1, std::min(k - 1, i + 10));
            const int edges = std::uniform_int_distribution<int>(0, 3)(rng);
            for (int e = 0; e < edges; ++e) g.deps[i].push_back(forward(rng));
        }
        if (percent(rng) < 12) {  // a back edge (or a self-import): a cycle
            std::uniform_int_distribution<std::size_t> back(i < 10 ? 0 : i - 10, i);
            g.deps[i].push_back(back(rng));
        }
        std::sort(g.deps[i].begin(), g.deps[i].end());
        g.deps[i].erase(std::unique(g.deps[i].begin(), g.deps[i].end()), g.deps[i].end());
        std::shuffle(g.deps[i].begin(), g.deps[i].end(), rng);
        g.fails_first[i] = percent(rng) < 12;
    }
    const auto reach = reachability(g.deps);
    g.on_cycle.resize(k);
    g.reaches_cycle.resize(k);
    g.reaches_failure.resize(k);
    for (std::size_t i = 0; i < k; ++i) g.on_cycle[i] = reach[i][i];
    for (std::size_t i = 0; i < k; ++i) {
        g.reaches_cycle[i] = g.on_cycle[i];
        g.reaches_failure[i] = g.fails_first[i];
        for (std::size_t j = 0; j < k; ++j) {
            if (!reach[i][j]) continue;
            if (g.on_cycle[j]) g.reaches_cycle[i] = 1;
            if (g.fails_first[j]) g.reaches_failure[i] = 1;
        }
    }
    return g;
}

// What the loaders of one key did; written by any thread.
struct key_log {
    std::atomic<int> runs{0};
    std::atomic<int> successes{0};                 // runs whose loader returned
    std::atomic<std::uint64_t> success_serial{0};  // the object of the last such run
};

// What the workers saw; every counter must stay 0 unless noted.
struct worker_log {
    std::atomic<int> partial_top_level{0};      // a top-level import returned a partial module
    std::atomic<int> partial_off_cycle{0};      // a loader got a partial module not on a cycle
    std::atomic<int> partial_under_strict{0};   // ... under a strict policy
    std::atomic<int> missing_after_success{0};  // imported, yet not registered
    std::atomic<int> circular_off_cycle{0};    // circular_import_error for a root reaching no cycle
    std::atomic<int> circular_not_strict{0};   // circular_import_error under a partial policy
    std::atomic<int> injected_unreachable{0};  // injected_failure from a root reaching none
    std::atomic<int> imports{0};               // successful top-level imports (informative)
    std::atomic<int> failures{0};              // failed top-level imports (informative)
    std::mutex mutex;
    std::vector<std::string> unexpected;  // any other exception
};

// Checks the registry against the loader logs (main thread, no import in flight).
template <class System>
void check_registry(const System& sys, const dependency_graph& g,
                    const std::vector<std::string>& keys, const std::vector<key_log>& logs) {
    using policy = typename System::lock_policy_type;
    std::size_t registered = 0;
    for (std::size_t i = 0; i < keys.size(); ++i) {
        INFO("key " << keys[i] << " (fails first: " << int{g.fails_first[i]}
                    << ", on cycle: " << int{g.on_cycle[i]} << ")");
        const int successes = logs[i].successes.load();
        CHECK(successes <= 1);
        CHECK_FALSE(sys.is_initializing(keys[i]));
        // No erase here: a key is registered iff one run of its loader returned.
        CHECK(sys.contains(keys[i]) == (successes == 1));
        if (sys.contains(keys[i])) {
            ++registered;
            const auto m = sys.get(keys[i]);
            REQUIRE(m != nullptr);
            CHECK(m->done.load());
            CHECK(m->serial == logs[i].success_serial.load());
            if (g.fails_first[i]) CHECK(logs[i].runs.load() >= 2);
            // Under strict nothing that reaches a cycle can ever finish.
            if (is_strict_v<policy>) CHECK_FALSE(g.reaches_cycle[i]);
        }
    }
    CHECK(sys.size() == registered);
    CHECK(sys.lock_count() == 0);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("random dependency graphs imported from many threads", "[threaded][stress]",
                        importlock_test::scenario_policies) {
    watchdog dog("random stress");
    const int threads = GENERATE(2, 4, 8);
    const int scale = stress_scale();
    const unsigned seed = catch_seed();
    INFO("seed " << seed << " (rerun with --rng-seed " << seed << "), scale " << scale
                 << ", threads " << threads);
    constexpr bool strict = is_strict_v<TestType>;
    const auto keys = numbered_keys("s", static_cast<int>(key_count));
    const int rounds = 25 * scale;
    const int iterations = 30 * scale;

    for (int round = 0; round < rounds; ++round) {
        INFO("round " << round);
        const std::uint64_t round_seed = (std::uint64_t{seed} << 32) ^
                                         (static_cast<std::uint64_t>(round) << 8) ^
                                         static_cast<std::uint64_t>(threads);
        std::mt19937_64 graph_rng(round_seed);
        const dependency_graph g = make_graph(graph_rng, key_count);
        system_t<TestType> sys;
        std::vector<key_log> logs(key_count);
        worker_log seen;
        for (std::size_t i = 0; i < key_count; ++i) {
            sys.finder().define(keys[i], [&, i](test_module& m, importer_t& imp) {
                const int run = logs[i].runs.fetch_add(1) + 1;
                std::this_thread::yield();  // only widens windows
                if (g.fails_first[i] && run == 1) throw injected_failure(keys[i]);
                for (std::size_t e = 0; e < g.deps[i].size(); ++e) {
                    const std::size_t d = g.deps[i][e];
                    bool done = false;
                    if ((static_cast<std::size_t>(run) + e) % 2 == 0) {
                        done = imp.import_module(keys[d])->done;
                    } else {
                        done = imp.import_ref(keys[d]).done;
                    }
                    if (!done) {
                        if (!g.on_cycle[d]) ++seen.partial_off_cycle;
                        if (strict) ++seen.partial_under_strict;
                    }
                    std::this_thread::yield();
                }
                logs[i].success_serial = m.serial;
                ++logs[i].successes;
                m.done = true;
            });
        }

        // Each worker's seed derives from the round's generator, hence from the Catch seed.
        std::vector<std::uint64_t> worker_seeds(static_cast<std::size_t>(threads));
        for (auto& worker_seed : worker_seeds) worker_seed = graph_rng();
        // Half the roots are keys on cycles, so that threads meet in them.
        std::vector<std::size_t> cyclic;
        for (std::size_t i = 0; i < key_count; ++i) {
            if (g.on_cycle[i]) cyclic.push_back(i);
        }
        std::barrier start(threads);
        const auto escaped = run_threads(threads, [&](int t) {
            std::mt19937_64 rng(worker_seeds[static_cast<std::size_t>(t)]);
            std::uniform_int_distribution<std::size_t> pick(0, key_count - 1);
            start.arrive_and_wait();
            for (int it = 0; it < iterations; ++it) {
                std::size_t root = pick(rng);
                if (!cyclic.empty() && rng() % 2 == 0) root = cyclic[rng() % cyclic.size()];
                try {
                    bool done = false;
                    if (rng() % 2 == 0) {
                        done = sys.import_module(keys[root])->done;
                    } else {
                        done = sys.import_ref(keys[root]).done;
                    }
                    if (!done) ++seen.partial_top_level;
                    if (!sys.contains(keys[root])) ++seen.missing_after_success;
                    ++seen.imports;
                } catch (const injected_failure&) {
                    if (!g.reaches_failure[root]) ++seen.injected_unreachable;
                    ++seen.failures;
                } catch (const circular_import_error&) {
                    if (!strict) ++seen.circular_not_strict;
                    if (!g.reaches_cycle[root]) ++seen.circular_off_cycle;
                    ++seen.failures;
                } catch (const std::exception& e) {
                    std::lock_guard lock(seen.mutex);
                    seen.unexpected.push_back(keys[root] + ": " + e.what());
                }
            }
        });
        REQUIRE(escaped.empty());
        CHECK(seen.unexpected.empty());
        CHECK(seen.partial_top_level.load() == 0);
        CHECK(seen.partial_off_cycle.load() == 0);
        CHECK(seen.partial_under_strict.load() == 0);
        CHECK(seen.missing_after_success.load() == 0);
        CHECK(seen.circular_off_cycle.load() == 0);
        CHECK(seen.circular_not_strict.load() == 0);
        CHECK(seen.injected_unreachable.load() == 0);
        CHECK(seen.imports.load() + seen.failures.load() == threads * iterations);
        check_registry(sys, g, keys, logs);

        // Sweep: import every key until it loads (each failing attempt uses up
        // one first run) or, under strict, until it meets its cycle.
        for (std::size_t i = 0; i < key_count; ++i) {
            for (std::size_t attempt = 0; attempt <= key_count + 1; ++attempt) {
                try {
                    (void)sys.import_module(keys[i]);
                    break;
                } catch (const injected_failure&) {
                } catch (const circular_import_error&) {
                    break;
                }
            }
            INFO("sweep of " << keys[i]);
            CHECK(sys.contains(keys[i]) == (!strict || !g.reaches_cycle[i]));
        }
        CHECK(seen.partial_off_cycle.load() == 0);
        CHECK(seen.partial_under_strict.load() == 0);
        check_registry(sys, g, keys, logs);
    }
}
