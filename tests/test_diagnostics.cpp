// SPDX-License-Identifier: BSL-1.0
// Diagnostics: observer hooks, the import-time recorder, live snapshots, the
// dependency graph and teardown order.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using importlock_test::await;
using importlock_test::watchdog;

struct mod {
    int value = 0;
};

// Logs every hook as one line, thread-safely.
class logging_observer : public importlock::import_observer<std::string> {
public:
    void on_import_begin(const std::string& key) override { add("begin " + key); }
    void on_import_end(const std::string& key, std::chrono::nanoseconds elapsed) override {
        add(std::string(elapsed.count() < 0 ? "negative " : "") + "end " + key);
    }
    void on_import_failed(const std::string& key, std::exception_ptr error) override {
        add(std::string(error == nullptr ? "null " : "") + "failed " + key);
    }
    void on_wait(const std::string& key, std::thread::id holder) override {
        add("wait " + key + (holder == std::thread::id{} ? " nobody" : ""));
    }
    void on_wait_end(const std::string& key, std::chrono::nanoseconds waited) override {
        add(std::string(waited.count() < 0 ? "negative " : "") + "wait end " + key);
    }
    void on_cycle(const std::string& key, const std::vector<std::string>& chain,
                  bool partial) override {
        std::string line = std::string(partial ? "partial " : "error ") + key + ":";
        for (const auto& k : chain) line += " " + k;
        add(line);
    }
    void on_reload(const std::string& key, std::chrono::nanoseconds, bool ok) override {
        add(std::string(ok ? "reloaded " : "reload failed ") + key);
    }

    std::vector<std::string> lines() const {
        std::lock_guard lock(mutex_);
        return lines_;
    }

private:
    void add(std::string line) {
        std::lock_guard lock(mutex_);
        lines_.push_back(std::move(line));
    }
    mutable std::mutex mutex_;
    std::vector<std::string> lines_;
};

// Logs the order in which modules are destroyed.
struct tracked {
    std::string name;
    std::vector<std::string>* log = nullptr;
    ~tracked() {
        if (log != nullptr) log->push_back(name);
    }
};

}  // namespace

TEST_CASE("observer hooks see begin, end, failure, cycles and reloads", "[diagnostics]") {
    importlock::import_system<mod> system;
    auto observer = std::make_shared<logging_observer>();
    system.set_observer(observer);
    REQUIRE(system.observer() == observer);
    system.finder().define("a", [](mod& m, auto& imp) {
        imp.import_module("b");
        m.value = 1;
    });
    system.finder().define("b", [](mod&, auto& imp) { imp.import_module("a"); });
    system.finder().define("bad", [](mod&, auto&) { throw std::runtime_error("bad"); });
    system.import_module("a");
    system.import_module("a");  // a hit: no events
    REQUIRE_THROWS(system.import_module("bad"));
    system.reload("b");
    REQUIRE(observer->lines() == std::vector<std::string>{"begin a", "begin b", "partial a: a b a",
                                                          "end b", "end a", "begin bad",
                                                          "failed bad", "reloaded b"});
    system.set_observer(nullptr);
    system.import_module("b");
    REQUIRE(observer->lines().size() == 8);
}

TEST_CASE("a throwing on_import_begin aborts the import cleanly", "[diagnostics]") {
    struct refusing : importlock::import_observer<std::string> {
        void on_import_begin(const std::string&) override { throw std::logic_error("no"); }
        void on_import_end(const std::string&, std::chrono::nanoseconds) override {
            throw std::logic_error("swallowed");
        }
    };
    importlock::import_system<mod> system;
    int runs = 0;
    system.finder().define("k", [&](mod&, auto&) { ++runs; });
    system.set_observer(std::make_shared<refusing>());
    REQUIRE_THROWS_AS(system.import_module("k"), std::logic_error);
    REQUIRE(runs == 0);
    REQUIRE_FALSE(system.contains("k"));
    REQUIRE(system.lock_count() == 0);

    struct noisy_end : importlock::import_observer<std::string> {
        void on_import_end(const std::string&, std::chrono::nanoseconds) override {
            throw std::logic_error("swallowed");
        }
    };
    system.set_observer(std::make_shared<noisy_end>());
    REQUIRE(system.import_module("k") != nullptr);  // the outcome stands
    REQUIRE(runs == 1);
}

