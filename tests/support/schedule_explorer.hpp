// SPDX-License-Identifier: BSL-1.0
// tests/support/schedule_explorer.hpp: a deterministic scheduler that explores the
// interleavings of a few real threads, one at a time (issue 9).
//
// Purpose. A model checker in the spirit of Rust's loom, lincheck's model-checking
// mode, Relacy, CHESS and moodycamel's deterministic schedules, for the import
// protocol: run() starts N real std::threads on fresh state, but lets only one run
// at a time. At every *scheduling point* the running thread parks and the scheduler
// picks the next thread to run. After every step (all threads parked) an invariant
// check runs; after the schedule, a final check. A strategy decides the choices:
//
//   strategy::exhaustive  depth-first search over every choice sequence whose number
//                         of preemptions (switching away from a thread that could go
//                         on) is at most `preemption_bound` (CHESS's iterative context
//                         bounding: most concurrency bugs need 1 or 2 preemptions)
//   strategy::pct         randomised priorities with `pct_depth - 1` priority change
//                         points per schedule (Burckhardt et al., PCT, ASPLOS 2010)
//   strategy::random      a uniformly random runnable thread at every point
//
// Scheduling points:
//  - explorer::mutex: lock() and try_lock() (before the acquisition; a lock() of a
//    mutex held by another thread is not runnable) and unlock() (after the release);
//  - explorer::condition_variable: wait()/wait_until()/wait_for() release the mutex
//    and park; the thread is runnable again once notified and the mutex is free. The
//    scheduler may also end a wait without a notify (a spurious wake-up, or the time-out
//    of a timed wait), at most `spurious_wakeups` times per schedule; a timed wait also
//    ends when no other thread can run (time passes). Time is virtual: a deadline is
//    never compared with a clock. notify_one()/notify_all() take effect at once and do
//    not switch (see "Assumptions"); notify_one wakes the longest waiter;
//  - explorer::yield_point(): what a lock policy's optional `static void yield_point()
//    noexcept` calls (see explored_locks.hpp), at the steps where the core reads or
//    writes shared state outside its policy mutex;
//  - explorer::spin_point(): a poll of a spin wait (what a policy's optional
//    `static void spin_wait_point() noexcept` calls: the core waiting for other
//    threads' read sections). A spinning thread is not runnable while another thread
//    that is not spinning is, and leaving it is not a preemption: a spin wait only
//    goes on once the threads it waits for have run (or cannot);
//  - explorer::yield(label): an explicit point in a test body or loader.
// Outside a schedule (setup, checks, another test) every point is a no-op and the
// mutex is a plain flag; locking one that a parked thread holds throws logic_error.
//
// Failures (the run stops at the first): a check threw (explorer::check throws
// violation; any exception counts); deadlock (no thread runnable, not all finished:
// the report says what each thread is blocked on); step limit (`max_steps` decisions
// in one schedule: a livelock or a spin loop); a body let an exception escape; the
// program was not deterministic (a replayed prefix offered different choices). The
// report carries the seed, the schedule as a choice sequence and its steps; setting
//   IMPORTLOCK_EXPLORER_REPLAY='<options.name>=<choices>'
// (or options.replay) runs exactly that schedule again. After a failure the remaining
// threads are run to their end without checks; threads that cannot end (a deadlock)
// are unwound by throwing explorer::aborted (not a std::exception) from their blocked
// point, or, where that is impossible, left parked and their state leaked; after
// such an unwinding the State is leaked too (options::leak_state_after_abort), as
// its invariants are broken. The failure is printed to stderr when it is seen.
//
// Assumptions (what makes one-at-a-time execution sound):
//  - Bodies block only on explorer primitives. A thread parks only at a scheduling
//    point, so a std::mutex or spin lock it takes between two points is always free
//    again when another thread runs. The core keeps its own std::mutex (the wait-for
//    graph's) and spin locks (the observer slot, an entry's shared_ptr) around a few
//    instructions and never parks inside them: it calls no yield_point, lock, unlock
//    or wait there. It does call the policy's notify_all() while holding the graph's
//    std::mutex (module_lock::release under held_import::release), which is why a
//    notify is not a switch.
//  - The program is deterministic given the schedule (no real time, no randomness
//    outside the seed, no unmanaged threads touching explorer objects).
//  - Memory is sequentially consistent: each switch goes through a std::mutex, so
//    the explorer finds interleaving bugs, not weak-memory reorderings (loom and
//    CDSChecker model those; ThreadSanitizer runs of the stress tests cover them).
//  - Labels (const char*) are string literals or otherwise outlive the run.
//
// Thread-safety: run() may be called from any thread, several runs at a time on
// different threads (the current scheduler is thread_local); explorer objects belong
// to one run at a time. Inside a run everything is serialised.
//
// Cost: each step is two thread hand-offs (a few microseconds, ~10x under TSan);
// each schedule starts and joins N threads. The number of schedules of exhaustive
// search grows as O(points^bound) for a bound of preemptions; `max_schedules` and
// `max_steps` keep a run bounded (result::exhausted says whether the space was
// covered). Memory: O(steps) per schedule for the trace and the search stack.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace importlock_test::explorer {

class mutex;
class condition_variable;

// How run() picks the thread to run at each scheduling point.
enum class strategy {
    exhaustive,  // every schedule within the preemption bound, depth first
    pct,         // random priorities with a few change points (PCT)
    random,      // a uniformly random runnable thread
};

// What run() explores and how far.
struct options {
    std::string name = "explorer";  // names the run in reports and for replay
    strategy mode = strategy::exhaustive;
    int preemption_bound = 2;           // exhaustive: preemptions per schedule; < 0: no bound
    std::size_t max_schedules = 20000;  // schedules per run
    std::size_t max_steps = 5000;       // scheduling decisions per schedule
    std::uint64_t seed = 0;             // pct and random
    int pct_depth = 3;                  // pct: d, the bug depth searched (d - 1 change points)
    int spurious_wakeups = 0;           // waits per schedule the scheduler may end unnotified
    std::vector<std::size_t> replay;    // non-empty: run only this schedule (then defaults)
    // After threads had to be unwound with explorer::aborted, leak the schedule's
    // State instead of destroying it: its invariants are broken (e.g. an import
    // system asserts in its destructor that no import is in flight).
    bool leak_state_after_abort = true;
};

