// SPDX-License-Identifier: BSL-1.0
// The schedule explorer's own tests (tests/support/schedule_explorer.hpp): it counts
// the schedules of tiny programs exactly (against an independent enumeration), and it
// finds and reports the classic bugs of toy programs: a check-then-act race, a lost
// wake-up, an ABBA deadlock, a missing predicate loop around a wait, a spin loop; the
// schedule it reports replays to the same failure. A spin wait polling spin_point() lets
// the thread it waits for run, and ends in every schedule.
#include "support/catch.hpp"
#include "support/explorer_catch.hpp"
#include "support/schedule_explorer.hpp"
#include "support/watchdog.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

namespace explorer = importlock_test::explorer;
using importlock_test::watchdog;

// --- exact schedule counts ---------------------------------------------------------------

// A toy program: each thread runs a list of operations on two explorer mutexes.
enum class toy_op { yield, lock0, unlock0, lock1, unlock1 };
using toy_thread = std::vector<toy_op>;

// Counts the schedules of `program` the way the explorer defines them, without it:
// a thread parks at its start and at each operation (before a yield or a lock, after
// an unlock); a lock of a held mutex cannot run; switching away from a thread that
// could go on costs one preemption. Returns {complete schedules, deadlocked ones}.
class toy_model {
public:
    toy_model(std::vector<toy_thread> program, int bound)
        : program_(std::move(program)), bound_(bound), at_(program_.size(), 0) {}

    std::pair<std::size_t, std::size_t> count() {
        complete_ = deadlocked_ = 0;
        search(-1, 0);
        return {complete_, deadlocked_};
    }

private:
    bool finished(std::size_t t) const { return at_[t] > program_[t].size(); }

    // The operation thread t is parked before (its point at_[t] >= 1), if any.
    bool runnable(std::size_t t) const {
        if (finished(t)) return false;
        if (at_[t] == 0) return true;
        switch (program_[t][at_[t] - 1]) {
            case toy_op::lock0: return owner_[0] < 0;
            case toy_op::lock1: return owner_[1] < 0;
            default: return true;
        }
    }

    void search(int previous, int preemptions) {
        std::vector<std::size_t> order;
        const bool continuing = previous >= 0 && runnable(static_cast<std::size_t>(previous));
        if (continuing) order.push_back(static_cast<std::size_t>(previous));
        for (std::size_t t = 0; t < program_.size(); ++t) {
            if (runnable(t) && !(continuing && static_cast<int>(t) == previous)) order.push_back(t);
        }
        if (order.empty()) {
            bool all = true;
            for (std::size_t t = 0; t < program_.size(); ++t) all = all && finished(t);
            ++(all ? complete_ : deadlocked_);
            return;
        }
        for (std::size_t i = 0; i < order.size(); ++i) {
            const int cost = continuing && i != 0 ? 1 : 0;
            if (bound_ >= 0 && preemptions + cost > bound_) continue;
            const std::size_t t = order[i];
            const std::array<int, 2> saved_owner = owner_;
            const std::size_t saved_at = at_[t];
            step(t);
            search(static_cast<int>(t), preemptions + cost);
            owner_ = saved_owner;
            at_[t] = saved_at;
        }
    }

    // Resumes t at its point: the point's effect, then on to the next point.
    void step(std::size_t t) {
        const toy_thread& ops = program_[t];
        if (at_[t] >= 1) {
            const toy_op here = ops[at_[t] - 1];
            if (here == toy_op::lock0) owner_[0] = static_cast<int>(t);
            if (here == toy_op::lock1) owner_[1] = static_cast<int>(t);
        }
        ++at_[t];
        if (at_[t] <= ops.size()) {
            const toy_op next = ops[at_[t] - 1];
            if (next == toy_op::unlock0) owner_[0] = -1;
            if (next == toy_op::unlock1) owner_[1] = -1;
        }
    }

    std::vector<toy_thread> program_;
    int bound_;
    std::vector<std::size_t> at_;  // 0: at the start; k: parked at operation k - 1
    std::array<int, 2> owner_{-1, -1};
    std::size_t complete_ = 0;
    std::size_t deadlocked_ = 0;
};

struct toy_state {
    std::array<explorer::mutex, 2> m;
};

