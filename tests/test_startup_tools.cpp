// SPDX-License-Identifier: BSL-1.0
// Start-up tools (include/importlock/startup/): the profile's text format and
// round-trip, key_traits::from_string, the preload schedule on a scripted
// graph and its failure reports, the hang watchdog, the trace recorder's
// nesting under many threads, and observer_group's forwarding.
//
// Every concurrency test forces its interleaving with latches, barriers and
// waiter_count, and runs under a watchdog; no sleep decides a result.
// With IMPORTLOCK_TRACE_OUT=<file>, the "[trace-json]" test writes its trace
// there (support/check_trace_json.sh then validates it with python3).
#include <importlock/importlock.hpp>
#include <importlock/startup/import_watchdog.hpp>
#include <importlock/startup/observer_group.hpp>
#include <importlock/startup/preload.hpp>
#include <importlock/startup/startup_profile.hpp>
#include <importlock/startup/trace_recorder.hpp>

#include "support/catch.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <latch>
#include <limits>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using importlock_test::await;
using importlock_test::watchdog;
using namespace std::chrono_literals;
using str_profile = importlock::startup_profile<std::string>;

struct mod {
    int value = 0;
};

struct point {
    int x = 0;
    bool operator==(const point&) const = default;
};

str_profile reload(const str_profile& profile) {
    std::istringstream in(profile.to_string());
    return str_profile::load(in);
}

// The line number of the profile_error that loading `text` throws (0 if none).
std::size_t error_line(const std::string& text, std::string* message = nullptr) {
    std::istringstream in(text);
    try {
        (void)str_profile::load(in);
    } catch (const importlock::profile_error& e) {
        if (message != nullptr) *message = e.what();
        return e.line();
    }
    return 0;
}

}  // namespace

// --- key_traits::from_string -------------------------------------------------------------

static_assert(importlock::readable_key<std::string>);
static_assert(importlock::readable_key<int>);
static_assert(importlock::readable_key<std::uint64_t>);
static_assert(importlock::readable_key<std::filesystem::path>);
static_assert(importlock::readable_key<std::vector<std::string>>);
static_assert(!importlock::readable_key<point>);
static_assert(!importlock::readable_key<char>);  // printed as a character
static_assert(!importlock::readable_key<bool>);

TEST_CASE("key_traits::from_string reads back integers, paths and name sequences", "[profile]") {
    using ti = importlock::key_traits<int>;
    using tu = importlock::key_traits<std::uint16_t>;
    using tl = importlock::key_traits<long long>;
    REQUIRE(ti::from_string("42") == 42);
    REQUIRE(ti::from_string("-7") == -7);
    REQUIRE(ti::from_string("0") == 0);
    REQUIRE(ti::from_string(ti::to_string(std::numeric_limits<int>::min())) ==
            std::numeric_limits<int>::min());
    REQUIRE(ti::from_string(ti::to_string(std::numeric_limits<int>::max())) ==
            std::numeric_limits<int>::max());
    REQUIRE_FALSE(ti::from_string("2147483648"));
    REQUIRE_FALSE(ti::from_string("-2147483649"));
    REQUIRE_FALSE(ti::from_string(""));
    REQUIRE_FALSE(ti::from_string("-"));
    REQUIRE_FALSE(ti::from_string("1x"));
    REQUIRE_FALSE(ti::from_string(" 1"));
    REQUIRE(tl::from_string("-9223372036854775808") == std::numeric_limits<long long>::min());
    REQUIRE_FALSE(tu::from_string("-1"));
    REQUIRE_FALSE(tu::from_string("65536"));
    REQUIRE(tu::from_string("65535") == 65535);

    using tp = importlock::key_traits<std::filesystem::path>;
    REQUIRE(tp::from_string("plugins/audio mp3") == std::filesystem::path("plugins/audio mp3"));
    using tv = importlock::key_traits<std::vector<std::string>>;
    REQUIRE(tv::from_string("pkg.sub.mod") == std::vector<std::string>{"pkg", "sub", "mod"});
    REQUIRE(tv::from_string("") == std::vector<std::string>{});
}

// --- startup_profile ---------------------------------------------------------------------