TEST_CASE("on_wait names the key and its holder", "[diagnostics][threaded]") {
    watchdog dog("on_wait");
    importlock::import_system<mod> system;
    auto observer = std::make_shared<logging_observer>();
    system.set_observer(observer);
    std::latch release(1);
    system.finder().define("slow", [&](mod&, auto&) { release.wait(); });
    std::thread holder([&] { system.import_module("slow"); });
    await([&] { return system.is_initializing("slow"); });
    std::thread waiter([&] { system.import_module("slow"); });
    await([&] { return system.waiter_count("slow") == 1; });
    release.count_down();
    holder.join();
    waiter.join();
    const auto lines = observer->lines();
    REQUIRE(std::count(lines.begin(), lines.end(), "wait slow") == 1);
    REQUIRE(std::count(lines.begin(), lines.end(), "begin slow") == 1);
    // The waiter found the module loaded: its wait ended, after it began.
    REQUIRE(std::count(lines.begin(), lines.end(), "wait end slow") == 1);
    REQUIRE(std::find(lines.begin(), lines.end(), "wait slow") <
            std::find(lines.begin(), lines.end(), "wait end slow"));
}

TEST_CASE("on_wait_end reports a wait that timed out, outside the system's locks",
          "[diagnostics][threaded]") {
    watchdog dog("on_wait_end on timeout");
    importlock::import_system<mod> system;
    struct querying : logging_observer {
        importlock::import_system<mod>* system = nullptr;
        std::size_t locks_seen = 0;
        void on_wait_end(const std::string& key, std::chrono::nanoseconds waited) override {
            locks_seen = system->lock_count();  // would deadlock under the state mutex
            logging_observer::on_wait_end(key, waited);
        }
    };
    auto observer = std::make_shared<querying>();
    observer->system = &system;
    system.set_observer(observer);
    std::latch release(1);
    system.finder().define("slow", [&](mod&, auto&) { release.wait(); });
    std::thread holder([&] { system.import_module("slow"); });
    await([&] { return system.is_initializing("slow"); });
    REQUIRE_THROWS_AS(system.import_module_for("slow", std::chrono::milliseconds(20)),
                      importlock::import_timeout_error);
    release.count_down();
    holder.join();
    const auto lines = observer->lines();
    REQUIRE(std::count(lines.begin(), lines.end(), "wait slow") == 1);
    REQUIRE(std::count(lines.begin(), lines.end(), "wait end slow") == 1);
    REQUIRE(observer->locks_seen == 1);  // the holder's lock; this thread waits no more
}

TEST_CASE("import_time_recorder nests per thread, as -X importtime", "[diagnostics]") {
    importlock::import_system<mod> system;
    auto recorder = std::make_shared<importlock::import_time_recorder<std::string>>();
    system.set_observer(recorder);
    system.finder().define("app", [](mod&, auto& imp) {
        imp.import_module("config");
        imp.import_module("server");
    });
    system.finder().define("config", [](mod&, auto&) {});
    system.finder().define("server", [](mod&, auto& imp) { imp.import_module("socket"); });
    system.finder().define("socket", [](mod&, auto&) {});
    system.finder().define("bad", [](mod&, auto&) { throw std::runtime_error("x"); });
    system.import_module("app");
    REQUIRE_THROWS(system.import_module("bad"));

    const auto records = recorder->records();
    REQUIRE(records.size() == 5);
    std::vector<std::string> order;
    for (const auto& r : records) order.push_back(r.key + "@" + std::to_string(r.depth));
    REQUIRE(order ==
            std::vector<std::string>{"config@1", "socket@2", "server@1", "app@0", "bad@0"});
    const auto& app = records[3];
    const auto& server = records[2];
    REQUIRE(app.cumulative >= server.cumulative + records[0].cumulative);
    REQUIRE(app.self + records[0].cumulative + server.cumulative == app.cumulative);
    REQUIRE(server.self + records[1].cumulative == server.cumulative);
    REQUIRE_FALSE(records[4].ok);

    const std::string text = recorder->to_string();
    std::istringstream lines(text);
    std::string header;
    std::getline(lines, header);
    REQUIRE(header == "import time: self [us] | cumulative | imported package");
    REQUIRE(text.find("|     socket\n") != std::string::npos);  // two spaces per level
    REQUIRE(text.find("| app\n") != std::string::npos);
    REQUIRE(text.find("| bad (failed)\n") != std::string::npos);
    recorder->reset();
    REQUIRE(recorder->records().empty());
}