explorer::scenario<toy_state> toy_scenario(const std::vector<toy_thread>& program) {
    explorer::scenario<toy_state> scen;
    for (const toy_thread& ops : program) {
        scen.threads.push_back([ops](toy_state& s) {
            for (const toy_op op : ops) {
                switch (op) {
                    case toy_op::yield: explorer::yield(); break;
                    case toy_op::lock0: s.m[0].lock(); break;
                    case toy_op::unlock0: s.m[0].unlock(); break;
                    case toy_op::lock1: s.m[1].lock(); break;
                    case toy_op::unlock1: s.m[1].unlock(); break;
                }
            }
        });
    }
    return scen;
}

explorer::result explore_toy(const std::vector<toy_thread>& program, int bound) {
    explorer::options opts;
    opts.name = "toy, bound " + std::to_string(bound);
    opts.preemption_bound = bound;
    opts.max_schedules = 1000000;
    return explorer::run(opts, toy_scenario(program));
}

TEST_CASE("explorer: exhaustive search counts the schedules of tiny programs exactly",
          "[explorer]") {
    watchdog dog("explorer exact counts");
    using enum toy_op;
    SECTION("known numbers") {
        // Two threads of 3 points each (start, yield, yield): C(6, 3) interleavings.
        const std::vector<toy_thread> two_by_two{{yield, yield}, {yield, yield}};
        CHECK(explore_toy(two_by_two, -1).schedules == 20);
        CHECK(explore_toy(two_by_two, 0).schedules == 2);  // who starts; no preemption
        // Three threads of 2 points each: 6! / (2! 2! 2!).
        const std::vector<toy_thread> three{{yield}, {yield}, {yield}};
        CHECK(explore_toy(three, -1).schedules == 90);
        CHECK(explore_toy(three, 0).schedules == 6);  // 3! orders
    }
    SECTION("against an independent enumeration") {
        const std::vector<std::vector<toy_thread>> programs{
            {{yield, yield}, {yield, yield}},
            {{yield, yield, yield}, {yield}},
            {{lock0, yield, unlock0}, {lock0, yield, unlock0}},
            {{lock0, unlock0, lock1, yield, unlock1}, {lock1, yield, unlock1, yield}},
            {{lock0, yield, unlock0}, {yield, lock0, unlock0}, {yield}},
            {{lock0, lock1, unlock1, unlock0}, {lock0, yield, lock1, unlock1, unlock0}},
        };
        for (std::size_t p = 0; p < programs.size(); ++p) {
            for (const int bound : {0, 1, 2, 3, -1}) {
                INFO("program " << p << ", bound " << bound);
                const auto [complete, deadlocked] = toy_model(programs[p], bound).count();
                REQUIRE(deadlocked == 0);
                const explorer::result r = explore_toy(programs[p], bound);
                INFO(r.report());
                CHECK(r.ok());
                CHECK(r.exhausted);
                CHECK(r.schedules == complete);
            }
        }
    }
}

// --- bugs the explorer must find ------------------------------------------------------------

// A check-then-act race: two threads claim a slot; both can see it free.
struct claim_state {
    std::atomic<bool> claimed{false};
    std::atomic<int> winners{0};
};

explorer::scenario<claim_state> racy_claim() {
    explorer::scenario<claim_state> scen;
    const auto body = [](claim_state& s) {
        if (!s.claimed.load()) {
            explorer::yield("between the check and the act");
            s.claimed.store(true);
            s.winners.fetch_add(1);
        }
    };
    scen.threads = {body, body};
    scen.final_check = [](claim_state& s) {
        explorer::check(s.winners.load() == 1,
                        std::to_string(s.winners.load()) + " threads claimed the slot");
    };
    return scen;
}