TEST_CASE("a profile round-trips odd keys, self times and edges through its text", "[profile]") {
    const std::vector<std::string> odd = {"plain",       "",         " ",         "two words",
                                          "line\nbreak", "cr\rlf",   "tab\there", "back\\slash",
                                          "\\s",         "\\e",      "#comment",  "key",
                                          "edge a b",    "\x01\x7f", "ünïcödé",   "trailing "};
    str_profile profile;
    for (std::size_t i = 0; i < odd.size(); ++i) {
        profile.add_key(odd[i], std::chrono::nanoseconds(static_cast<std::int64_t>(i * 1000 + 1)));
    }
    for (std::size_t i = 0; i + 1 < odd.size(); ++i) profile.add_edge(odd[i], odd[i + 1]);
    profile.add_edge(odd.back(), odd.front());  // a cycle is kept as recorded

    const std::string text = profile.to_string();
    // One record per line, no raw control characters or spaces inside a field.
    std::istringstream lines(text);
    std::string line;
    std::size_t records = 0;
    while (std::getline(lines, line)) {
        if (line.rfind("key ", 0) == 0 || line.rfind("edge ", 0) == 0) {
            ++records;
            REQUIRE(std::count(line.begin(), line.end(), ' ') == 2);
        }
        REQUIRE(line.find('\r') == std::string::npos);
    }
    REQUIRE(records == odd.size() * 2);
    REQUIRE(text.rfind("importlock-startup-profile 1\n", 0) == 0);

    const str_profile back = reload(profile);
    REQUIRE(back.keys() == odd);
    REQUIRE(back.self_times() == profile.self_times());
    REQUIRE(back.edges() == profile.edges());
    REQUIRE(back.to_string() == text);  // stable: a saved profile diffs cleanly

    // Other key types.
    importlock::startup_profile<int> ints;
    ints.add_key(std::numeric_limits<int>::min(), 5ns);
    ints.add_edge(-1, 7);
    std::istringstream int_text(ints.to_string());
    const auto ints_back = importlock::startup_profile<int>::load(int_text);
    REQUIRE(ints_back.keys() == std::vector<int>{std::numeric_limits<int>::min(), -1, 7});
    REQUIRE(ints_back.dependencies(-1) == std::vector<int>{7});

    importlock::startup_profile<std::filesystem::path> paths;
    paths.add_edge("plugins/audio/mp3 decoder", "plugins/audio");
    std::istringstream path_text(paths.to_string());
    REQUIRE(importlock::startup_profile<std::filesystem::path>::load(path_text).edges() ==
            paths.edges());

    // A key that does not read back as itself is refused instead of saved wrong.
    importlock::startup_profile<std::vector<std::string>> names;
    names.add_key({"pkg", "sub"});
    REQUIRE_NOTHROW(names.to_string());
    names.add_key({"a.b"});
    REQUIRE_THROWS_AS(names.to_string(), importlock::profile_error);
}

TEST_CASE("load names the line of a malformed profile", "[profile]") {
    const std::string head = "importlock-startup-profile 1\n";
    std::string message;
    REQUIRE(error_line("", &message) == 0);
    REQUIRE(message.find("no header") != std::string::npos);
    REQUIRE(error_line("\n# c\nkey a 1\n") == 3);  // no header first
    REQUIRE(error_line("importlock-startup-profile 2\n", &message) == 1);
    REQUIRE(message.find("version") != std::string::npos);
    REQUIRE(error_line(head + "key a 1\nkey b\n") == 3);  // missing field
    REQUIRE(error_line(head + "key a 1 2\n") == 2);       // extra field
    REQUIRE(error_line(head + "key a x1\n", &message) == 2);
    REQUIRE(message.find("nanoseconds") != std::string::npos);
    REQUIRE(error_line(head + "key a -1\n") == 2);
    REQUIRE(error_line(head + "key a\\q 1\n") == 2);   // unknown escape
    REQUIRE(error_line(head + "key a\\x4 1\n") == 2);  // short \x
    REQUIRE(error_line(head + "key a 1\nkey a 2\n", &message) == 3);
    REQUIRE(message.find("twice") != std::string::npos);
    REQUIRE(error_line(head + "key a 1\nmodule b\n", &message) == 3);
    REQUIRE(message.find("unknown record") != std::string::npos);
    REQUIRE(error_line(head + "key a 1\n\nedge a b\nkey c 1\n", &message) == 4);
    REQUIRE(message.find("'b', which has no key line") != std::string::npos);
    REQUIRE(message.rfind("startup profile line 4: ", 0) == 0);
    // Comments, blank lines, CRLF and edges before their keys are fine.
    REQUIRE(error_line(head + "# x\r\n\r\nedge b a\r\nkey a 1\r\nkey b 2\r\n") == 0);
    std::istringstream bad_int("importlock-startup-profile 1\nkey 12x 3\n");
    try {
        (void)importlock::startup_profile<int>::load(bad_int);
        FAIL("no profile_error");
    } catch (const importlock::profile_error& e) {
        REQUIRE(e.line() == 2);
        REQUIRE(std::string(e.what()).find("not a key of this type") != std::string::npos);
    }
}