// Why and where a run failed.
struct failure {
    std::string kind;                  // check, deadlock, step limit, exception, nondeterminism
    std::string message;               // what went wrong
    std::size_t schedule_number = 0;   // 1-based, in this run
    std::vector<std::size_t> choices;  // the schedule: the thread chosen at each decision
    std::string threads;               // each thread's state when the failure was seen
    std::string trace;                 // the schedule's steps, numbered
};

// Formats a schedule as "0,1,1,0,2*5" (the IMPORTLOCK_EXPLORER_REPLAY syntax:
// the thread chosen at each decision; "t*n" is t n times).
inline std::string format_schedule(const std::vector<std::size_t>& choices) {
    std::string out;
    for (std::size_t i = 0; i < choices.size();) {
        std::size_t run = 1;
        while (i + run < choices.size() && choices[i + run] == choices[i]) ++run;
        if (!out.empty()) out += ',';
        if (run >= 4) {
            out += std::to_string(choices[i]) + "*" + std::to_string(run);
            i += run;
        } else {
            out += std::to_string(choices[i]);
            ++i;
        }
    }
    return out;
}

// Parses what format_schedule writes (any other non-digit separates).
inline std::vector<std::size_t> parse_schedule(std::string_view text) {
    std::vector<std::size_t> out;
    std::size_t i = 0;
    const auto number = [&](std::size_t& value) {
        value = 0;
        const std::size_t begin = i;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
            value = value * 10 + static_cast<std::size_t>(text[i] - '0');
            ++i;
        }
        return i != begin;
    };
    while (i < text.size()) {
        std::size_t thread = 0;
        if (!number(thread)) {
            ++i;
            continue;
        }
        std::size_t times = 1;
        if (i < text.size() && text[i] == '*') {
            ++i;
            if (!number(times)) times = 1;
        }
        out.insert(out.end(), times, thread);
    }
    return out;
}

// What a run explored, and its failure if any.
struct result {
    std::string name;
    strategy mode = strategy::exhaustive;
    int preemption_bound = 0;
    std::uint64_t seed = 0;
    std::size_t schedules = 0;  // schedules run (the failing one included)
    std::size_t steps = 0;      // decisions over all schedules
    std::size_t longest = 0;    // decisions in the longest schedule
    bool exhausted = false;     // exhaustive: every schedule within the bound was run
    double seconds = 0;         // wall time (reported, never decides a result)
    std::optional<failure> failed;

    bool ok() const noexcept { return !failed.has_value(); }

    // Returns one line: name, strategy, schedules, steps, time.
    std::string summary() const {
        std::ostringstream out;
        out << "explorer: " << name << ": " << schedules << " schedules";
        if (mode == strategy::exhaustive) {
            out << (exhausted ? " (all" : " (capped")
                << (preemption_bound < 0 ? ", unbounded"
                                         : ", preemption bound " + std::to_string(preemption_bound))
                << ")";
        } else {
            out << (mode == strategy::pct ? " (pct" : " (random") << ", seed " << seed << ")";
        }
        out << ", " << steps << " steps, longest " << longest << ", ";
        out.precision(3);
        out << seconds << " s";
        if (failed) out << ", FAILED (" << failed->kind << ")";
        return out.str();
    }

    // Returns the summary and, after a failure, the full report: message, replay
    // line, threads and steps.
    std::string report() const {
        std::string out = summary() + "\n";
        if (!failed) return out;
        const failure& f = *failed;
        out += "  " + f.kind + ": " + f.message + "\n";
        out += "  schedule #" + std::to_string(f.schedule_number) + ", seed " +
               std::to_string(seed) + "; replay with\n    IMPORTLOCK_EXPLORER_REPLAY='" + name +
               "=" + format_schedule(f.choices) + "'\n";
        out += "  threads:\n" + f.threads;
        out += "  steps:\n" + f.trace;
        return out;
    }
};

// Thrown by check(); any exception from a check fails the run.
class violation : public std::logic_error {
public:
    using std::logic_error::logic_error;
};

// Throws violation(what) unless `ok`. For invariant and final checks.
inline void check(bool ok, const std::string& what) {
    if (!ok) throw violation(what);
}

// Thrown from a blocked scheduling point to unwind a thread after a failure. Not a
// std::exception, so that `catch (const std::exception&)` in bodies lets it pass.
struct aborted {};

// What run() does with each schedule: fresh State (default-constructed, then
// `setup`), one real thread per body, `invariant` after every step, `final_check`
// after every thread finished. The callbacks other than the bodies run on the
// thread that called run(), with every body parked: they may use Catch2-free code
// only and must report problems by throwing (explorer::check). An invariant may not
// lock an explorer::mutex that a parked thread holds (use lock-free queries).
template <class State>
struct scenario {
    std::function<void(State&)> setup;
    std::vector<std::function<void(State&)>> threads;
    std::function<void(State&)> invariant;
    std::function<void(State&)> final_check;
};

template <class State>
result run(const options& opts, const scenario<State>& scen);

// Parks the calling explorer thread at a scheduling point; a no-op elsewhere.
// Throws explorer::aborted while a failed run unwinds its threads.
void yield(const char* label = nullptr);

// A scheduling point for lock policies (never throws); a no-op outside a schedule.
void yield_point() noexcept;

// A poll of a spin wait (never throws; see "Scheduling points"); a no-op outside a
// schedule.
void spin_point() noexcept;

// Returns the calling thread's index in the running schedule, or -1 outside one.
int thread_index() noexcept;