TEST_CASE("explorer: finds a check-then-act race and replays it", "[explorer]") {
    watchdog dog("explorer check-then-act");
    explorer::options opts;
    opts.name = "check-then-act";
    SECTION("not without a preemption") {
        opts.preemption_bound = 0;
        const explorer::result r = explorer::run(opts, racy_claim());
        INFO(r.report());
        CHECK(r.ok());
        CHECK(r.exhausted);
        CHECK(r.schedules == 2);
    }
    SECTION("with one preemption, exhaustively") {
        opts.preemption_bound = 1;
        const explorer::result r = explorer::run(opts, racy_claim());
        explorer::print(r);
        REQUIRE_FALSE(r.ok());
        CHECK(r.failed->kind == "check");
        CHECK(r.failed->message.find("2 threads claimed") != std::string::npos);
        CHECK(r.report().find("IMPORTLOCK_EXPLORER_REPLAY='check-then-act=") != std::string::npos);
        CHECK(r.failed->trace.find("between the check and the act") != std::string::npos);

        explorer::options again = opts;
        again.replay = r.failed->choices;
        const explorer::result replayed = explorer::run(again, racy_claim());
        REQUIRE_FALSE(replayed.ok());
        CHECK(replayed.schedules == 1);
        CHECK(replayed.failed->kind == "check");
        CHECK(replayed.failed->choices == r.failed->choices);
        CHECK(replayed.failed->trace == r.failed->trace);

        CHECK(explorer::parse_schedule(explorer::format_schedule(r.failed->choices)) ==
              r.failed->choices);
    }
    SECTION("randomised: pct and random walks") {
        opts.seed = explorer::catch_seed();
        opts.max_schedules = 2000;
        for (const auto mode : {explorer::strategy::pct, explorer::strategy::random}) {
            opts.mode = mode;
            const explorer::result r = explorer::run(opts, racy_claim());
            explorer::print(r);
            REQUIRE_FALSE(r.ok());
            CHECK(r.failed->kind == "check");
            explorer::options again = opts;
            again.replay = r.failed->choices;
            const explorer::result replayed = explorer::run(again, racy_claim());
            REQUIRE_FALSE(replayed.ok());
            CHECK(replayed.failed->choices == r.failed->choices);
        }
    }
}

// A lost wake-up: the notifier sets the flag without the mutex, so its notify can
// fall between the waiter's check and its wait.
struct flag_state {
    explorer::mutex m;
    explorer::condition_variable cv;
    std::atomic<bool> flag{false};
};

explorer::scenario<flag_state> wakeup(bool notifier_locks) {
    explorer::scenario<flag_state> scen;
    scen.threads.push_back([](flag_state& s) {
        std::unique_lock lk(s.m);
        if (!s.flag.load()) {
            explorer::yield("checked the flag");
            s.cv.wait(lk);
        }
    });
    scen.threads.push_back([notifier_locks](flag_state& s) {
        if (notifier_locks) {
            std::lock_guard guard(s.m);
            s.flag.store(true);
        } else {
            s.flag.store(true);
        }
        s.cv.notify_one();
    });
    return scen;
}

TEST_CASE("explorer: finds a lost wake-up as a deadlock", "[explorer]") {
    watchdog dog("explorer lost wake-up");
    explorer::options opts;
    opts.name = "lost wake-up";
    opts.leak_state_after_abort = false;  // toy state: safe to destroy
    SECTION("notify without the mutex") {
        const explorer::result r = explorer::run(opts, wakeup(false));
        explorer::print(r);
        REQUIRE_FALSE(r.ok());
        CHECK(r.failed->kind == "deadlock");
        CHECK(r.failed->threads.find("thread 0: in wait(cv#") != std::string::npos);
        CHECK(r.failed->threads.find("not notified") != std::string::npos);
        CHECK(r.failed->threads.find("thread 1: finished") != std::string::npos);
    }
    SECTION("the flag set under the mutex") {
        const explorer::result r = explorer::run(opts, wakeup(true));
        INFO(r.report());
        CHECK(r.ok());
        CHECK(r.exhausted);
    }
}

TEST_CASE("explorer: finds an ABBA deadlock", "[explorer]") {
    watchdog dog("explorer ABBA");
    using enum toy_op;
    const std::vector<toy_thread> abba{{lock0, lock1, unlock1, unlock0},
                                       {lock1, lock0, unlock0, unlock1}};
    explorer::options opts;
    opts.name = "ABBA";
    opts.leak_state_after_abort = false;
    SECTION("not without a preemption") {
        opts.preemption_bound = 0;
        const explorer::result r = explorer::run(opts, toy_scenario(abba));
        CHECK(r.ok());
        CHECK(r.exhausted);
        CHECK(r.schedules == 2);
    }
    SECTION("with one") {
        opts.preemption_bound = 1;
        const explorer::result r = explorer::run(opts, toy_scenario(abba));
        explorer::print(r);
        REQUIRE_FALSE(r.ok());
        CHECK(r.failed->kind == "deadlock");
        CHECK(r.failed->threads.find("thread 0: at lock(mutex#2), held by thread 1") !=
              std::string::npos);
        CHECK(r.failed->threads.find("thread 1: at lock(mutex#1), held by thread 0") !=
              std::string::npos);
        // One preemption (thread 0 stopped after its first lock) suffices.
        CHECK(r.failed->choices.size() <= 6);
    }
}