TEST_CASE("the profile records nesting, waits, cycles, parents and hits through the system",
          "[profile][threaded]") {
    watchdog dog("profile recording");
    importlock::import_system<mod> system;
    auto profile = std::make_shared<str_profile>();
    system.set_observer(profile);
    std::latch release(1);
    system.finder().define("app", [](mod&, auto& imp) {
        imp.import_module("db");
        imp.import_module("log");
    });
    system.finder().define("db", [](mod&, auto& imp) {
        imp.import_module("log");
        imp.import_module("app");  // a circular import: partial app
    });
    system.finder().define("log", [](mod&, auto&) {});
    system.finder().define("pkg", [](mod&, auto&) {});
    system.finder().define("pkg.sub", [](mod&, auto&) {});
    system.finder().define("slow", [&](mod&, auto&) { release.wait(); });
    system.finder().define("user", [](mod&, auto& imp) { imp.import_module("slow"); });
    system.finder().define("late", [](mod&, auto& imp) { imp.import_module("log"); });  // a hit

    system.import_module("app");
    system.import_module("pkg.sub");
    std::thread holder([&] { system.import_module("slow"); });
    await([&] { return system.is_initializing("slow"); });
    std::thread waiter([&] { system.import_module("user"); });
    await([&] { return system.waiter_count("slow") == 1; });
    // The wait lasts at least this long; it is excluded from user's self time.
    const auto held = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - held < 50ms) std::this_thread::yield();
    release.count_down();
    holder.join();
    waiter.join();
    system.import_module("late");

    using edge = std::pair<std::string, std::string>;
    auto edges = profile->edges();
    const std::set<edge> before(edges.begin(), edges.end());
    REQUIRE(before.count({"app", "db"}) == 1);
    REQUIRE(before.count({"db", "log"}) == 1);
    REQUIRE(before.count({"db", "app"}) == 1);       // the cycle's back edge (on_cycle)
    REQUIRE(before.count({"pkg.sub", "pkg"}) == 1);  // the parent
    REQUIRE(before.count({"user", "slow"}) == 1);    // the wait
    REQUIRE(before.count({"late", "log"}) == 0);     // a hit: no hook saw it
    profile->add_dependencies(system);
    edges = profile->edges();
    const std::set<edge> after(edges.begin(), edges.end());
    REQUIRE(after.count({"late", "log"}) == 1);
    REQUIRE(after.count({"app", "log"}) == 1);

    const std::vector<std::string> keys = profile->keys();
    REQUIRE(keys ==
            std::vector<std::string>{"app", "db", "log", "pkg", "pkg.sub", "slow", "user", "late"});
    REQUIRE(profile->self_time("slow") >= 50ms);
    REQUIRE(profile->self_time("user") < 50ms);
}

// --- preload -----------------------------------------------------------------------------