TEST_CASE("import_time_recorder keeps concurrent imports apart", "[diagnostics][threaded]") {
    watchdog dog("import time threads");
    importlock::import_system<mod> system;
    auto recorder = std::make_shared<importlock::import_time_recorder<std::string>>();
    system.set_observer(recorder);
    std::barrier both(2);
    system.finder().define("left", [&](mod&, auto& imp) {
        both.arrive_and_wait();  // both outer imports are running at once
        imp.import_module("left.leaf");
    });
    system.finder().define("left.leaf", [](mod&, auto&) {});
    system.finder().define("right", [&](mod&, auto&) { both.arrive_and_wait(); });
    std::thread t1([&] { system.import_module("left"); });
    std::thread t2([&] { system.import_module("right"); });
    t1.join();
    t2.join();
    for (const auto& r : recorder->records()) {
        // Neither outer import is nested in the other, whatever the timing.
        if (r.key == "left" || r.key == "right") REQUIRE(r.depth == 0);
        if (r.key == "left.leaf") REQUIRE(r.depth == 1);
    }
    REQUIRE(recorder->records().size() == 3);
    REQUIRE(recorder->to_string().find("-- thread") != std::string::npos);
}

TEST_CASE("snapshot shows who initialises and who waits", "[diagnostics][threaded]") {
    watchdog dog("snapshot");
    importlock::import_system<mod> system;
    REQUIRE(system.snapshot().empty());
    REQUIRE(system.snapshot().to_text() == "no import in flight\n");
    std::latch release(1);
    system.finder().define("outer", [&](mod&, auto& imp) { imp.import_module("inner"); });
    system.finder().define("inner", [&](mod&, auto&) { release.wait(); });
    std::thread holder([&] { system.import_module("outer"); });
    await([&] { return system.is_initializing("inner"); });
    std::thread waiter([&] { system.import_module("outer"); });
    await([&] { return system.waiter_count("outer") == 1; });

    const auto snap = system.snapshot();
    REQUIRE(snap.locks.size() == 2);
    REQUIRE(snap.threads.size() == 2);
    bool found_holder = false;
    bool found_waiter = false;
    for (const auto& t : snap.threads) {
        if (t.thread == holder.get_id()) {
            found_holder = true;
            REQUIRE(t.importing == std::vector<std::string>{"outer", "inner"});
            REQUIRE_FALSE(t.waiting_for.has_value());
        }
        if (t.thread == waiter.get_id()) {
            found_waiter = true;
            REQUIRE(t.waiting_for == std::optional<std::string>("outer"));
            REQUIRE(t.waiting_for_thread == std::optional<std::thread::id>(holder.get_id()));
        }
    }
    REQUIRE(found_holder);
    REQUIRE(found_waiter);
    const std::string text = snap.to_text();
    REQUIRE(text.find("importing outer -> inner") != std::string::npos);
    REQUIRE(text.find("waiting for outer (held by thread") != std::string::npos);
    const std::string dot = snap.to_dot();
    REQUIRE(dot.rfind("digraph imports_in_flight {", 0) == 0);
    REQUIRE(dot.find("\"outer\" [shape=box]") != std::string::npos);
    REQUIRE(dot.find("waits for") != std::string::npos);

    release.count_down();
    holder.join();
    waiter.join();
    REQUIRE(system.snapshot().empty());
}