// A wait without a predicate loop: a spurious wake-up returns before the notify.
TEST_CASE("explorer: models spurious wake-ups and timed waits", "[explorer]") {
    watchdog dog("explorer spurious wake-ups");
    const auto waiter = [](bool loop) {
        return [loop](flag_state& s) {
            std::unique_lock lk(s.m);
            if (loop) {
                s.cv.wait(lk, [&] { return s.flag.load(); });
            } else if (!s.flag.load()) {
                s.cv.wait(lk);
            }
            if (!s.flag.load()) throw std::logic_error("woke up before the flag was set");
        };
    };
    const auto notifier = [](flag_state& s) {
        {
            std::lock_guard guard(s.m);
            s.flag.store(true);
        }
        s.cv.notify_all();
    };
    explorer::options opts;
    opts.name = "spurious";
    opts.spurious_wakeups = 1;
    SECTION("a bare wait") {
        explorer::scenario<flag_state> scen;
        scen.threads = {waiter(false), notifier};
        const explorer::result r = explorer::run(opts, scen);
        explorer::print(r);
        REQUIRE_FALSE(r.ok());
        CHECK(r.failed->kind == "exception");
        CHECK(r.failed->message.find("woke up before the flag was set") != std::string::npos);
        CHECK(r.failed->trace.find("spurious") != std::string::npos);
    }
    SECTION("a predicate loop") {
        explorer::scenario<flag_state> scen;
        scen.threads = {waiter(true), notifier};
        const explorer::result r = explorer::run(opts, scen);
        INFO(r.report());
        CHECK(r.ok());
        CHECK(r.exhausted);
    }
    SECTION("a timed wait nobody notifies times out instead of deadlocking") {
        explorer::scenario<flag_state> scen;
        scen.threads = {[](flag_state& s) {
            std::unique_lock lk(s.m);
            explorer::check(s.cv.wait_for(lk, std::chrono::hours(1)) == std::cv_status::timeout,
                            "the wait ended without a timeout");
            explorer::check(!s.cv.wait_until(lk, std::chrono::steady_clock::now(),
                                             [&] { return s.flag.load(); }),
                            "the predicate wait reported success");
        }};
        opts.spurious_wakeups = 0;
        const explorer::result r = explorer::run(opts, scen);
        INFO(r.report());
        CHECK(r.ok());
        CHECK(r.exhausted);
    }
}

TEST_CASE("explorer: reports a spin loop as a step limit and unwinds it", "[explorer]") {
    watchdog dog("explorer step limit");
    explorer::scenario<flag_state> scen;
    scen.threads = {[](flag_state& s) {
                        while (!s.flag.load()) explorer::yield("spinning");
                    },
                    [](flag_state& s) { s.flag.store(true); }};
    explorer::options opts;
    opts.name = "spin";
    opts.leak_state_after_abort = false;
    opts.max_steps = 200;
    const explorer::result r = explorer::run(opts, scen);
    explorer::print(r);
    REQUIRE_FALSE(r.ok());
    CHECK(r.failed->kind == "step limit");
    CHECK(r.failed->schedule_number == 1);  // the first schedule never preempts the spinner
}

TEST_CASE(
    "explorer: a spin wait on spin_point runs the thread it waits for; on yield it is a "
    "step limit",
    "[explorer]") {
    watchdog dog("explorer spin points");
    // Thread 1 sets the flag after one scheduling point of its own; thread 0 polls it.
    const auto scenario_with = [](bool spin_point) {
        explorer::scenario<flag_state> scen;
        scen.threads = {[spin_point](flag_state& s) {
                            while (!s.flag.load()) {
                                if (spin_point) {
                                    explorer::spin_point();
                                } else {
                                    explorer::yield("polling");
                                }
                            }
                        },
                        [](flag_state& s) {
                            explorer::yield("before setting the flag");
                            s.flag.store(true);
                        }};
        scen.final_check = [](flag_state& s) {
            explorer::check(s.flag.load(), "the flag was never set");
        };
        return scen;
    };
    SECTION("spin_point: every schedule ends, exhaustively and at random") {
        // A spinning thread runs only when no other can, and leaving it costs no
        // preemption: thread 0 first (it polls once, thread 1 runs to its end, thread 0
        // sees the flag), thread 1 first without a preemption, and thread 1 first, preempted
        // at its yield by thread 0 (which polls once).
        for (const auto& [bound, schedules] :
             std::vector<std::pair<int, std::size_t>>{{0, 2}, {1, 3}, {2, 3}, {-1, 3}}) {
            INFO("bound " << bound);
            explorer::options opts;
            opts.name = "spin_point, bound " + std::to_string(bound);
            opts.preemption_bound = bound;
            opts.max_steps = 200;
            const explorer::result r = explorer::run(opts, scenario_with(true));
            explorer::print(r);
            CHECK(r.ok());
            CHECK(r.exhausted);
            CHECK(r.schedules == schedules);
        }
        for (const auto mode : {explorer::strategy::random, explorer::strategy::pct}) {
            explorer::options opts;
            opts.name = "spin_point, randomised";
            opts.mode = mode;
            opts.seed = explorer::catch_seed();
            opts.max_schedules = 200;
            opts.max_steps = 200;
            const explorer::result r = explorer::run(opts, scenario_with(true));
            explorer::print(r);
            CHECK(r.ok());
            CHECK(r.schedules == 200);
        }
    }
    SECTION("yield: the first schedule never leaves the poller, a step limit") {
        for (const int bound : {0, 2, -1}) {
            INFO("bound " << bound);
            explorer::options opts;
            opts.name = "yield poll, bound " + std::to_string(bound);
            opts.preemption_bound = bound;
            opts.leak_state_after_abort = false;
            opts.max_steps = 200;
            const explorer::result r = explorer::run(opts, scenario_with(false));
            explorer::print(r);
            REQUIRE_FALSE(r.ok());
            CHECK(r.failed->kind == "step limit");
            CHECK(r.failed->schedule_number == 1);
        }
    }
}