// A mutex whose lock, try_lock and unlock are scheduling points. Lockable; use it
// with std::unique_lock and explorer::condition_variable. Not recursive.
class mutex {
public:
    mutex() noexcept;
    mutex(const mutex&) = delete;
    mutex& operator=(const mutex&) = delete;

    void lock();
    bool try_lock();
    void unlock() noexcept;

private:
    friend class detail_access;
    int owner_ = -1;  // a thread index, -1 when free, -2 when held outside the schedule
    unsigned id_;     // numbers the object in reports, per schedule
};

// A condition variable over std::unique_lock<explorer::mutex> whose waits are
// scheduling points (see the file comment).
class condition_variable {
public:
    condition_variable() noexcept;
    condition_variable(const condition_variable&) = delete;
    condition_variable& operator=(const condition_variable&) = delete;

    void wait(std::unique_lock<mutex>& lock);

    template <class Predicate>
    void wait(std::unique_lock<mutex>& lock, Predicate pred) {
        while (!pred()) wait(lock);
    }

    // Returns timeout when the scheduler ended the wait without a notify; the
    // deadline itself is ignored (virtual time).
    template <class Clock, class Duration>
    std::cv_status wait_until(std::unique_lock<mutex>& lock,
                              const std::chrono::time_point<Clock, Duration>& /*deadline*/) {
        return timed_wait(lock) ? std::cv_status::timeout : std::cv_status::no_timeout;
    }

    template <class Clock, class Duration, class Predicate>
    bool wait_until(std::unique_lock<mutex>& lock,
                    const std::chrono::time_point<Clock, Duration>& deadline, Predicate pred) {
        while (!pred()) {
            if (wait_until(lock, deadline) == std::cv_status::timeout) return pred();
        }
        return true;
    }

    template <class Rep, class Period>
    std::cv_status wait_for(std::unique_lock<mutex>& lock,
                            const std::chrono::duration<Rep, Period>& /*timeout*/) {
        return timed_wait(lock) ? std::cv_status::timeout : std::cv_status::no_timeout;
    }

    void notify_one() noexcept;
    void notify_all() noexcept;

private:
    friend class detail_access;
    bool timed_wait(std::unique_lock<mutex>& lock);

    std::vector<int> waiters_;  // thread indices, longest waiter first
    unsigned id_;
};

// Gives the scheduler access to the primitives' private state.
class detail_access {
public:
    static int& owner(mutex& m) noexcept { return m.owner_; }
    static unsigned id(const mutex& m) noexcept { return m.id_; }
    static std::vector<int>& waiters(condition_variable& cv) noexcept { return cv.waiters_; }
    static unsigned id(const condition_variable& cv) noexcept { return cv.id_; }
};

namespace detail {

inline constexpr int nobody = -1;
inline constexpr int outsider = -2;  // a thread outside the schedule holds the mutex

// What a parked thread will do when it is resumed.
enum class op : unsigned char {
    start,         // begin the body
    yield,         // explorer::yield or yield_point
    spin,          // explorer::spin_point (runnable when no other thread is)
    lock,          // acquire the mutex (runnable when it is free)
    try_lock,      // try to acquire it
    after_unlock,  // go on after releasing a mutex
    wait,          // reacquire the mutex after a wait (runnable when notified and free)
    finished,      // the body returned
    notify,        // (trace only) a notify, not a decision
    wait_begin,    // (trace only) a wait released its mutex, not a decision
};

inline const char* op_name(op kind) noexcept {
    switch (kind) {
        case op::start: return "start";
        case op::yield: return "yield";
        case op::spin: return "spin";
        case op::lock: return "lock";
        case op::try_lock: return "try_lock";
        case op::after_unlock: return "unlock";
        case op::wait: return "wake";
        case op::finished: return "finish";
        case op::notify: return "notify";
        case op::wait_begin: return "wait";
    }
    return "?";
}

// Numbers explorer objects in creation order, from 1 in each schedule.
inline std::atomic<unsigned>& object_counter() noexcept {
    static std::atomic<unsigned> counter{0};
    return counter;
}

// One explorer thread as the scheduler sees it. Guarded by scheduler::mu_.
struct thread_slot {
    op pending = op::start;
    unsigned mutex_id = 0;
    mutex* target = nullptr;           // lock, try_lock, wait: the mutex
    condition_variable* cv = nullptr;  // wait: the condition variable
    unsigned cv_id = 0;
    const char* label = nullptr;
    bool timed = false;        // wait: wait_until / wait_for
    bool notified = false;     // wait: a notify picked this thread
    bool spurious = false;     // wait result: ended without a notify
    bool acquired = false;     // try_lock result
    bool may_throw = true;     // the point may throw explorer::aborted
    bool unwinding = false;    // an exception was in flight at the point
    bool abort = false;        // throw explorer::aborted at the next throwing point
    bool was_aborted = false;  // explorer::aborted was thrown into this thread
    bool finished = false;
    std::exception_ptr escaped;  // what the body threw
    std::condition_variable go;  // notified when the thread may run
};

// One line of a schedule's trace.
struct step_record {
    int thread;
    op kind;
    unsigned object;   // mutex (lock, try_lock, wait, unlock) or cv (notify) number
    unsigned object2;  // wait: the cv; notify: how many threads it woke
    const char* label;
    bool flag;  // wait: spurious; try_lock: acquired; notify: all
};

// The shared state of one schedule. The scheduling thread (the caller of run())
// and the explorer threads hand control to each other under mu_.
class scheduler {
public:
    scheduler(std::size_t threads, int spurious_wakeups) : spurious_left_(spurious_wakeups) {
        slots_.reserve(threads);
        for (std::size_t i = 0; i < threads; ++i) slots_.push_back(std::make_unique<thread_slot>());
    }

    // --- explorer threads ------------------------------------------------------------

