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
        sys.finder().define("k.child" + std::to_string(i), [](race_module& m, importer&) {
            m.done.store(true);
        });
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
                    m = sys.import_module_until("k",
                                                std::chrono::steady_clock::now() + std::chrono::hours(1));
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