TEST_CASE("explorer: reports misuse, escaped exceptions and nondeterminism", "[explorer]") {
    watchdog dog("explorer misuse");
    explorer::options opts;
    SECTION("an invariant that locks a mutex a parked thread holds") {
        explorer::scenario<flag_state> scen;
        scen.threads = {[](flag_state& s) {
            std::lock_guard guard(s.m);
            explorer::yield("holding the mutex");
        }};
        scen.invariant = [](flag_state& s) { std::lock_guard guard(s.m); };
        opts.name = "locking invariant";
        const explorer::result r = explorer::run(opts, scen);
        REQUIRE_FALSE(r.ok());
        CHECK(r.failed->kind == "check");
        CHECK(r.failed->message.find("thread 0 holds it") != std::string::npos);
    }
    SECTION("a body that throws") {
        explorer::scenario<flag_state> scen;
        scen.threads = {[](flag_state&) { throw std::runtime_error("body failed"); }};
        opts.name = "throwing body";
        const explorer::result r = explorer::run(opts, scen);
        REQUIRE_FALSE(r.ok());
        CHECK(r.failed->kind == "exception");
        CHECK(r.failed->message == "thread 0 threw: body failed");
    }
    SECTION("a body whose points depend on more than the schedule") {
        static std::atomic<int> runs{0};
        explorer::scenario<flag_state> scen;
        const auto body = [](flag_state&) {
            if (runs.fetch_add(1) % 3 == 0) explorer::yield();
            explorer::yield();
        };
        scen.threads = {body, body};
        opts.name = "nondeterministic";
        const explorer::result r = explorer::run(opts, scen);
        REQUIRE_FALSE(r.ok());
        CHECK(r.failed->kind == "nondeterminism");
    }
}

// Each schedule runs on fresh threads: distinct ids, fresh thread_locals.
struct identity_state {
    std::mutex mutex;  // not an explorer primitive: never held across a point
    std::set<std::thread::id> ids;
    int thread_local_seen = 0;
};

thread_local int thread_local_counter = 0;

TEST_CASE("explorer: real threads, real thread ids and thread_locals", "[explorer]") {
    watchdog dog("explorer threads");
    explorer::scenario<identity_state> scen;
    const auto body = [](identity_state& s) {
        const int seen = thread_local_counter++;
        explorer::yield();
        std::lock_guard guard(s.mutex);
        s.ids.insert(std::this_thread::get_id());
        s.thread_local_seen += seen;
    };
    scen.threads = {body, body, body};
    scen.final_check = [](identity_state& s) {
        explorer::check(s.ids.size() == 3, "threads shared an id");
        explorer::check(s.ids.count(std::this_thread::get_id()) == 0,
                        "a body ran on the scheduling thread");
        explorer::check(s.thread_local_seen == 0, "a thread_local outlived its schedule");
    };
    explorer::options opts;
    opts.name = "identity";
    opts.preemption_bound = -1;
    const explorer::result r = explorer::run(opts, scen);
    explorer::print(r);
    CHECK(r.ok());
    CHECK(r.exhausted);
    CHECK(r.schedules == 90);  // 3 threads of 2 points; no preemption bound is reached
}

}  // namespace