    // Parks the caller (thread `self`) at a point of kind `kind` until it is chosen.
    void point(int self, op kind, const char* label, bool may_throw) {
        std::unique_lock lk(mu_);
        thread_slot& s = slot(self);
        s.pending = kind;
        s.label = label;
        if (kind == op::start) ++arrived_;
        park(lk, self, may_throw);
    }

    void lock(int self, mutex& m);
    bool try_lock(int self, mutex& m);
    void unlock(int self, mutex& m) noexcept;
    bool wait(int self, condition_variable& cv, mutex& m, bool timed);
    void notify(int self, condition_variable& cv, bool all) noexcept;

    // Marks thread `self` finished; it never parks again.
    void finish(int self, std::exception_ptr escaped) noexcept {
        std::lock_guard lk(mu_);
        thread_slot& s = slot(self);
        s.finished = true;
        s.pending = op::finished;
        s.escaped = std::move(escaped);
        running_ = nobody;
        parked_.notify_one();
    }

    // --- the scheduling thread -------------------------------------------------------

    // One scheduling decision: the threads that may run, in the order a search tries
    // them, and whether the first is the previous thread going on (then choosing
    // another one is a preemption).
    struct decision {
        std::vector<int> candidates;
        bool continuing = false;
        std::size_t normal = 0;  // candidates[normal..] end a wait without a notify
    };

    // Waits until every thread has arrived at its first point.
    void await_start() {
        std::unique_lock lk(mu_);
        parked_.wait(lk, [&] { return arrived_ == slots_.size() && running_ == nobody; });
    }

    bool all_finished() {
        std::lock_guard lk(mu_);
        return std::all_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->finished; });
    }

    decision candidates() {
        std::lock_guard lk(mu_);
        return candidates_locked();
    }

    // Runs thread `t` (a candidate) until it parks again or finishes.
    void resume(int t) {
        std::unique_lock lk(mu_);
        thread_slot& s = slot(t);
        apply(t, s, false);
        run_until_parked(lk, t);
    }

    // Runs thread `t` after a failure: a blocked thread is unwound with
    // explorer::aborted (or, at a point that cannot throw, given what it waits for).
    void resume_aborting(int t) {
        std::unique_lock lk(mu_);
        thread_slot& s = slot(t);
        if (s.finished) return;
        s.abort = true;
        if (s.may_throw && !s.unwinding) {
            // The point throws explorer::aborted without doing its operation.
            if (s.pending == op::wait && !s.notified) forget_waiter(t, s);
            previous_ = t;
        } else {
            apply(t, s, true);
        }
        run_until_parked(lk, t);
    }

    // Returns the first exception a body let escape, with its thread, if any.
    std::pair<int, std::exception_ptr> escaped() {
        std::lock_guard lk(mu_);
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            const thread_slot& s = *slots_[i];
            if (s.escaped && !s.was_aborted) return {static_cast<int>(i), s.escaped};
        }
        return {nobody, nullptr};
    }

    std::string take_misuse() {
        std::lock_guard lk(mu_);
        return std::exchange(misuse_, {});
    }

    // Describes what each thread does now, one line each.
    std::string describe_threads() {
        std::lock_guard lk(mu_);
        std::string out;
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            const thread_slot& s = *slots_[i];
            out += "    thread " + std::to_string(i) + ": ";
            if (s.finished) {
                out += "finished\n";
                continue;
            }
            switch (s.pending) {
                case op::lock: {
                    out += "at lock(mutex#" + std::to_string(s.mutex_id) + ")";
                    const int owner = detail_access::owner(*s.target);
                    if (owner != nobody) out += ", held by " + owner_name(owner);
                    break;
                }
                case op::wait:
                    out += std::string(s.timed ? "in wait_until" : "in wait") + "(cv#" +
                           std::to_string(s.cv_id) + ", mutex#" + std::to_string(s.mutex_id) + ")" +
                           (s.notified ? ", notified" : ", not notified");
                    if (s.notified && detail_access::owner(*s.target) != nobody) {
                        out += ", mutex held by " + owner_name(detail_access::owner(*s.target));
                    }
                    break;
                default: out += std::string("at ") + op_name(s.pending); break;
            }
            if (s.label != nullptr && s.pending != op::wait && s.pending != op::lock) {
                out += std::string(" '") + s.label + "'";
            }
            out += "\n";
        }
        return out;
    }

    // Formats the trace, numbering the decisions from 1.
    std::string describe_trace(std::size_t limit = 400) {
        std::lock_guard lk(mu_);
        std::string out;
        std::size_t first = trace_.size() > limit ? trace_.size() - limit : 0;
        if (first != 0) out += "    ... (" + std::to_string(first) + " earlier lines)\n";
        std::size_t decision_number = 0;
        std::string last;
        std::size_t repeats = 0;
        const auto flush_repeats = [&] {
            if (repeats != 0) out += "         (" + std::to_string(repeats) + " more times)\n";
            repeats = 0;
        };
        for (std::size_t i = 0; i < trace_.size(); ++i) {
            const step_record& r = trace_[i];
            const bool event = r.kind == op::notify || r.kind == op::wait_begin;
            if (!event) ++decision_number;
            if (i < first) continue;
            std::string line;
            line += "thread " + std::to_string(r.thread) + " " + op_name(r.kind);
            switch (r.kind) {
                case op::lock:
                case op::after_unlock: line += "(mutex#" + std::to_string(r.object) + ")"; break;
                case op::try_lock:
                    line += "(mutex#" + std::to_string(r.object) + ") -> " +
                            (r.flag ? "acquired" : "busy");
                    break;
                case op::wait:
                    line += "(cv#" + std::to_string(r.object2) + ", mutex#" +
                            std::to_string(r.object) + ")" + (r.flag ? " spurious" : " notified");
                    break;
                case op::wait_begin:
                    line += "(cv#" + std::to_string(r.object2) + ", mutex#" +
                            std::to_string(r.object) + ")";
                    break;
                case op::notify:
                    line += std::string(r.flag ? "_all" : "_one") + "(cv#" +
                            std::to_string(r.object) + ") woke " + std::to_string(r.object2);
                    break;
                default: break;
            }
            if (r.label != nullptr) line += std::string(" '") + r.label + "'";
            if (line == last) {
                ++repeats;
                continue;
            }
            flush_repeats();
            last = line;
            out += (event ? std::string(9, ' ') : pad(decision_number)) + line + "\n";
        }
        flush_repeats();
        return out;
    }