TEST_CASE("a loader's own snapshot and lock_count see its uncontended claim",
          "[diagnostics][uncontended]") {
    importlock::import_system<mod> system;
    importlock::import_snapshot inside;
    std::size_t locks_inside = 0;
    std::vector<std::string> deps_inside{"not read"};
    std::vector<std::string> dependents_inside{"not read"};
    system.finder().define("b", [](mod&, auto&) {});
    system.finder().define("a", [&](mod&, auto& imp) {
        imp.import_module("b");
        inside = system.snapshot();  // pins this thread's own claim while it reads it
        locks_inside = system.lock_count();
        // Recorded so far, but not published: an initialising key has no dependencies.
        deps_inside = system.dependencies("a");
        dependents_inside = system.dependents("b");
    });
    system.import_module("a");
    REQUIRE(inside.locks.size() == 1);
    CHECK(inside.locks[0].key == "a");
    CHECK(inside.locks[0].owner == std::this_thread::get_id());
    CHECK(inside.locks[0].depth == 1);
    CHECK(inside.locks[0].waiters.empty());
    REQUIRE(inside.threads.size() == 1);
    CHECK(inside.threads[0].thread == std::this_thread::get_id());
    CHECK(inside.threads[0].importing == std::vector<std::string>{"a"});
    CHECK_FALSE(inside.threads[0].waiting_for.has_value());
    CHECK(locks_inside == 1);
    CHECK(deps_inside.empty());
    CHECK(dependents_inside.empty());
    // Released by the claim's compare-and-swap (the pin was undone), published with its
    // dependencies.
    CHECK(system.lock_count() == 0);
    CHECK(system.snapshot().empty());
    CHECK(system.dependencies("a") == std::vector<std::string>{"b"});
    CHECK(system.dependents("b") == std::vector<std::string>{"a"});
}

TEST_CASE("the dependency graph records what each loader imported", "[diagnostics]") {
    importlock::import_system<mod> system;
    system.finder().define("app", [](mod&, auto& imp) {
        imp.import_module("db");
        imp.import_ref("log");
        imp.import_module("db");  // recorded once
    });
    system.finder().define("db", [](mod&, auto& imp) { imp.import_module("log"); });
    system.finder().define("log", [](mod&, auto&) {});
    system.import_module("app");
    REQUIRE(system.dependencies("app") == std::vector<std::string>{"db", "log"});
    REQUIRE(system.dependencies("db") == std::vector<std::string>{"log"});
    REQUIRE(system.dependencies("log").empty());
    REQUIRE(system.dependencies("unknown").empty());
    auto dependents = system.dependents("log");
    std::sort(dependents.begin(), dependents.end());
    REQUIRE(dependents == std::vector<std::string>{"app", "db"});
    std::ostringstream dot;
    system.write_dependency_dot(dot);
    REQUIRE(dot.str().find("\"app\" -> \"db\";") != std::string::npos);
    REQUIRE(dot.str().find("\"db\" -> \"log\";") != std::string::npos);

    system.erase("app");
    REQUIRE(system.dependencies("app").empty());
    REQUIRE(system.dependents("db").empty());
}

TEST_CASE("clear and destruction drop dependents before their dependencies",
          "[diagnostics][teardown]") {
    std::vector<std::string> log;
    const auto define = [&log](auto& system, const std::string& key,
                               std::vector<std::string> deps) {
        system.finder().define(
            key,
            [key, deps](tracked& t, auto& imp) {
                for (const auto& d : deps) imp.import_module(d);
                t.name = key;
            },
            [&log](const std::string&) {
                auto t = std::make_shared<tracked>();
                t->log = &log;
                return t;
            });
    };
    SECTION("destruction") {
        {
            importlock::basic_import_system<std::string, tracked> system;
            define(system, "log", {});
            define(system, "db", {"log"});
            define(system, "cache", {"db", "log"});
            define(system, "api", {"cache", "db"});
            system.import_module("api");
        }
        REQUIRE(log == std::vector<std::string>{"api", "cache", "db", "log"});
    }
    SECTION("clear keeps modules users still hold alive, and allows reimporting") {
        importlock::basic_import_system<std::string, tracked> system;
        define(system, "log", {});
        define(system, "db", {"log"});
        auto db = system.import_module("db");
        REQUIRE(system.clear() == 2);
        REQUIRE(log == std::vector<std::string>{"log"});  // db is still held
        REQUIRE_FALSE(system.contains("db"));
        db.reset();
        REQUIRE(log == std::vector<std::string>{"log", "db"});
        REQUIRE(system.import_module("db")->name == "db");
    }
}