namespace {

// app imports db, cache, ui; db imports net, log; cache imports log; ui imports font.
str_profile scripted_profile() {
    str_profile p;
    p.add_key("app", 1ns);
    p.add_key("db", 10ns);
    p.add_key("net", 50ns);
    p.add_key("log", 5ns);
    p.add_key("cache", 30ns);
    p.add_key("ui", 10ns);
    p.add_key("font", 20ns);
    p.add_edge("app", "db");
    p.add_edge("app", "cache");
    p.add_edge("app", "ui");
    p.add_edge("db", "net");
    p.add_edge("db", "log");
    p.add_edge("cache", "log");
    p.add_edge("ui", "font");
    return p;
}

void define_all(importlock::import_system<mod>& system, const str_profile& profile,
                std::vector<std::string>* log = nullptr, std::mutex* log_mutex = nullptr) {
    for (const std::string& key : profile.keys()) {
        const std::vector<std::string> deps = profile.dependencies(key);
        system.finder().define(key, [=](mod&, importlock::importer<std::string, mod>& imp) {
            for (const std::string& d : deps) imp.import_module(d);
            if (log != nullptr) {
                std::lock_guard lock(*log_mutex);
                log->push_back(key);
            }
        });
    }
}

std::vector<std::string> names(const std::vector<std::size_t>& order,
                               const std::vector<std::string>& keys) {
    std::vector<std::string> out;
    for (const std::size_t i : order) out.push_back(keys[i]);
    return out;
}

}  // namespace

TEST_CASE("plan_preload ranks by longest remaining path and breaks recorded cycles", "[preload]") {
    str_profile profile = scripted_profile();
    auto plan = importlock::plan_preload(profile);
    const auto at = [&](const std::string& k) {
        return plan.priority[static_cast<std::size_t>(
            std::find(plan.keys.begin(), plan.keys.end(), k) - plan.keys.begin())];
    };
    REQUIRE(at("app") == 1ns);
    REQUIRE(at("db") == 11ns);
    REQUIRE(at("cache") == 31ns);
    REQUIRE(at("net") == 61ns);
    REQUIRE(at("log") == 36ns);
    REQUIRE(at("font") == 31ns);
    REQUIRE(names(plan.critical_path, plan.keys) == std::vector<std::string>{"net", "db", "app"});
    REQUIRE(plan.critical_path_time == 61ns);
    REQUIRE(plan.total_work == 126ns);
    REQUIRE(plan.broken_edges == 0);
    // One worker: the ready key with the highest priority first, ties in profile order.
    const std::vector<std::string> order = {"net", "log", "cache", "font", "db", "ui", "app"};
    REQUIRE(names(plan.sequential_order(), plan.keys) == order);

    // log imports app: a recorded circular import. The back edge found from
    // app (first in the profile) is dropped; the schedule is unchanged.
    profile.add_edge("log", "app");
    plan = importlock::plan_preload(profile);
    REQUIRE(plan.broken_edges == 1);
    REQUIRE(names(plan.sequential_order(), plan.keys) == order);

    // Run it on one worker (the caller): the loaders run in that order.
    watchdog dog("preload one worker");
    importlock::import_system<mod> system;
    std::vector<std::string> ran;
    std::mutex ran_mutex;
    define_all(system, scripted_profile(), &ran, &ran_mutex);  // loaders without the cycle
    const auto report = importlock::preload(system, profile, 1);
    REQUIRE(report.ok());
    REQUIRE(report.threads == 1);
    REQUIRE(report.started == order);
    REQUIRE(report.imported == order);
    REQUIRE(ran == order);  // each loader ran once, its dependencies were hits
    REQUIRE(report.critical_path == std::vector<std::string>{"net", "db", "app"});
    REQUIRE(report.bound() == 126ns);  // max(61, 126 / 1)
    REQUIRE(report.broken_edges == 1);
    REQUIRE(system.lock_count() == 0);
}