private:
    static std::string pad(std::size_t n) {
        std::string s = std::to_string(n) + ":";
        while (s.size() < 9) s += ' ';
        return s;
    }

    static std::string owner_name(int owner) {
        return owner == outsider ? std::string("a thread outside the schedule")
                                 : "thread " + std::to_string(owner);
    }

    thread_slot& slot(int i) { return *slots_[static_cast<std::size_t>(i)]; }

    // Hands control back to the scheduling thread and waits to be chosen. mu_ held.
    void park(std::unique_lock<std::mutex>& lk, int self, bool may_throw) {
        thread_slot& s = slot(self);
        s.may_throw = may_throw;
        s.unwinding = std::uncaught_exceptions() > 0;
        running_ = nobody;
        parked_.notify_one();
        s.go.wait(lk, [&] { return running_ == self; });
        if (s.abort && s.may_throw && !s.unwinding) {
            s.abort = false;
            s.was_aborted = true;
            throw aborted{};
        }
    }

    void run_until_parked(std::unique_lock<std::mutex>& lk, int t) {
        thread_slot& s = slot(t);
        running_ = t;
        s.go.notify_one();
        parked_.wait(lk, [&] { return running_ == nobody; });
    }

    // Whether `s` can be resumed; `spurious`: also a wait that was not notified.
    static bool runnable(const thread_slot& s, bool spurious) {
        if (s.finished) return false;
        switch (s.pending) {
            case op::lock: return detail_access::owner(*s.target) == nobody;
            case op::wait:
                return detail_access::owner(*s.target) == nobody && (s.notified || spurious);
            default: return true;
        }
    }

    decision candidates_locked() {
        decision d;
        const bool have_prev = previous_ != nobody;
        // A spinning thread runs only when no thread that is not spinning can.
        const bool others_can_run = std::any_of(slots_.begin(), slots_.end(), [](const auto& s) {
            return s->pending != op::spin && runnable(*s, false);
        });
        const auto eligible = [&](const thread_slot& s) {
            return runnable(s, false) && (s.pending != op::spin || !others_can_run);
        };
        if (have_prev) {
            const thread_slot& p = slot(previous_);
            d.continuing = p.pending != op::wait && p.pending != op::spin && eligible(p);
            if (d.continuing) d.candidates.push_back(previous_);
        }
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            const int t = static_cast<int>(i);
            if (d.continuing && t == previous_) continue;
            if (eligible(*slots_[i])) d.candidates.push_back(t);
        }
        d.normal = d.candidates.size();
        const bool time_passes = d.candidates.empty();
        for (std::size_t i = 0; i < slots_.size(); ++i) {
            const thread_slot& s = *slots_[i];
            if (s.finished || s.pending != op::wait || s.notified) continue;
            if (!runnable(s, true)) continue;
            if (spurious_left_ > 0 || (time_passes && s.timed)) {
                d.candidates.push_back(static_cast<int>(i));
            }
        }
        return d;
    }

    // Performs the effect of the point thread `t` is parked at. mu_ held.
    void apply(int t, thread_slot& s, bool force) {
        previous_ = t;
        step_record r{t, s.pending, s.mutex_id, s.cv_id, s.label, false};
        switch (s.pending) {
            case op::lock: {
                int& owner = detail_access::owner(*s.target);
                if (owner == nobody || force) owner = t;
                break;
            }
            case op::try_lock: {
                int& owner = detail_access::owner(*s.target);
                s.acquired = owner == nobody;
                if (s.acquired) owner = t;
                r.flag = s.acquired;
                break;
            }
            case op::wait:
                if (!s.notified) {
                    forget_waiter(t, s);
                    s.spurious = true;
                    if (spurious_left_ > 0) --spurious_left_;
                } else {
                    s.spurious = false;
                }
                detail_access::owner(*s.target) = t;
                r.flag = s.spurious;
                break;
            default: break;
        }
        trace_.push_back(r);
    }

    // Removes waiting thread `t` from its condition variable's waiters. mu_ held.
    static void forget_waiter(int t, thread_slot& s) {
        auto& w = detail_access::waiters(*s.cv);
        w.erase(std::remove(w.begin(), w.end(), t), w.end());
    }

    std::mutex mu_;
    std::condition_variable parked_;  // notified when the running thread parks
    std::vector<std::unique_ptr<thread_slot>> slots_;
    int running_ = nobody;   // the thread allowed to run, or nobody
    int previous_ = nobody;  // the thread that ran last
    std::size_t arrived_ = 0;
    int spurious_left_ = 0;
    std::vector<step_record> trace_;
    std::string misuse_;  // a misuse seen in a noexcept operation
};

// The calling thread's scheduler and index in it; null / -1 outside a schedule.
inline thread_local scheduler* current = nullptr;
inline thread_local int current_index = -1;

}  // namespace detail

