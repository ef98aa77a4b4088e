// SPDX-License-Identifier: BSL-1.0
// Regression tests for defects of the core, part 2: defects 7 to 12, plus the
// attacker cases a reviewer expects around them (tagged [regression][attack]),
// and the importer's lifetime with its module object (tagged [importer]).
// Part 1 (defects 1 to 6) is test_core_regressions.cpp. Each group's comment
// says how its tests fail on the core before the fix.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/policies.hpp"
#include "support/regression.hpp"
#include "support/scenario.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#if __has_include(<version>)
#include <version>
#endif
#include <atomic>
#include <chrono>
#include <cstddef>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#if defined(__cpp_lib_jthread)
#include <stop_token>
#endif
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using importlock::circular_import_error;
using importlock::import_error;
using importlock::import_halted_error;
using importlock::module_not_found_error;
using importlock_test::await;
using importlock_test::destruction_log;
using importlock_test::hook_module;
using importlock_test::mentions;
using importlock_test::regression_limit;
using importlock_test::watchdog;

struct plain_module {
    int value = 0;
};

template <class Policy>
using plain_system = importlock::basic_import_system<std::string, plain_module, Policy>;
using plain_importer = importlock::importer<std::string, plain_module>;

template <class Policy>
using hook_system = importlock::basic_import_system<std::string, hook_module, Policy>;
using hook_importer = importlock::importer<std::string, hook_module>;

}  // namespace