TEST_CASE("preload runs independent subtrees in parallel and dependencies first",
          "[preload][threaded]") {
    watchdog dog("preload two workers");
    // left and right can only finish together (a barrier of 2): the preload
    // must run them at once. top needs both; its loader starts after they ended.
    importlock::import_system<mod> system;
    std::barrier both(2);
    std::atomic<int> sequence{0};
    int left_end = -1, right_end = -1, top_begin = -1;
    system.finder().define("left", [&](mod&, auto&) {
        both.arrive_and_wait();
        left_end = sequence++;
    });
    system.finder().define("right", [&](mod&, auto&) {
        both.arrive_and_wait();
        right_end = sequence++;
    });
    system.finder().define("top", [&](mod&, auto& imp) {
        top_begin = sequence++;
        imp.import_module("left");
        imp.import_module("right");
    });
    str_profile profile;
    profile.add_key("top", 1ns);
    profile.add_key("left", 100ns);
    profile.add_key("right", 90ns);
    profile.add_edge("top", "left");
    profile.add_edge("top", "right");
    const auto report = importlock::preload(system, profile, 2);
    REQUIRE(report.ok());
    REQUIRE(report.threads == 2);
    REQUIRE(report.imported.size() == 3);
    REQUIRE(report.started.back() == "top");
    REQUIRE(top_begin > left_end);
    REQUIRE(top_begin > right_end);

    // Without a profile: the keys in the given order, two at a time.
    importlock::import_system<mod> plain;
    std::barrier pair(2);
    plain.finder().define("x", [&](mod&, auto&) { pair.arrive_and_wait(); });
    plain.finder().define("y", [&](mod&, auto&) { pair.arrive_and_wait(); });
    const auto unordered = importlock::preload(plain, std::vector<std::string>{"x", "y"}, 2);
    REQUIRE(unordered.ok());
    REQUIRE(unordered.imported.size() == 2);
    REQUIRE(unordered.critical_path.empty());
    REQUIRE(unordered.bound() == 0ns);
}

TEST_CASE("preload reports failures with their exceptions and goes on", "[preload][threaded]") {
    watchdog dog("preload failures");
    struct broken : std::runtime_error {
        broken() : std::runtime_error("broken loader") {}
    };
    importlock::import_system<mod> system;
    std::atomic<int> runs{0};
    system.finder().define("bad", [&](mod&, auto&) {
        ++runs;
        throw broken();
    });
    system.finder().define("needs_bad", [](mod&, auto& imp) { imp.import_module("bad"); });
    system.finder().define("fine", [](mod&, auto&) {});
    system.finder().define("after", [](mod&, auto& imp) { imp.import_module("fine"); });
    str_profile profile;
    profile.add_key("needs_bad", 1ns);
    profile.add_key("bad", 1ns);
    profile.add_key("fine", 1ns);
    profile.add_key("after", 1ns);
    profile.add_key("gone", 1ns);  // no longer defined
    profile.add_edge("needs_bad", "bad");
    profile.add_edge("after", "fine");
    for (const std::size_t threads : {std::size_t{1}, std::size_t{3}}) {
        runs = 0;
        const auto report = importlock::preload(system, profile, threads);
        REQUIRE_FALSE(report.ok());
        std::set<std::string> failed;
        for (const auto& f : report.failures) {
            failed.insert(f.key);
            REQUIRE(f.error != nullptr);
        }
        REQUIRE(failed == std::set<std::string>{"bad", "needs_bad", "gone"});
        REQUIRE(std::set<std::string>(report.imported.begin(), report.imported.end()) ==
                std::set<std::string>{"fine", "after"});
        for (const auto& f : report.failures) {
            if (f.key == "bad") REQUIRE_THROWS_AS(std::rethrow_exception(f.error), broken);
            if (f.key == "gone") {
                REQUIRE_THROWS_AS(std::rethrow_exception(f.error),
                                  importlock::module_not_found_error);
            }
        }
        // needs_bad started after bad failed (a failure counts as done) and retried it.
        REQUIRE(runs == 2);
        const std::string text = report.to_string();
        REQUIRE(text.find("failed: bad: broken loader") != std::string::npos);
        REQUIRE(system.lock_count() == 0);
        system.clear();
    }
    // Without a profile too.
    const auto plain = importlock::preload(system, {"fine", "bad", "gone"}, 2);
    REQUIRE(plain.failures.size() == 2);
    REQUIRE(plain.imported == std::vector<std::string>{"fine"});
}

// --- import_watchdog ---------------------------------------------------------------------