namespace detail {

inline void scheduler::lock(int self, mutex& m) {
    {
        std::unique_lock lk(mu_);
        thread_slot& s = slot(self);
        s.pending = op::lock;
        s.target = &m;
        s.mutex_id = detail_access::id(m);
        s.label = nullptr;
        park(lk, self, true);
    }
}

inline bool scheduler::try_lock(int self, mutex& m) {
    std::unique_lock lk(mu_);
    thread_slot& s = slot(self);
    s.pending = op::try_lock;
    s.target = &m;
    s.mutex_id = detail_access::id(m);
    s.label = nullptr;
    park(lk, self, true);
    return s.acquired;
}

inline void scheduler::unlock(int self, mutex& m) noexcept {
    std::unique_lock lk(mu_);
    thread_slot& s = slot(self);
    int& owner = detail_access::owner(m);
    if (owner == self) {
        owner = nobody;
    } else if (!s.was_aborted && misuse_.empty()) {
        misuse_ = "thread " + std::to_string(self) + " unlocked mutex#" +
                  std::to_string(detail_access::id(m)) + " that it does not hold";
    }
    s.pending = op::after_unlock;
    s.target = &m;
    s.mutex_id = detail_access::id(m);
    s.label = nullptr;
    park(lk, self, false);
}

inline bool scheduler::wait(int self, condition_variable& cv, mutex& m, bool timed) {
    std::unique_lock lk(mu_);
    thread_slot& s = slot(self);
    int& owner = detail_access::owner(m);
    if (owner != self) {
        throw std::logic_error("explorer: thread " + std::to_string(self) +
                               " waits on a condition variable without holding its mutex");
    }
    owner = nobody;
    detail_access::waiters(cv).push_back(self);
    s.pending = op::wait;
    s.target = &m;
    s.mutex_id = detail_access::id(m);
    s.cv = &cv;
    s.cv_id = detail_access::id(cv);
    s.timed = timed;
    s.notified = false;
    s.label = nullptr;
    trace_.push_back({self, op::wait_begin, s.mutex_id, s.cv_id, nullptr, timed});
    park(lk, self, true);
    return s.spurious;
}

inline void scheduler::notify(int self, condition_variable& cv, bool all) noexcept {
    std::lock_guard lk(mu_);
    auto& waiters = detail_access::waiters(cv);
    const std::size_t woken = all ? waiters.size() : std::min<std::size_t>(1, waiters.size());
    for (std::size_t i = 0; i < woken; ++i) slot(waiters[i]).notified = true;
    waiters.erase(waiters.begin(), waiters.begin() + static_cast<std::ptrdiff_t>(woken));
    trace_.push_back(
        {self, op::notify, detail_access::id(cv), static_cast<unsigned>(woken), nullptr, all});
}

}  // namespace detail

// --- the primitives ---------------------------------------------------------------------

inline mutex::mutex() noexcept : id_(detail::object_counter().fetch_add(1) + 1) {}

inline void mutex::lock() {
    if (detail::scheduler* s = detail::current) {
        s->lock(detail::current_index, *this);
        return;
    }
    if (owner_ != detail::nobody) {
        throw std::logic_error(
            "explorer: mutex#" + std::to_string(id_) + " locked outside the schedule while " +
            (owner_ == detail::outsider ? std::string("held outside the schedule")
                                        : "thread " + std::to_string(owner_) + " holds it") +
            " (an invariant check may use lock-free queries only)");
    }
    owner_ = detail::outsider;
}

inline bool mutex::try_lock() {
    if (detail::scheduler* s = detail::current) return s->try_lock(detail::current_index, *this);
    if (owner_ != detail::nobody) return false;
    owner_ = detail::outsider;
    return true;
}

inline void mutex::unlock() noexcept {
    if (detail::scheduler* s = detail::current) {
        s->unlock(detail::current_index, *this);
        return;
    }
    owner_ = detail::nobody;
}

inline condition_variable::condition_variable() noexcept
    : id_(detail::object_counter().fetch_add(1) + 1) {}

inline void condition_variable::wait(std::unique_lock<mutex>& lock) {
    detail::scheduler* s = detail::current;
    if (s == nullptr) {
        throw std::logic_error("explorer: condition_variable::wait outside a schedule");
    }
    s->wait(detail::current_index, *this, *lock.mutex(), false);
}

inline bool condition_variable::timed_wait(std::unique_lock<mutex>& lock) {
    detail::scheduler* s = detail::current;
    if (s == nullptr) return true;  // outside a schedule: time out at once
    return s->wait(detail::current_index, *this, *lock.mutex(), true);
}

inline void condition_variable::notify_one() noexcept {
    if (detail::scheduler* s = detail::current) {
        s->notify(detail::current_index, *this, false);
    } else if (!waiters_.empty()) {
        waiters_.clear();  // unreachable in supported use: waiters belong to a schedule
    }
}

inline void condition_variable::notify_all() noexcept {
    if (detail::scheduler* s = detail::current) {
        s->notify(detail::current_index, *this, true);
    } else if (!waiters_.empty()) {
        waiters_.clear();
    }
}

inline void yield(const char* label) {
    if (detail::scheduler* s = detail::current) {
        s->point(detail::current_index, detail::op::yield, label, true);
    }
}

inline void yield_point() noexcept {
    if (detail::scheduler* s = detail::current) {
        s->point(detail::current_index, detail::op::yield, "yield_point", false);
    }
}

inline void spin_point() noexcept {
    if (detail::scheduler* s = detail::current) {
        s->point(detail::current_index, detail::op::spin, "spin_point", false);
    }
}

inline int thread_index() noexcept {
    return detail::current_index;
}

// --- run() ------------------------------------------------------------------------------

namespace detail {

// Picks among a decision's candidates; one per strategy.
class chooser {
public:
    chooser(const options& opts, std::uint64_t seed)
        : opts_(opts), rng_(seed), replay_(opts.replay) {}

    // Prepares the next schedule; returns false when the search is complete.
    bool next_schedule(bool first) {
        position_ = 0;
        if (!replay_.empty()) return first;
        if (opts_.mode == strategy::exhaustive) {
            if (first) return true;
            return backtrack();
        }
        start_random_schedule();
        return true;
    }