// ---------------------------------------------------------------------------
// Defect 7: a blocked child imports its parent first.
//
// Old core: import_module("a.b") imports "a" (running its loader, or failing
// with a's error) before it looks at "a.b" and finds the block.
// ---------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("defect 7: a blocked child halts before its parent is imported",
                        "[regression][defect-7]", importlock_test::all_policies) {
    const bool parent_fails = GENERATE(false, true);
    CAPTURE(parent_fails);
    plain_system<TestType> sys;
    int parent_runs = 0;
    int child_runs = 0;
    sys.finder().define("a", [&](plain_module&, plain_importer&) {
        ++parent_runs;
        if (parent_fails) throw std::runtime_error("a fails");
    });
    sys.finder().define("a.b", [&](plain_module&, plain_importer&) { ++child_runs; });
    sys.finder().define("a.b.c", [&](plain_module&, plain_importer&) { ++child_runs; });
    SECTION("import_module") {
        sys.block("a.b");
        CHECK_THROWS_AS(sys.import_module("a.b"), import_halted_error);
    }
    SECTION("import_ref") {
        sys.block("a.b");
        CHECK_THROWS_AS(sys.import_ref("a.b"), import_halted_error);
    }
    SECTION("a handle") {
        sys.block("a.b");
        auto handle = sys.handle("a.b");
        CHECK_THROWS_AS(handle.get(), import_halted_error);
    }
    if constexpr (!std::is_same_v<TestType, importlock::no_locks>) {  // no timed waits there
        SECTION("import_module_for") {
            sys.block("a.b");
            CHECK_THROWS_AS(sys.import_module_for("a.b", std::chrono::seconds(1)),
                            import_halted_error);
        }
    }
    SECTION("a blocked grandchild") {
        sys.block("a.b.c");
        CHECK_THROWS_AS(sys.import_module("a.b.c"), import_halted_error);
        CHECK_FALSE(sys.contains("a.b"));
    }
    CHECK(parent_runs == 0);
    CHECK(child_runs == 0);
    CHECK_FALSE(sys.contains("a"));
    CHECK(sys.size() == 0);
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------
// Defect 8: singleflight pins failures.
//
// Old core: with singleflight_per_key_locks the shared exception_ptr of a
// failed import stays in the key's registry entry after every waiter
// rethrew it, and erase(k) / clear() do not drop it: the payload the
// exception holds is never destroyed (destroyed == 0).
// ---------------------------------------------------------------------------

namespace {

struct payload {
    explicit payload(std::atomic<int>& destroyed) : destroyed_(&destroyed) {}
    payload(const payload&) = delete;
    payload& operator=(const payload&) = delete;
    ~payload() { ++*destroyed_; }
    std::atomic<int>* destroyed_;
};

class payload_failure : public std::runtime_error {
public:
    explicit payload_failure(std::shared_ptr<payload> p)
        : std::runtime_error("payload failure"), payload_(std::move(p)) {}

private:
    std::shared_ptr<payload> payload_;
};

// One holder and `waiters` waiters import "k", whose loader throws a
// payload_failure once they all wait. Returns the number of threads that
// caught a payload_failure (they keep no copy).
template <class System>
int fail_with_waiters(System& sys, std::atomic<int>& destroyed, int waiters) {
    std::latch entered(1);
    std::latch release(1);
    sys.finder().define("k", [&](plain_module&, plain_importer&) {
        entered.count_down();
        release.wait();
        throw payload_failure(std::make_shared<payload>(destroyed));
    });
    std::atomic<int> caught{0};
    const auto import_k = [&] {
        try {
            sys.import_module("k");
        } catch (const payload_failure&) {
            ++caught;
        }
    };
    std::thread holder(import_k);
    entered.wait();
    std::vector<std::thread> threads;
    for (int i = 0; i < waiters; ++i) threads.emplace_back(import_k);
    await([&] { return sys.waiter_count("k") == static_cast<std::size_t>(waiters); });
    release.count_down();
    holder.join();
    for (auto& t : threads) t.join();
    return caught.load();
}

}  // namespace

TEST_CASE("defect 8: singleflight frees a shared failure once every waiter rethrew it",
          "[regression][defect-8][threaded]") {
    watchdog dog("defect 8: shared failure released", regression_limit);
    std::atomic<int> destroyed{0};
    plain_system<importlock::singleflight_per_key_locks> sys;
    const int waiters = GENERATE(1, 3);
    CAPTURE(waiters);
    REQUIRE(fail_with_waiters(sys, destroyed, waiters) == waiters + 1);
    CHECK(destroyed.load() == 1);
    CHECK_FALSE(sys.contains("k"));
    CHECK(sys.lock_count() == 0);
}

TEST_CASE("defect 8: singleflight keeps no failure after erase(k) and clear()",
          "[regression][defect-8][threaded]") {
    watchdog dog("defect 8: erase and clear", regression_limit);
    std::atomic<int> destroyed{0};
    plain_system<importlock::singleflight_per_key_locks> sys;
    REQUIRE(fail_with_waiters(sys, destroyed, 2) == 3);
    sys.erase("k");
    sys.clear();
    CHECK(destroyed.load() == 1);
    CHECK(sys.size() == 0);
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------
// Defect 9: recording dependencies is quadratic.
//
// Old core: the importer handed to a loader scans the keys recorded so far on
// every import, so a loader importing N keys costs O(N^2): 40,000 imports
// take about 1.5 s against 0.01 s through the system object (measured by
// the benchmark, not here). This test does not time anything: it pins what
// a faster recorder must keep, 40,000 keys in first-import order with
// duplicates removed. It passes on the old core (slowly).
//
// 40,000 keys in release builds (NDEBUG, -O2: the release preset, 6.8 s
// on the old core). Elsewhere (-O0 debug presets, and the sanitizer presets,
// whose instrumented -O1 build took 48 s at 40,000 on the old core) the old
// O(N^2) scan is too slow, so the test checks 10,000 keys there (about 5 s
// under gcc -O0, 3 s under ASan on the old core).
// ---------------------------------------------------------------------------

namespace {

#if defined(NDEBUG)
constexpr std::size_t recorded_keys = 40000;
#else
constexpr std::size_t recorded_keys = 10000;
#endif

}  // namespace

TEST_CASE("defect 9: dependencies lists every key in first-import order without duplicates",
          "[regression][defect-9]") {
    watchdog dog("defect 9: recorded dependencies", regression_limit);
    using finder = importlock::function_finder<std::string, plain_module>;
    using system = importlock::basic_import_system<std::string, plain_module,
                                                   importlock::per_key_locks, finder>;
    constexpr std::size_t n = recorded_keys;
    std::vector<std::string> first_order;
    first_order.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        // A permutation of 0..n-1 (7919 is prime, coprime to n): not sorted order.
        first_order.push_back("d" + std::to_string((i * 7919) % n));
    }
    system sys(finder([&](const std::string& key) {
        importlock::module_spec<std::string, plain_module> spec;
        if (key == "root") {
            spec.loader = [&](plain_module&, plain_importer& imp) {
                for (const auto& k : first_order) imp.import_module(k);
                // Every key again, in reverse: already recorded.
                for (auto it = first_order.rbegin(); it != first_order.rend(); ++it) {
                    imp.import_ref(*it);
                }
            };
        } else {
            spec.loader = [](plain_module& m, plain_importer&) { m.value = 1; };
        }
        return std::optional<importlock::module_spec<std::string, plain_module>>(spec);
    }));
    sys.import_module("root");
    const auto deps = sys.dependencies("root");
    REQUIRE(deps.size() == n);
    CHECK(deps == first_order);
    CHECK(sys.dependents("d0") == std::vector<std::string>{"root"});
}

// ---------------------------------------------------------------------------
// Defect 10: observer hooks can deadlock silently.
//
// Old core: on_wait and on_cycle run under the system's state mutex (a
// non-recursive std::mutex); a hook that calls snapshot(), lock_count() or
// waiter_count() relocks it and the importing thread hangs forever: the
// watchdog aborts the test ("still running after 60 s: hang").
// ---------------------------------------------------------------------------

namespace {

// What a hook saw when it queried the system.
struct hook_view {
    std::thread::id thread;  // the thread the hook ran on
    std::string key;
    std::size_t lock_count = 0;
    std::size_t waiters_on_key = 0;
    importlock::import_snapshot snapshot;
};

template <class System>
class querying_observer : public importlock::import_observer<std::string> {
public:
    explicit querying_observer(const System& sys) : sys_(sys) {}

    void on_wait(const std::string& key, std::thread::id) override { record(key, waits_); }
    void on_cycle(const std::string& key, const std::vector<std::string>&, bool) override {
        record(key, cycles_);
    }

    std::vector<hook_view> waits() const {
        std::lock_guard lock(mutex_);
        return waits_;
    }
    std::vector<hook_view> cycles() const {
        std::lock_guard lock(mutex_);
        return cycles_;
    }

private:
    void record(const std::string& key, std::vector<hook_view>& into) {
        hook_view view;
        view.thread = std::this_thread::get_id();
        view.key = key;
        view.snapshot = sys_.snapshot();
        view.lock_count = sys_.lock_count();
        view.waiters_on_key = sys_.waiter_count(key);
        std::lock_guard lock(mutex_);
        into.push_back(std::move(view));
    }

    const System& sys_;
    mutable std::mutex mutex_;
    std::vector<hook_view> waits_;
    std::vector<hook_view> cycles_;
};

const importlock::import_snapshot::thread_state* find_thread(const importlock::import_snapshot& s,
                                                             std::thread::id id) {
    for (const auto& t : s.threads) {
        if (t.thread == id) return &t;
    }
    return nullptr;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("defect 10: an on_wait hook may call snapshot lock_count and waiter_count",
                        "[regression][defect-10][threaded]", importlock_test::threaded_policies) {
    watchdog dog("defect 10: on_wait querying the system", regression_limit);
    using system = plain_system<TestType>;
    system sys;
    auto observer = std::make_shared<querying_observer<system>>(sys);
    sys.set_observer(observer);
    std::latch entered(1);
    std::latch release(1);
    sys.finder().define("slow", [&](plain_module& m, plain_importer&) {
        entered.count_down();
        release.wait();
        m.value = 1;
    });
    std::thread::id holder_id;
    std::thread holder([&] {
        holder_id = std::this_thread::get_id();
        sys.import_module("slow");
    });
    entered.wait();
    const std::thread::id holder_seen = holder_id;
    std::atomic<int> got{0};
    std::thread waiter([&] { got = sys.import_module("slow")->value; });
    await([&] { return !observer->waits().empty(); });
    release.count_down();
    waiter.join();
    holder.join();
    CHECK(got.load() == 1);
    const auto waits = observer->waits();
    REQUIRE(waits.size() == 1);
    const hook_view& view = waits.front();
    CHECK(view.key == "slow");
    CHECK(view.lock_count == 1);
    // The snapshot shows the holder importing "slow" and holding its lock.
    const auto* h = find_thread(view.snapshot, holder_seen);
    REQUIRE(h != nullptr);
    CHECK(h->importing == std::vector<std::string>{"slow"});
    REQUIRE(view.snapshot.locks.size() == 1);
    CHECK(view.snapshot.locks.front().owner == holder_seen);
    if constexpr (!importlock_test::is_global_v<TestType>) {
        CHECK(view.snapshot.locks.front().key == "slow");
    }
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("defect 10: an on_cycle hook may query the system (same-thread cycle)",
                        "[regression][defect-10]", importlock_test::all_policies) {
    watchdog dog("defect 10: on_cycle on one thread", regression_limit);
    using system = plain_system<TestType>;
    system sys;
    auto observer = std::make_shared<querying_observer<system>>(sys);
    sys.set_observer(observer);
    sys.finder().define("a", [](plain_module& m, plain_importer& imp) {
        imp.import_module("b");
        m.value = 1;
    });
    sys.finder().define("b", [](plain_module& m, plain_importer& imp) {
        try {
            imp.import_module("a");  // the cycle: partial "a", or circular_import_error (strict)
        } catch (const circular_import_error&) {
        }
        m.value = 2;
    });
    CHECK(sys.import_module("a")->value == 1);
    const auto cycles = observer->cycles();
    REQUIRE(cycles.size() == 1);
    const hook_view& view = cycles.front();
    CHECK(view.key == "a");
    CHECK(view.thread == std::this_thread::get_id());
    CHECK(view.lock_count == (importlock_test::is_global_v<TestType> ? 1u : 2u));
    const auto* self = find_thread(view.snapshot, std::this_thread::get_id());
    REQUIRE(self != nullptr);
    CHECK(self->importing == std::vector<std::string>{"a", "b"});
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("defect 10: an on_cycle hook may query the system (cross-thread cycle)",
                        "[regression][defect-10][threaded]", importlock_test::per_key_policies) {
    watchdog dog("defect 10: on_cycle across threads", regression_limit);
    using system = plain_system<TestType>;
    system sys;
    auto observer = std::make_shared<querying_observer<system>>(sys);
    sys.set_observer(observer);
    std::latch x_held(1);
    std::latch y_held(1);
    sys.finder().define("x", [&](plain_module& m, plain_importer& imp) {
        x_held.count_down();
        y_held.wait();
        imp.import_module("y");  // waits for thread 2
        m.value = 1;
    });
    sys.finder().define("y", [&](plain_module& m, plain_importer& imp) {
        y_held.count_down();
        x_held.wait();
        await([&] { return sys.waiter_count("y") == 1; });  // thread 1 parked on "y"
        try {
            imp.import_module("x");  // closes the cycle: this thread is released
        } catch (const circular_import_error&) {
        }
        m.value = 2;
    });
    std::thread::id t1_id;
    std::thread::id t2_id;
    std::latch ids(2);
    std::thread t1([&] {
        t1_id = std::this_thread::get_id();
        ids.count_down();
        sys.import_module("x");
    });
    std::thread t2([&] {
        t2_id = std::this_thread::get_id();
        ids.count_down();
        sys.import_module("y");
    });
    ids.wait();
    t1.join();
    t2.join();
    CHECK(sys.get("x")->value == 1);
    CHECK(sys.get("y")->value == 2);
    const auto cycles = observer->cycles();
    REQUIRE(cycles.size() == 1);
    const hook_view& view = cycles.front();
    CHECK(view.key == "x");
    CHECK(view.thread == t2_id);
    CHECK(view.waiters_on_key == 0);  // nobody waits on "x"
    CHECK(view.lock_count == 2);
    const auto* t1_state = find_thread(view.snapshot, t1_id);
    REQUIRE(t1_state != nullptr);
    CHECK(t1_state->importing == std::vector<std::string>{"x"});
    REQUIRE(t1_state->waiting_for.has_value());
    CHECK(*t1_state->waiting_for == "y");
    CHECK(t1_state->waiting_for_thread == std::optional<std::thread::id>(t2_id));
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------
// Defect 11: failed imports are listed as dependencies.
//
// Old core: the importer records a key before importing it, so a key whose
// import failed inside k's loader (and was caught there) is listed by
// dependencies(k), dependents() and write_dependency_dot.
// ---------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("defect 11: only successful imports are recorded as dependencies",
                        "[regression][defect-11]", importlock_test::all_policies) {
    plain_system<TestType> sys;
    sys.finder().define(
        "bad", [](plain_module&, plain_importer&) { throw std::runtime_error("bad fails"); });
    sys.finder().define("good", [](plain_module& m, plain_importer&) { m.value = 1; });
    sys.block("blocked");
    sys.finder().define("k", [](plain_module&, plain_importer& imp) {
        try {
            imp.import_module("bad");
        } catch (const std::runtime_error&) {
        }
        try {
            imp.import_ref("bad");
        } catch (const std::runtime_error&) {
        }
        try {
            imp.import_module("missing");
        } catch (const module_not_found_error&) {
        }
        try {
            imp.import_module("blocked");
        } catch (const import_halted_error&) {
        }
        imp.import_module("good");
    });
    sys.import_module("k");
    CHECK(sys.dependencies("k") == std::vector<std::string>{"good"});
    CHECK(sys.dependents("bad").empty());
    CHECK(sys.dependents("missing").empty());
    CHECK(sys.dependents("blocked").empty());
    CHECK(sys.dependents("good") == std::vector<std::string>{"k"});
    std::ostringstream dot;
    sys.write_dependency_dot(dot);
    INFO(dot.str());
    CHECK_FALSE(mentions(dot.str(), "bad"));
    CHECK_FALSE(mentions(dot.str(), "missing"));
    CHECK_FALSE(mentions(dot.str(), "blocked"));
    CHECK(mentions(dot.str(), "\"k\" -> \"good\""));
}

// ---------------------------------------------------------------------------
// Defect 12: wrong key in messages.
//
// Old core: under global_lock, a timed-out or cancelled import of "other"
// says the owner "is importing it" while that thread imports "slow": the
// message does not name "slow". Under no_locks, a second thread importing the
// key in flight gets a bare std::logic_error naming no key.
// ---------------------------------------------------------------------------

namespace {

// Runs `attempt(sys)` on a thread while another thread holds the global lock
// importing "slow"; `while_waiting(sys)` runs on the main thread once the
// attempt waits (or has returned). Returns the attempt's import_error
// message (empty if none) and whether it named the holder.
template <class Attempt, class WhileWaiting>
std::pair<std::string, bool> global_lock_attempt(Attempt attempt, WhileWaiting while_waiting) {
    watchdog dog("defect 12: global lock message", regression_limit);
    plain_system<importlock::global_lock> sys;
    std::latch entered(1);
    std::latch release(1);
    sys.finder().define("slow", [&](plain_module&, plain_importer&) {
        entered.count_down();
        release.wait();
    });
    sys.finder().define("other", [](plain_module&, plain_importer&) {});
    std::thread::id holder_id;
    std::thread holder([&] {
        holder_id = std::this_thread::get_id();
        sys.import_module("slow");
    });
    entered.wait();
    const std::thread::id holder_seen = holder_id;
    std::string message;
    bool named_holder = false;
    std::atomic<bool> finished{false};
    std::thread other([&] {
        try {
            attempt(sys);
        } catch (const importlock::import_timeout_error& e) {
            message = e.what();
            named_holder = e.holder() == holder_seen;
        } catch (const importlock::import_cancelled_error& e) {
            message = e.what();
            named_holder = e.holder() == holder_seen;
        }
        finished = true;
    });
    await([&] { return finished.load() || sys.waiter_count("other") == 1; });
    while_waiting(sys);
    other.join();
    release.count_down();
    holder.join();
    return {message, named_holder};
}

}  // namespace

TEST_CASE("defect 12: a timed-out import under global_lock names the key actually held",
          "[regression][defect-12][threaded]") {
    const auto [message, named_holder] = global_lock_attempt(
        [](auto& sys) { sys.import_module_for("other", std::chrono::milliseconds(1)); },
        [](auto&) {});
    INFO("message: " << message);
    CHECK(mentions(message, "'other'"));
    CHECK(mentions(message, "slow"));
    CHECK(named_holder);
}

#if defined(__cpp_lib_jthread)
TEST_CASE("defect 12: a cancelled import under global_lock names the key actually held",
          "[regression][defect-12][threaded]") {
    std::stop_source stop;
    const auto [message, named_holder] =
        global_lock_attempt([&](auto& sys) { sys.import_module("other", stop.get_token()); },
                            [&](auto&) { stop.request_stop(); });
    INFO("message: " << message);
    CHECK(mentions(message, "'other'"));
    CHECK(mentions(message, "slow"));
    CHECK(named_holder);
}
#else
TEST_CASE("defect 12: a cancelled import under global_lock names the key actually held",
          "[regression][defect-12][threaded]") {
    WARN(
        "skipped: this standard library has no std::stop_token (__cpp_lib_jthread), so "
        "basic_import_system has no import_module(key, stop_token)");
}
#endif

TEST_CASE("defect 12: no_locks misuse is an import_error naming the key",
          "[regression][defect-12][threaded]") {
    watchdog dog("defect 12: no_locks misuse", regression_limit);
    plain_system<importlock::no_locks> sys;
    std::atomic<bool> in_loader{false};
    std::latch release(1);
    sys.finder().define("nl_key", [&](plain_module& m, plain_importer&) {
        in_loader = true;
        release.wait();
        m.value = 1;
    });
    int first_value = 0;
    std::thread first([&] { first_value = sys.import_module("nl_key")->value; });
    await([&] { return in_loader.load(); });
    // Only the second thread touches the system now; the first is parked in
    // its loader. It imports the same key and meets the in-flight lock.
    std::string error_key;
    std::string message;
    std::string wrong_type;
    std::thread second([&] {
        try {
            sys.import_module("nl_key");
        } catch (const import_error& e) {
            error_key = e.key();
            message = e.what();
        } catch (const std::exception& e) {
            wrong_type = e.what();
        }
    });
    second.join();
    release.count_down();
    first.join();
    INFO("not an import_error: " << wrong_type);
    CHECK(wrong_type.empty());
    CHECK(error_key == "nl_key");
    CHECK(mentions(message, "nl_key"));
    CHECK(first_value == 1);
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------
// Attacker cases around the same areas. They pass on the old core unless
// noted; they pin behaviour the rewrite must keep.
// ---------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("attack: the empty key and degenerate dotted keys", "[regression][attack]",
                        importlock_test::all_policies) {
    plain_system<TestType> sys;
    SECTION("an unknown empty key is module_not_found_error") {
        try {
            sys.import_module("");
            FAIL("no error");
        } catch (const module_not_found_error& e) {
            CHECK(e.key().empty());
        }
        CHECK(sys.size() == 0);
    }
    SECTION("a defined empty key imports, erases and re-imports") {
        int runs = 0;
        sys.finder().define("", [&](plain_module& m, plain_importer&) { m.value = ++runs; });
        CHECK(sys.import_module("")->value == 1);
        CHECK(sys.contains(""));
        CHECK(sys.import_ref("").value == 1);
        CHECK(sys.erase(""));
        CHECK(sys.import_module("")->value == 2);
    }
    SECTION("'.', '..', 'a.', '.a' and 'a..b' fail cleanly") {
        for (const std::string key : {".", "..", "a.", ".a", "a..b"}) {
            INFO("key '" << key << "'");
            CHECK_THROWS_AS(sys.import_module(key), import_error);
        }
        CHECK(sys.size() == 0);
    }
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("attack: a destructor's nested import fails during teardown",
                        "[regression][attack][teardown]", importlock_test::all_policies) {
    const bool by_destructor = GENERATE(false, true);
    CAPTURE(by_destructor);
    std::string caught;  // declared first: outlives the system
    int other = 0;
    {
        hook_system<TestType> sys;
        sys.finder().define("bad", [](hook_module&, hook_importer&) {
            throw std::runtime_error("bad fails in teardown");
        });
        sys.finder().define("wrapper", [](hook_module&, hook_importer& imp) {
            imp.import_module("bad");  // rethrows bad's error
        });
        sys.finder().define("a", [&](hook_module& m, hook_importer&) {
            m.on_destroy = [&] {
                try {
                    sys.import_module("wrapper");
                } catch (const std::runtime_error& e) {
                    caught = e.what();  // the loader's error, or an import_error in ~system
                } catch (...) {
                    ++other;
                }
            };
        });
        sys.import_module("a");
        if (!by_destructor) {
            sys.clear();
            CHECK(caught == "bad fails in teardown");
            CHECK(sys.size() == 0);
            CHECK(sys.lock_count() == 0);
            CHECK_FALSE(sys.contains("wrapper"));
            CHECK_FALSE(sys.contains("bad"));
        }
    }
    CHECK(other == 0);
    CHECK_FALSE(caught.empty());
}

TEMPLATE_LIST_TEST_CASE("attack: erase and block and reload of its own key inside a loader",
                        "[regression][attack]", importlock_test::all_policies) {
    plain_system<TestType> sys;
    std::vector<std::string> keys_in_errors;
    sys.finder().define("self", [&](plain_module& m, plain_importer&) {
        const auto attempt = [&](auto&& operation) {
            try {
                operation();
                keys_in_errors.push_back("<no error>");
            } catch (const import_error& e) {
                keys_in_errors.push_back(e.key());
            }
        };
        attempt([&] { sys.erase("self"); });
        attempt([&] { sys.block("self"); });
        attempt([&] { sys.reload("self"); });
        m.value = 1;
    });
    CHECK(sys.import_module("self")->value == 1);
    CHECK(keys_in_errors == std::vector<std::string>{"self", "self", "self"});
    CHECK(sys.contains("self"));
    CHECK_FALSE(sys.is_blocked("self"));
    CHECK_FALSE(sys.is_initializing("self"));
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("attack: reload from a module destructor during clear()",
                        "[regression][attack][teardown]", importlock_test::all_policies) {
    destruction_log log;  // declared first: outlives the system
    std::vector<std::string> outcomes;
    int b_runs = 0;
    hook_system<TestType> sys;
    sys.finder().define("b", [&](hook_module& m, hook_importer&) {
        ++b_runs;
        m.on_destroy = [&] { log.add("b"); };
    });
    sys.finder().define("a", [&](hook_module& m, hook_importer& imp) {
        imp.import_ref("b");
        m.on_destroy = [&] {
            log.add("a");
            for (const char* key : {"b", "a"}) {
                try {
                    sys.reload(key);
                    outcomes.push_back(std::string(key) + ": reloaded");
                } catch (const import_error& e) {
                    outcomes.push_back(std::string(key) + ": import_error " + e.key());
                } catch (...) {
                    outcomes.push_back(std::string(key) + ": other error");
                }
            }
        };
    });
    sys.import_module("a");
    sys.clear();
    INFO("outcomes: " << outcomes.size());
    REQUIRE(outcomes.size() == 2);
    // "b" is still registered (it is torn down after "a") or already gone:
    // either a reload or a clean import_error, never anything else.
    CHECK((outcomes[0] == "b: reloaded" || outcomes[0] == "b: import_error b"));
    CHECK(b_runs == (outcomes[0] == "b: reloaded" ? 2 : 1));
    CHECK(outcomes[1] == "a: import_error a");  // "a" is being torn down
    CHECK(sys.size() == 0);
    CHECK(sys.lock_count() == 0);
    CHECK(log.names() == std::vector<std::string>{"a", "b"});
}

// clear() while another thread loads a dependency of a ready module again (it
// was erased after the dependent imported it): the teardown plan looks the
// dependency up, finds its entry initialising, and must neither tear it down
// nor read the first-ready order its loader is about to write (the plan reads
// it only after an acquire load shows the entry ready).
TEMPLATE_LIST_TEST_CASE("attack: clear() while a dependency of a ready module is loaded again",
                        "[regression][attack][teardown]", importlock_test::threaded_policies) {
    watchdog dog("clear() beside a dependency's second load", regression_limit);
    destruction_log log;  // declared first: outlives the system
    std::latch inside(1);
    std::latch release(1);
    std::atomic<int> dep_loads{0};
    hook_system<TestType> sys;
    sys.finder().define("dep", [&](hook_module& m, hook_importer&) {
        m.on_destroy = [&] { log.add("dep"); };
        if (dep_loads.fetch_add(1) == 1) {  // the second load waits inside its loader
            inside.count_down();
            release.wait();
        }
    });
    sys.finder().define("user", [&](hook_module& m, hook_importer& imp) {
        imp.import_ref("dep");
        m.on_destroy = [&] { log.add("user"); };
    });
    sys.import_module("user");
    REQUIRE(sys.dependencies("user") == std::vector<std::string>{"dep"});
    REQUIRE(sys.erase("dep"));
    std::thread loader([&] { sys.import_module("dep"); });
    inside.wait();
    CHECK(sys.is_initializing("dep"));
    CHECK(sys.clear() == 1);  // "user" only: "dep" is in flight
    CHECK(sys.is_initializing("dep"));
    CHECK_FALSE(sys.contains("user"));
    release.count_down();
    loader.join();
    CHECK(sys.contains("dep"));
    CHECK(sys.clear() == 1);
    CHECK(log.names() == std::vector<std::string>{"dep", "user", "dep"});
    CHECK(sys.size() == 0);
    CHECK(sys.lock_count() == 0);
}

// A single-phase builder (define_value) with an observer installed: publish_built
// released the state lock itself and run_first_load unlocked it again
// (std::system_error "Operation not permitted" escaped the import).
TEST_CASE("regression: an observer with a single-phase builder", "[regression]") {
    importlock_test::watchdog dog("observer with define_value");
    struct counting : importlock::import_observer<std::string> {
        int ends = 0;
        void on_import_end(const std::string&, std::chrono::nanoseconds) override { ++ends; }
    };
    importlock::import_system<int> sys;
    auto observer = std::make_shared<counting>();
    sys.set_observer(observer);
    sys.finder().define_value("k", [](auto&) { return std::make_shared<int>(7); });
    CHECK(*sys.import_module("k") == 7);
    CHECK(observer->ends == 1);
    CHECK(sys.lock_count() == 0);
}

// Found by test_linearizability (per_key, 2 keys, 1 history in ~3000): an uncontended
// load fails without the state mutex, so an erase that saw "initialising" and then
// read the state again found "absent" and returned true for a key that never held a
// module (and a block could likewise return without blocking). Erase and block now
// decide on one read of the state, under the entry's guard. Each round races a
// failing load against a thread that erases and blocks the key in a loop; an erase
// may throw (in flight) or return false, never true; a block either throws or leaves
// the key blocked.
TEMPLATE_LIST_TEST_CASE("regression: erase and block racing a failing load decide on one state",
                        "[regression][threads]", importlock_test::threaded_policies) {
    watchdog dog("erase and block racing a failing load", std::chrono::seconds(120));
    plain_system<TestType> sys;
    std::atomic<bool> loading{false};
    sys.finder().define("k", [&](plain_module&, plain_importer&) {
        loading.store(true, std::memory_order_release);
        throw std::runtime_error("loader failure");
    });
    std::size_t wrong_erases = 0, lost_blocks = 0, refusals = 0;
#if defined(__SANITIZE_THREAD__)
    const int rounds = 400;  // a thread per round, ten times slower
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    const int rounds = 400;
#else
    const int rounds = 3000;
#endif
#else
    const int rounds = 3000;
#endif
    for (int round = 0; round < rounds; ++round) {
        loading.store(false, std::memory_order_relaxed);
        std::atomic<bool> done{false};
        std::thread importer([&] {
            try {
                (void)sys.import_module("k");
            } catch (const std::runtime_error&) {
            }
            done.store(true, std::memory_order_release);
        });
        while (!loading.load(std::memory_order_acquire)) std::this_thread::yield();
        const bool try_block = round % 4 == 3;
        // Until the load is over, then once more.
        for (bool last = false; !last;) {
            last = done.load(std::memory_order_acquire);
            try {
                if (try_block) {
                    sys.block("k");
                    if (!sys.is_blocked("k")) ++lost_blocks;
                    break;
                }
                if (sys.erase("k")) ++wrong_erases;
            } catch (const import_error&) {
                ++refusals;
            }
        }
        importer.join();
        if (try_block) (void)sys.erase("k");  // unblock for the next round
        REQUIRE_FALSE(sys.contains("k"));
    }
    INFO("refusals seen: " << refusals);
    CHECK(wrong_erases == 0);
    CHECK(lost_blocks == 0);
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------
// The importer lives with the module object (DESIGN §1.13).
//
// The importer a loader receives used to live in the key's registry entry, so
// entries had to live as long as the system. It now lives in the block the
// system's shared_ptrs to the module own: valid while the module is alive
// through any of them, also after its key was erased; a new module object of
// the key gets a new importer, and a reload the same one again. On a core
// whose entries are freed once erased but whose importer stays in the entry,
// the erase tests are heap-use-after-free (ASan). On the core before the move
// (the importer in the entry, entries never freed) the failed-load test FAILS
// (the failed load's importer, the same object, records "early" into the next
// load), and so does the check that a key imported again gets a new importer.
// ---------------------------------------------------------------------------

namespace {

struct keeping_module {
    importlock::importer<std::string, keeping_module>* imp = nullptr;
    int value = 0;
};

template <class Policy>
using keeping_system = importlock::basic_import_system<std::string, keeping_module, Policy>;
using keeping_importer = importlock::importer<std::string, keeping_module>;

template <class System>
void define_leaf(System& sys) {
    sys.finder().define("leaf", [](keeping_module& m, keeping_importer&) { m.value = 2; });
}

// Erases "k" while `k` holds its module, then imports through the importer
// the module kept: an import, not recorded anywhere.
template <class System>
void import_through_kept_importer_after_erase(System& sys, std::shared_ptr<keeping_module> k) {
    REQUIRE(k != nullptr);
    REQUIRE(k->imp != nullptr);
    REQUIRE(sys.erase("k"));
    CHECK_FALSE(sys.contains("k"));
    importlock_test::scribble_stack();
    const std::shared_ptr<keeping_module> leaf = k->imp->import_module("leaf");
    REQUIRE(leaf != nullptr);
    CHECK(leaf->value == 2);
    CHECK(&k->imp->import_ref("leaf") == leaf.get());
    CHECK(k->imp->get("leaf") == leaf);
    CHECK(k->imp->get("k") == nullptr);
    CHECK(sys.dependencies("k").empty());
    CHECK(sys.lock_count() == 0);
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("importer: a kept importer imports after its key is erased",
                        "[regression][importer]", importlock_test::all_policies) {
    keeping_system<TestType> sys;
    define_leaf(sys);
    sys.finder().define("k", [](keeping_module& m, keeping_importer& imp) {
        m.imp = &imp;
        m.value = 1;
    });
    const std::shared_ptr<keeping_module> k = sys.import_module("k");
    import_through_kept_importer_after_erase(sys, k);
    // Imported again: a new module object with a new importer.
    const std::shared_ptr<keeping_module> again = sys.import_module("k");
    CHECK(again != k);
    CHECK(again->imp != k->imp);
    CHECK(k->imp->import_module("k") == again);
    CHECK(sys.dependencies("k").empty());
}

TEMPLATE_LIST_TEST_CASE("importer: a factory's module keeps its importer after erase",
                        "[regression][importer]", importlock_test::all_policies) {
    keeping_system<TestType> sys;
    define_leaf(sys);
    std::weak_ptr<keeping_module> made;
    sys.finder().define(
        "k", [](keeping_module& m, keeping_importer& imp) { m.imp = &imp; },
        [&made](const std::string&) {
            auto m = std::make_shared<keeping_module>();
            made = m;
            return m;
        });
    std::shared_ptr<keeping_module> k = sys.import_module("k");
    CHECK(k.get() == made.lock().get());  // the factory's object itself
    import_through_kept_importer_after_erase(sys, k);
    CHECK_FALSE(made.expired());  // held through the system's shared_ptr
    k.reset();
    CHECK(made.expired());  // the last of the system's shared_ptrs released it
}

TEMPLATE_LIST_TEST_CASE("importer: a single-phase module keeps its builder's importer after erase",
                        "[regression][importer]", importlock_test::all_policies) {
    keeping_system<TestType> sys;
    define_leaf(sys);
    sys.finder().define("dep", [](keeping_module&, keeping_importer&) {});
    sys.finder().define_value("k", [](keeping_importer& imp) {
        (void)imp.import_module("dep");
        auto m = std::make_shared<keeping_module>();
        m->imp = &imp;
        return m;
    });
    const std::shared_ptr<keeping_module> k = sys.import_module("k");
    CHECK(sys.dependencies("k") == std::vector<std::string>{"dep"});
    import_through_kept_importer_after_erase(sys, k);
}

TEMPLATE_LIST_TEST_CASE("importer: a reload hands the loader the first load's importer",
                        "[regression][importer]", importlock_test::all_policies) {
    const bool with_factory = GENERATE(false, true);
    CAPTURE(with_factory);
    keeping_system<TestType> sys;
    define_leaf(sys);
    sys.finder().define("early", [](keeping_module&, keeping_importer&) {});
    std::vector<keeping_importer*> seen;
    const auto loader = [&seen](keeping_module& m, keeping_importer& imp) {
        seen.push_back(&imp);
        m.imp = &imp;
        (void)imp.import_module(seen.size() == 1 ? "early" : "leaf");
    };
    if (with_factory) {
        sys.finder().define("k", loader,
                            [](const std::string&) { return std::make_shared<keeping_module>(); });
    } else {
        sys.finder().define("k", loader);
    }
    const std::shared_ptr<keeping_module> k = sys.import_module("k");
    CHECK(sys.dependencies("k") == std::vector<std::string>{"early"});
    CHECK(sys.reload("k") == k);
    REQUIRE(seen.size() == 2);
    CHECK(seen[0] == seen[1]);
    CHECK(sys.dependencies("k") == std::vector<std::string>{"leaf"});  // the reload's
    // After the reload the importer just imports.
    sys.finder().define("late", [](keeping_module&, keeping_importer&) {});
    CHECK(k->imp->import_module("late") != nullptr);
    CHECK(sys.dependencies("k") == std::vector<std::string>{"leaf"});
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("importer: a failed load's importer records nothing into the next load",
                        "[regression][importer]", importlock_test::all_policies) {
    keeping_system<TestType> sys;
    define_leaf(sys);
    sys.finder().define("early", [](keeping_module&, keeping_importer&) {});
    int attempts = 0;
    std::shared_ptr<keeping_module> failed;  // the failed load's module, kept alive
    keeping_importer* failed_importer = nullptr;
    bool distinct = false;
    sys.finder().define("k", [&](keeping_module&, keeping_importer& imp) {
        if (++attempts == 1) {
            failed = imp.get("k");  // the initialising module: it owns its importer
            failed_importer = &imp;
            throw std::runtime_error("the first load fails");
        }
        distinct = &imp != failed_importer;
        (void)failed_importer->import_module("early");  // while this load runs
        (void)imp.import_module("leaf");
    });
    CHECK_THROWS_AS(sys.import_module("k"), std::runtime_error);
    REQUIRE(failed != nullptr);
    CHECK_FALSE(sys.contains("k"));
    const std::shared_ptr<keeping_module> k = sys.import_module("k");
    CHECK(attempts == 2);
    CHECK(distinct);
    CHECK(k != failed);
    CHECK(sys.contains("early"));
    CHECK(sys.dependencies("k") == std::vector<std::string>{"leaf"});
    CHECK(sys.dependents("early").empty());
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("importer: a helper thread imports through it after the key is erased",
                        "[regression][importer][threaded]", importlock_test::threaded_policies) {
    watchdog dog("importer: helper thread after erase", regression_limit);
    keeping_system<TestType> sys;
    define_leaf(sys);
    std::latch erased(1);
    std::thread helper;
    std::shared_ptr<keeping_module> got;
    std::string helper_error;
    sys.finder().define("k", [&](keeping_module&, keeping_importer& imp) {
        helper = std::thread([&imp, &erased, &got, &helper_error] {
            erased.wait();
            try {
                got = imp.import_module("leaf");
            } catch (const std::exception& e) {
                helper_error = e.what();
            }
        });
    });
    std::shared_ptr<keeping_module> k = sys.import_module("k");
    const bool was_erased = sys.erase("k");
    importlock_test::scribble_stack();
    erased.count_down();
    helper.join();
    CHECK(was_erased);
    CHECK(helper_error.empty());
    REQUIRE(got != nullptr);
    CHECK(got->value == 2);
    CHECK(sys.dependencies("k").empty());
    k.reset();
    CHECK(sys.lock_count() == 0);
}

// The importer shares the module's allocation, but shared_from_this still works: a
// default-created module that derives from enable_shared_from_this is owned by a
// shared_ptr of its own inside the importer's holder.
TEMPLATE_LIST_TEST_CASE("importer: a default-created module may use shared_from_this",
                        "[regression][importer]", importlock_test::all_policies) {
    struct self_module : std::enable_shared_from_this<self_module> {
        int value = 0;
    };
    using self_importer = importlock::importer<std::string, self_module>;
    importlock::basic_import_system<std::string, self_module, TestType> sys;
    bool shared_in_loader = false;
    sys.finder().define("k", [&](self_module& m, self_importer& imp) {
        shared_in_loader = m.shared_from_this() == imp.get("k");
        m.value = 1;
    });
    const std::shared_ptr<self_module> k = sys.import_module("k");
    CHECK(shared_in_loader);
    CHECK(k->shared_from_this().get() == k.get());
    CHECK(k->value == 1);
}