TEST_CASE("the watchdog reports each stuck import once, with the snapshot",
          "[watchdog][threaded]") {
    watchdog dog("import_watchdog");
    importlock::import_system<mod> system;
    std::latch release(1);
    system.finder().define("slow", [&](mod&, auto&) { release.wait(); });
    system.finder().define("outer", [](mod&, auto& imp) { imp.import_module("slow"); });
    system.finder().define("quick", [](mod&, auto&) {});

    std::mutex mutex;
    std::vector<importlock::stuck_import> stuck;
    std::vector<std::string> texts;
    importlock::import_watchdog hang(
        20ms,
        [&](const importlock::watchdog_report& r) {
            std::lock_guard lock(mutex);
            stuck.insert(stuck.end(), r.stuck.begin(), r.stuck.end());
            std::ostringstream text;
            r.write_text(text);
            texts.push_back(text.str());
        },
        2ms);
    hang.watch(system, "services");
    system.import_module("quick");  // too fast to be stuck

    std::thread holder([&] { system.import_module("slow"); });
    await([&] { return system.is_initializing("slow"); });
    std::thread waiter([&] { system.import_module("slow"); });   // imports nothing, waits
    std::thread nested([&] { system.import_module("outer"); });  // imports outer, waits
    await([&] { return system.waiter_count("slow") == 2; });
    await([&] { return hang.reported() == 3; });
    // Many more polls see the same stuck imports: no second report.
    const std::size_t polls = hang.polls();
    await([&] { return hang.polls() >= polls + 10; });
    REQUIRE(hang.reported() == 3);
    release.count_down();
    holder.join();
    waiter.join();
    nested.join();
    const std::size_t after = hang.polls();
    await([&] { return hang.polls() >= after + 3; });
    REQUIRE(hang.reported() == 3);

    std::lock_guard lock(mutex);
    REQUIRE(stuck.size() == 3);
    std::set<std::pair<std::string, bool>> seen;
    for (const auto& s : stuck) {
        seen.insert({s.key, s.waiting});
        REQUIRE(s.system == "services");
        REQUIRE(s.age >= 20ms);
    }
    REQUIRE(seen == std::set<std::pair<std::string, bool>>{
                        {"slow", false}, {"slow", true}, {"outer", false}});
    REQUIRE(texts.front().find("importlock watchdog: services: thread ") != std::string::npos);
    REQUIRE(std::any_of(texts.begin(), texts.end(), [](const std::string& t) {
        return t.find("waiting for slow (held by thread") != std::string::npos;
    }));
}

TEST_CASE("the watchdog reports a new stuck import of the same thread, and stops promptly",
          "[watchdog][threaded]") {
    watchdog dog("import_watchdog re-arm");
    importlock::import_system<mod> system;
    std::latch first(1), second(1);
    std::latch reached_second(1);
    system.finder().define("one", [&](mod&, auto&) { first.wait(); });
    system.finder().define("two", [&](mod&, auto&) {
        reached_second.count_down();
        second.wait();
    });
    std::atomic<std::size_t> reports{0};
    {
        importlock::import_watchdog hang(
            10ms, [&](const importlock::watchdog_report& r) { reports += r.stuck.size(); }, 1ms);
        hang.watch(system);
        std::thread t([&] {
            system.import_module("one");
            system.import_module("two");
        });
        await([&] { return reports == 1; });
        first.count_down();
        reached_second.wait();
        await([&] { return reports == 2; });
        // Unwatched: no further poll of the system.
        hang.unwatch(system);
        second.count_down();
        t.join();
        REQUIRE(hang.reported() == 2);
    }
    // An hour's threshold: destruction does not wait for the next poll.
    const auto start = std::chrono::steady_clock::now();
    {
        importlock::import_watchdog idle(std::chrono::hours(1));
    }
    REQUIRE(std::chrono::steady_clock::now() - start < 10s);
}

TEST_CASE("the watchdog clamps its poll interval: no busy loop, no clock overflow", "[watchdog]") {
    const auto none = [](const importlock::watchdog_report&) {};
    {
        importlock::import_watchdog zero(std::chrono::nanoseconds(0), none,
                                         std::chrono::nanoseconds(0));
        REQUIRE(zero.poll_interval() == std::chrono::milliseconds(1));
        importlock::import_watchdog negative(std::chrono::seconds(-5), none);
        REQUIRE(negative.poll_interval() == std::chrono::milliseconds(1));
    }
    const auto start = std::chrono::steady_clock::now();
    {
        importlock::import_watchdog huge(std::chrono::nanoseconds::max(), none,
                                         std::chrono::nanoseconds::max());
        REQUIRE(huge.poll_interval() == std::chrono::hours(1));
        REQUIRE(huge.polls() == 0);  // it waits instead of spinning
    }
    REQUIRE(std::chrono::steady_clock::now() - start < 10s);
}