    // Returns the index into d.candidates to run, or nullopt (with `error` set)
    // when a replayed prefix does not fit.
    std::optional<std::size_t> choose(const scheduler::decision& d, std::string& error) {
        const std::size_t depth = position_++;
        if (!replay_.empty()) {
            if (depth >= replay_.size()) return 0;
            const auto it = std::find(d.candidates.begin(), d.candidates.end(),
                                      static_cast<int>(replay_[depth]));
            if (it == d.candidates.end()) {
                error = "replayed choice " + std::to_string(depth + 1) + " (thread " +
                        std::to_string(replay_[depth]) + ") is not runnable here";
                return std::nullopt;
            }
            return static_cast<std::size_t>(it - d.candidates.begin());
        }
        switch (opts_.mode) {
            case strategy::exhaustive: return choose_exhaustive(d, depth, error);
            case strategy::pct: return choose_pct(d, depth);
            case strategy::random: return uniform(d.candidates.size());
        }
        return 0;
    }

    // Records the length of a finished schedule (pct's estimate of k).
    void finished_schedule(std::size_t steps) { longest_ = std::max(longest_, steps); }

private:
    struct frame {
        std::vector<int> candidates;
        std::size_t chosen = 0;
        std::size_t normal = 0;
        bool continuing = false;
        int preemptions = 0;  // before this decision
    };

    int cost(const frame& f, std::size_t i) const { return f.continuing && i != 0 ? 1 : 0; }

    std::optional<std::size_t> choose_exhaustive(const scheduler::decision& d, std::size_t depth,
                                                 std::string& error) {
        if (depth < stack_.size()) {
            const frame& f = stack_[depth];
            if (f.candidates != d.candidates || f.continuing != d.continuing) {
                error = "decision " + std::to_string(depth + 1) +
                        " offered other threads than when the prefix was first run";
                return std::nullopt;
            }
            return f.chosen;
        }
        frame f;
        f.candidates = d.candidates;
        f.normal = d.normal;
        f.continuing = d.continuing;
        if (!stack_.empty()) {
            const frame& prev = stack_.back();
            f.preemptions = prev.preemptions + cost(prev, prev.chosen);
        }
        stack_.push_back(std::move(f));
        return 0;
    }

    bool backtrack() {
        while (!stack_.empty()) {
            frame& f = stack_.back();
            for (std::size_t next = f.chosen + 1; next < f.candidates.size(); ++next) {
                if (opts_.preemption_bound < 0 ||
                    f.preemptions + cost(f, next) <= opts_.preemption_bound) {
                    f.chosen = next;
                    return true;
                }
            }
            stack_.pop_back();
        }
        return false;
    }

    void start_random_schedule() {
        priorities_.clear();
        change_points_.clear();
        if (opts_.mode != strategy::pct) return;
        const std::size_t k = std::max<std::size_t>(longest_, 16);
        const int changes = std::max(opts_.pct_depth - 1, 0);
        for (int i = 0; i < changes; ++i) change_points_.push_back(1 + uniform(k));
    }

    std::optional<std::size_t> choose_pct(const scheduler::decision& d, std::size_t depth) {
        // Threads get a random initial priority above every change-point priority
        // the first time they are seen.
        const int changes = std::max(opts_.pct_depth - 1, 0);
        for (const int t : d.candidates) {
            const auto i = static_cast<std::size_t>(t);
            if (priorities_.size() <= i) priorities_.resize(i + 1, 0);
            if (priorities_[i] == 0) priorities_[i] = changes + 1 + static_cast<int>(uniform(1000));
        }
        if (d.normal < d.candidates.size() && uniform(8) == 0) {
            return d.normal + uniform(d.candidates.size() - d.normal);
        }
        const std::size_t limit = d.normal == 0 ? d.candidates.size() : d.normal;
        std::size_t best = 0;
        for (std::size_t i = 1; i < limit; ++i) {
            const auto t = static_cast<std::size_t>(d.candidates[i]);
            if (priorities_[t] > priorities_[static_cast<std::size_t>(d.candidates[best])]) {
                best = i;
            }
        }
        for (std::size_t c = 0; c < change_points_.size(); ++c) {
            if (change_points_[c] == depth + 1) {
                // The chosen thread drops below every initial priority.
                priorities_[static_cast<std::size_t>(d.candidates[best])] =
                    changes - static_cast<int>(c);
            }
        }
        return best;
    }

    std::size_t uniform(std::size_t n) {
        return static_cast<std::size_t>(rng_() % static_cast<std::uint64_t>(n));
    }

    const options& opts_;
    std::mt19937_64 rng_;
    std::vector<std::size_t> replay_;
    std::vector<frame> stack_;
    std::size_t position_ = 0;
    std::size_t longest_ = 0;
    std::vector<int> priorities_;
    std::vector<std::size_t> change_points_;
};

// Returns the choices IMPORTLOCK_EXPLORER_REPLAY gives for the run `name`, if any.
inline std::vector<std::size_t> replay_from_environment(const std::string& name) {
    const char* env = std::getenv("IMPORTLOCK_EXPLORER_REPLAY");
    if (env == nullptr) return {};
    const std::string_view text(env);
    const std::size_t eq = text.rfind('=');
    if (eq == std::string_view::npos || text.substr(0, eq) != name) return {};
    return parse_schedule(text.substr(eq + 1));
}

inline std::string describe_exception(const std::exception_ptr& e) {
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
        return "an exception not derived from std::exception";
    }
}

// How one schedule ended.
struct schedule_outcome {
    std::size_t steps = 0;
    std::optional<failure> failed;
};