// --- trace_recorder ----------------------------------------------------------------------

namespace {

// Checks that the spans of each track nest: every span lies inside the
// enclosing open span, at the depth it reports.
void require_nested(const std::vector<importlock::trace_event>& events) {
    using kind = importlock::trace_event::kind;
    unsigned track = 0;
    std::vector<const importlock::trace_event*> open;
    for (const importlock::trace_event& e : events) {
        if (e.track != track) {
            track = e.track;
            open.clear();
        }
        // Close the spans that do not contain this one.
        while (!open.empty() &&
               !(e.start >= open.back()->start &&
                 e.start + e.duration <= open.back()->start + open.back()->duration)) {
            open.pop_back();
        }
        INFO("track " << e.track << " span " << e.key);
        REQUIRE(e.depth == open.size());
        if (e.type != kind::cycle) open.push_back(&e);
    }
}

}  // namespace

TEST_CASE("the trace has a track per thread, nested spans, waits with owners and cycles",
          "[trace][trace-json][threaded]") {
    watchdog dog("trace_recorder");
    constexpr int workers = 8;
    importlock::import_system<mod> system;
    auto trace = std::make_shared<importlock::trace_recorder<std::string>>();
    auto times = std::make_shared<importlock::import_time_recorder<std::string>>();
    system.set_observer(std::make_shared<importlock::observer_group<std::string>>(trace, times));
    trace->name_thread("main");

    std::latch release(1);
    // Each worker w: w.a -> w.b -> (w.c, shared); "shared" is held by the
    // first worker to reach it until all the others wait for it.
    system.finder().define("shared", [&](mod&, auto&) { release.wait(); });
    for (int w = 0; w < workers; ++w) {
        const std::string p = "w" + std::to_string(w);
        system.finder().define(p + ".a", [p](mod&, auto& imp) { imp.import_module(p + ".b"); });
        system.finder().define(p + ".b", [p](mod&, auto& imp) {
            imp.import_module(p + ".c");
            imp.import_module("shared");
        });
        system.finder().define(p + ".c", [](mod&, auto&) {});
        system.finder().define(p, [](mod&, auto&) {});  // the parent package
    }
    system.finder().define("cyc", [](mod&, auto& imp) { imp.import_module("cyc.helper"); });
    system.finder().define("cyc.helper", [](mod&, auto& imp) { imp.import_module("cyc"); });

    std::barrier start(workers);
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
        threads.emplace_back([&, w] {
            start.arrive_and_wait();
            system.import_module("w" + std::to_string(w) + ".a");
        });
    }
    await([&] { return system.waiter_count("shared") == workers - 1; });
    release.count_down();
    for (std::thread& t : threads) t.join();
    system.import_module("cyc");

    const std::vector<importlock::trace_event> events = trace->events();
    require_nested(events);
    using kind = importlock::trace_event::kind;
    std::size_t imports = 0, waits = 0, cycles = 0;
    std::set<unsigned> tracks;
    unsigned shared_track = 0;
    for (const auto& e : events) {
        tracks.insert(e.track);
        REQUIRE(e.finished);
        if (e.type == kind::import) ++imports;
        if (e.type == kind::import && e.key == "shared") shared_track = e.track;
    }
    for (const auto& e : events) {
        if (e.type == kind::wait) {
            ++waits;
            REQUIRE(e.key == "shared");
            REQUIRE(e.owner_track == shared_track);
            REQUIRE(e.depth == 2);  // inside w.a and w.b
        }
        if (e.type == kind::cycle) {
            ++cycles;
            REQUIRE(e.detail == "cyc -> cyc.helper -> cyc (partial module)");
        }
    }
    // 8 x (package, a, b, c) + shared + cyc + cyc.helper.
    REQUIRE(imports == workers * 4 + 3);
    REQUIRE(waits == workers - 1);
    REQUIRE(cycles == 1);
    REQUIRE(tracks.size() == workers + 1);  // the workers and main
    REQUIRE(trace->track_names().at(0) == "main");
    REQUIRE(times->records().size() == imports);  // the group fed both

    const std::string json = trace->to_json();
    REQUIRE(json.rfind("{\"traceEvents\": [", 0) == 0);
    REQUIRE(json.find("\"ph\": \"i\"") != std::string::npos);
    REQUIRE(json.find("\"owner\": ") != std::string::npos);
    std::ostringstream svg_out;
    trace->write_svg(svg_out);
    const std::string svg = svg_out.str();
    REQUIRE(svg.find("<svg") == 0);
    REQUIRE(std::count(svg.begin(), svg.end(), '\n') > 40);
    if (const char* out = std::getenv("IMPORTLOCK_TRACE_OUT")) {
        std::ofstream file(out);
        trace->write(file);
        REQUIRE(file.good());
    }
}

TEST_CASE("the trace escapes keys into valid JSON strings", "[trace]") {
    std::string s;
    importlock::detail::json_string(s, "a\"b\\c\nd\x01\xc3\xa9\xff\xe2\x82");
    REQUIRE(s == "\"a\\\"b\\\\c\\u000ad\\u0001\xc3\xa9\\ufffd\\ufffd\\ufffd\"");
}

// --- observer_group ----------------------------------------------------------------------

TEST_CASE("observer_group forwards in order and keeps each member's hooks balanced", "[group]") {
    struct log_member : importlock::import_observer<std::string> {
        std::string name;
        std::vector<std::string>* lines;
        std::mutex* mutex;
        bool throw_begin = false, throw_wait = false;
        log_member(std::string n, std::vector<std::string>* l, std::mutex* m)
            : name(std::move(n)), lines(l), mutex(m) {}
        void add(std::string line) {
            std::lock_guard lock(*mutex);
            lines->push_back(std::move(line));
        }
        void on_import_begin(const std::string& k) override {
            add(name + " begin " + k);
            if (throw_begin) throw std::logic_error("refused");
        }
        void on_import_end(const std::string& k, std::chrono::nanoseconds) override {
            add(name + " end " + k);
            throw std::logic_error("swallowed");  // the next member still hears it
        }
        void on_import_failed(const std::string& k, std::exception_ptr) override {
            add(name + " failed " + k);
        }
        void on_wait(const std::string& k, std::thread::id) override {
            add(name + " wait " + k);
            if (throw_wait) throw std::logic_error("no waiting");
        }
        void on_wait_end(const std::string& k, std::chrono::nanoseconds) override {
            add(name + " wait end " + k);
        }
    };
    std::vector<std::string> log;
    std::mutex log_mutex;
    auto first = std::make_shared<log_member>("1", &log, &log_mutex);
    auto second = std::make_shared<log_member>("2", &log, &log_mutex);
    auto group = std::make_shared<importlock::observer_group<std::string>>(first, second);
    REQUIRE(group->members().size() == 2);
    importlock::import_system<mod> system;
    system.finder().define("k", [](mod&, auto&) {});
    system.set_observer(group);
    system.import_module("k");
    REQUIRE(log == std::vector<std::string>{"1 begin k", "2 begin k", "1 end k", "2 end k"});

    log.clear();
    second->throw_begin = true;
    system.erase("k");
    REQUIRE_THROWS_WITH(system.import_module("k"), "refused");
    // 1 saw the begin and hears of the failure; 2's begin threw: nothing more.
    REQUIRE(log == std::vector<std::string>{"1 begin k", "2 begin k", "1 failed k"});
    REQUIRE(system.lock_count() == 0);

    // A throwing on_wait: the members before it see the wait end.
    log.clear();
    second->throw_begin = false;
    second->throw_wait = true;
    {
        watchdog dog("observer_group wait");
        std::latch release(1);
        system.finder().define("slow", [&](mod&, auto&) { release.wait(); });
        std::thread holder([&] { system.import_module("slow"); });
        await([&] { return system.is_initializing("slow"); });
        REQUIRE_THROWS_WITH(system.import_module("slow"), "no waiting");
        release.count_down();
        holder.join();
    }
    REQUIRE(std::count(log.begin(), log.end(), "1 wait slow") == 1);
    REQUIRE(std::count(log.begin(), log.end(), "1 wait end slow") == 1);
    REQUIRE(std::count(log.begin(), log.end(), "2 wait end slow") == 0);
}