template <class State>
schedule_outcome run_schedule(const options& opts, const scenario<State>& scen, chooser& pick) {
    schedule_outcome out;
    std::vector<std::size_t> choices;
    object_counter().store(0);
    auto state = std::make_unique<State>();
    const auto fail = [&](std::string kind, std::string message, scheduler* s) {
        if (out.failed) return;
        failure f;
        f.kind = std::move(kind);
        f.message = std::move(message);
        f.choices = choices;
        if (s != nullptr) {
            f.threads = s->describe_threads();
            f.trace = s->describe_trace();
        }
        // Said at once: tearing the schedule down may crash the program under test.
        std::fprintf(stderr, "explorer: %s: %s: %s (schedule %s)\n", opts.name.c_str(),
                     f.kind.c_str(), f.message.c_str(), format_schedule(f.choices).c_str());
        std::fflush(stderr);
        out.failed = std::move(f);
    };
    if (scen.setup) {
        try {
            scen.setup(*state);
        } catch (...) {
            fail("exception", "setup threw: " + describe_exception(std::current_exception()),
                 nullptr);
            return out;
        }
    }
    const std::size_t n = scen.threads.size();
    auto sched = std::make_unique<scheduler>(n, opts.spurious_wakeups);
    std::vector<std::thread> threads;
    threads.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        threads.emplace_back([s = sched.get(), st = state.get(), &body = scen.threads[i], i] {
            const int self = static_cast<int>(i);
            current = s;
            current_index = self;
            std::exception_ptr escaped;
            try {
                s->point(self, op::start, nullptr, true);
                body(*st);
            } catch (const aborted&) {
            } catch (...) {
                escaped = std::current_exception();
            }
            current = nullptr;
            current_index = -1;
            s->finish(self, std::move(escaped));
        });
    }
    sched->await_start();

    // Explore: one decision per step until every thread finished or a failure.
    for (;;) {
        if (const auto [t, e] = sched->escaped(); e) {
            fail("exception", "thread " + std::to_string(t) + " threw: " + describe_exception(e),
                 sched.get());
            break;
        }
        if (std::string misuse = sched->take_misuse(); !misuse.empty()) {
            fail("misuse", misuse, sched.get());
            break;
        }
        const scheduler::decision d = sched->candidates();
        if (d.candidates.empty()) {
            if (!sched->all_finished()) {
                fail("deadlock", "no thread can run and not every thread finished", sched.get());
            }
            break;
        }
        if (out.steps >= opts.max_steps) {
            fail("step limit",
                 std::to_string(opts.max_steps) + " decisions and not finished (livelock?)",
                 sched.get());
            break;
        }
        std::string error;
        const std::optional<std::size_t> c = pick.choose(d, error);
        if (!c) {
            fail("nondeterminism", error, sched.get());
            break;
        }
        const int t = d.candidates[*c];
        choices.push_back(static_cast<std::size_t>(t));
        sched->resume(t);
        ++out.steps;
        if (scen.invariant) {
            try {
                scen.invariant(*state);
            } catch (...) {
                fail("check",
                     "invariant after step " + std::to_string(out.steps) + ": " +
                         describe_exception(std::current_exception()),
                     sched.get());
                break;
            }
        }
    }

    // After a failure: run the others to their end, unwinding the blocked ones.
    bool ended = sched->all_finished();
    bool unwound = false;
    if (!ended) {
        constexpr std::size_t abort_limit = 100000;
        for (std::size_t k = 0; k < abort_limit && !ended; ++k) {
            const scheduler::decision d = sched->candidates();
            const bool drain = !d.candidates.empty() && k < opts.max_steps;
            if (drain) {
                sched->resume(d.candidates.front());
            } else {
                for (std::size_t i = 0; i < n; ++i) sched->resume_aborting(static_cast<int>(i));
                unwound = true;
            }
            ended = sched->all_finished();
        }
    }
    if (!ended) {
        // Threads that cannot be unwound stay parked; their state is leaked on purpose.
        std::fprintf(stderr, "explorer: %s: threads could not be unwound; leaking them\n",
                     opts.name.c_str());
        for (auto& thread : threads) thread.detach();
        (void)sched.release();
        (void)state.release();
        return out;
    }
    for (auto& thread : threads) thread.join();
    if (!out.failed) {
        if (const auto [t, e] = sched->escaped(); e) {
            fail("exception", "thread " + std::to_string(t) + " threw: " + describe_exception(e),
                 sched.get());
        }
    }
    if (!out.failed && scen.final_check) {
        try {
            scen.final_check(*state);
        } catch (...) {
            fail("check", "final check: " + describe_exception(std::current_exception()),
                 sched.get());
        }
    }
    pick.finished_schedule(out.steps);
    if (unwound && opts.leak_state_after_abort) (void)state.release();  // on purpose
    return out;
}

}  // namespace detail

// Explores the schedules of `scen` as `opts` says (see the file comment). Returns
// what it explored and the first failure; never throws for a failure of the
// program under test.
template <class State>
result run(const options& opts, const scenario<State>& scen) {
    const auto start = std::chrono::steady_clock::now();
    options effective = opts;
    if (effective.replay.empty()) effective.replay = detail::replay_from_environment(opts.name);
    result r;
    r.name = opts.name;
    r.mode = opts.mode;
    r.preemption_bound = opts.preemption_bound;
    r.seed = opts.seed;
    // Mixing the name in gives each run of a test program its own random sequence.
    const std::uint64_t seed =
        opts.seed ^ (std::hash<std::string>{}(opts.name) * 0x9E3779B97F4A7C15ull);
    detail::chooser pick(effective, seed);
    bool first = true;
    while (r.schedules < effective.max_schedules) {
        if (!pick.next_schedule(first)) {
            r.exhausted = effective.mode == strategy::exhaustive && effective.replay.empty();
            break;
        }
        first = false;
        detail::schedule_outcome o = detail::run_schedule(effective, scen, pick);
        ++r.schedules;
        r.steps += o.steps;
        r.longest = std::max(r.longest, o.steps);
        if (o.failed) {
            o.failed->schedule_number = r.schedules;
            r.failed = std::move(o.failed);
            break;
        }
    }
    if (!r.failed && effective.mode == strategy::exhaustive && effective.replay.empty() &&
        r.schedules == effective.max_schedules && !pick.next_schedule(false)) {
        r.exhausted = true;
    }
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return r;
}

}  // namespace importlock_test::explorer
