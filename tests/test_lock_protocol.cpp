// SPDX-License-Identifier: BSL-1.0
// Unit tests of importlock::detail::lock_protocol (detail/lock_protocol.hpp), driven directly
// with a minimal entry type and a std::mutex standing in for a system's state mutex:
//
//   records        one per key in flight (one for every key under global_lock), unlinked
//                  when nobody holds or awaits it and reused from the free list;
//                  linked from the entry's claim word
//   acquire        uncontended, re-entrant, waiting, cycles (exactly one thread of a cycle
//                  finds it), timeouts, cancellation, shared failures, before_wait
//   claim          claimed/claimed_by_this_thread, import stack frames (push/pop, depth order),
//                  thread_import_depth, release on unwinding
//   queries        lock_count, waiters_of, for_each_lock/stack/waiter, reentry_chain, held_by
//   domains        a cycle through two protocols is found only when they share a domain
//   no_locks       a second importing thread is refused with import_error, never waits
//
// Every threaded test runs under a watchdog and forces its interleaving by polling the
// protocol's own state (waiters_of under the state mutex) or latches: no sleep decides a
// result. Catch2 assertions are made on the main thread only; threads record outcomes.
#include <importlock/detail/lock_protocol.hpp>
#include <importlock/detail/registry_entry.hpp>
#include <importlock/detail/spin_lock.hpp>
#include <importlock/errors.hpp>
#include <importlock/locking/global_lock.hpp>
#include <importlock/locking/no_locks.hpp>
#include <importlock/locking/per_key_locks.hpp>
#include <importlock/wait_graph_domain.hpp>

#include "support/catch.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <latch>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using importlock::detail::thread_import_depth;
using importlock::detail::wait_limit;
using importlock_test::await;
using importlock_test::watchdog;

// What an import system keeps in an entry, reduced to the protocol's link.
struct extra {
    template <class E>
    explicit extra(E&) noexcept {}
};

using entry =
    importlock::detail::registry_entry<std::string, int, importlock::detail::spin_lock, extra>;

template <class Policy>
using protocol_of = importlock::detail::lock_protocol<std::string, Policy, entry>;

template <class Policy>
inline constexpr bool per_key = Policy::scope == importlock::lock_scope::per_key;

// The record linked from `e`'s claim word, or null (the same encoding for every policy).
const void* record_of(const entry& e) {
    return protocol_of<importlock::per_key_locks>::record_of(e);
}

// The part of an import system the protocol needs: a state mutex and the protocol, on a
// domain given by the test (shared or not with other systems).
template <class Policy>
struct lock_system {
    using protocol_type = protocol_of<Policy>;
    using module_lock = typename protocol_type::module_lock;
    using claim = typename protocol_type::claim;
    using mutex_type = typename Policy::mutex_type;
    using state_lock = std::unique_lock<mutex_type>;

    explicit lock_system(importlock::wait_graph_domain& d) : domain(d), protocol(d) {}

    state_lock lock() { return state_lock(mutex); }

    // Acquires without a hook; `state` is held on entry and exit.
    typename protocol_type::acquisition acquire(entry& e, state_lock& state,
                                                const wait_limit& limit = {},
                                                bool share_failures = false) {
        return protocol.acquire(e, state, limit, share_failures, [](std::thread::id) {});
    }

    // Queries under the state mutex, for polling from threads that do not hold it.
    std::size_t waiters_on(const entry& e) {
        std::lock_guard state(mutex);
        return protocol.waiters_of(&e);
    }
    std::size_t locks() {
        std::lock_guard state(mutex);
        return protocol.lock_count();
    }

    importlock::wait_graph_domain& domain;
    mutex_type mutex;
    protocol_type protocol;
};

// The lock an acquisition took; aborts (on any thread) when it took none, since a test
// thread cannot REQUIRE.
template <class Acquisition>
auto& held(const Acquisition& got) {
    if (got.lock == nullptr) {
        std::fprintf(stderr, "test_lock_protocol: expected acquire to take the lock\n");
        std::abort();
    }
    return *got.lock;
}

// How an acquire on a test thread ended.
struct outcome {
    std::thread::id thread;
    bool took_lock = false;
    std::vector<std::string> cycle;
    bool failure = false;

    template <class Acquisition>
    void record(const Acquisition& got) {
        took_lock = got.lock != nullptr;
        cycle = got.cycle;
        failure = static_cast<bool>(got.failure);
    }
};

template <class Protocol>
std::size_t count_records(const Protocol& p) {
    std::size_t n = 0;
    p.for_each_lock([&](const auto&) { ++n; });
    return n;
}

template <class Protocol>
std::vector<std::pair<std::thread::id, std::string>> waiting_threads_of(const Protocol& p) {
    std::vector<std::pair<std::thread::id, std::string>> out;
    p.for_each_waiter([&](std::thread::id thread, const auto& lock) {
        out.emplace_back(thread, Protocol::describe(lock));
    });
    return out;
}

template <class Protocol>
std::map<std::thread::id, std::vector<std::string>> stacks_of(const Protocol& p) {
    std::map<std::thread::id, std::vector<std::string>> out;
    p.for_each_stack([&](std::thread::id thread, const std::vector<entry*>& stack) {
        for (const entry* e : stack) out[thread].push_back(e->key);
    });
    return out;
}

wait_limit expired_deadline() {
    wait_limit limit;
    limit.deadline = std::chrono::steady_clock::now() - std::chrono::hours(1);
    return limit;
}

// A stop source for wait_limit that counts how often the protocol asks it.
struct stop_switch {
    std::atomic<bool> stop{false};
    mutable std::atomic<int> polls{0};

    wait_limit limit() const {
        wait_limit l;
        l.stop_requested = [](const void* state) {
            const auto* self = static_cast<const stop_switch*>(state);
            self->polls.fetch_add(1);
            return self->stop.load();
        };
        l.stop_state = this;
        return l;
    }
};

// An exception payload that counts its live objects.
class payload : public std::runtime_error {
public:
    explicit payload(std::atomic<int>& live) : std::runtime_error("loader failed"), live_(&live) {
        live_->fetch_add(1);
    }
    payload(const payload& other) : std::runtime_error(other), live_(other.live_) {
        live_->fetch_add(1);
    }
    payload& operator=(const payload&) = delete;
    ~payload() override { live_->fetch_sub(1); }

private:
    std::atomic<int>* live_;
};

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

std::string describe(std::thread::id thread) {
    return importlock::import_timeout_error::describe(thread);
}

}  // namespace

// --- Records ------------------------------------------------------------------------------

TEMPLATE_TEST_CASE("lock_protocol: an uncontended acquire creates one record, release drops it",
                   "[lock_protocol]", importlock::per_key_locks, importlock::global_lock) {
    importlock::wait_graph_domain domain;
    lock_system<TestType> sys(domain);
    entry a{"a", 1};
    auto state = sys.lock();
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(count_records(sys.protocol) == 0);

    auto got = sys.acquire(a, state);
    REQUIRE(got.lock != nullptr);
    CHECK(got.cycle.empty());
    CHECK_FALSE(got.failure);
    CHECK(state.owns_lock());
    CHECK(got.lock->holder_id() == std::this_thread::get_id());
    CHECK(got.lock->depth == 1);
    CHECK(got.lock->waiters == 0);
    CHECK(sys.protocol.lock_count() == 1);
    CHECK(count_records(sys.protocol) == 1);
    CHECK(sys.protocol.waiters_of(&a) == 0);
    CHECK(domain.waiting_threads() == 0);  // an uncontended acquire never touches the domain
    if constexpr (per_key<TestType>) {
        CHECK(record_of(a) == got.lock);
        CHECK(got.lock->entry == &a);
        CHECK(sys.protocol.describe(*got.lock) == "a");
    } else {
        CHECK(record_of(a) == nullptr);
        CHECK(got.lock->entry == nullptr);
        CHECK(sys.protocol.describe(*got.lock) == "<global import lock>");
    }

    sys.protocol.release(*got.lock);
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(count_records(sys.protocol) == 0);
    CHECK(record_of(a) == nullptr);
    CHECK(sys.protocol.waiters_of(&a) == 0);
    CHECK(sys.protocol.waiters_of(nullptr) == 0);
}

TEST_CASE("lock_protocol: per-key records are one per key in flight", "[lock_protocol]") {
    importlock::wait_graph_domain domain;
    lock_system<importlock::per_key_locks> sys(domain);
    entry a{"a", 1};
    entry b{"b", 2};
    auto state = sys.lock();
    auto ga = sys.acquire(a, state);
    auto gb = sys.acquire(b, state);
    REQUIRE(ga.lock != nullptr);
    REQUIRE(gb.lock != nullptr);
    CHECK(ga.lock != gb.lock);
    CHECK(sys.protocol.lock_count() == 2);
    CHECK(count_records(sys.protocol) == 2);
    CHECK(record_of(a) == ga.lock);
    CHECK(record_of(b) == gb.lock);
    sys.protocol.release(*ga.lock);
    CHECK(sys.protocol.lock_count() == 1);
    CHECK(record_of(a) == nullptr);
    CHECK(record_of(b) == gb.lock);
    sys.protocol.release(*gb.lock);
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(record_of(b) == nullptr);
}

TEST_CASE("lock_protocol: global_lock has one record for every key", "[lock_protocol]") {
    importlock::wait_graph_domain domain;
    lock_system<importlock::global_lock> sys(domain);
    entry a{"a", 1};
    entry b{"b", 2};
    auto state = sys.lock();
    auto ga = sys.acquire(a, state);
    auto gb = sys.acquire(b, state);  // the same lock, re-entered
    REQUIRE(ga.lock != nullptr);
    CHECK(ga.lock == gb.lock);
    CHECK(ga.lock->depth == 2);
    CHECK(sys.protocol.lock_count() == 1);
    sys.protocol.release(*gb.lock);
    CHECK(sys.protocol.lock_count() == 1);
    sys.protocol.release(*ga.lock);
    CHECK(sys.protocol.lock_count() == 0);
}

TEMPLATE_TEST_CASE("lock_protocol: the holding thread re-enters its lock", "[lock_protocol]",
                   importlock::per_key_locks, importlock::global_lock) {
    importlock::wait_graph_domain domain;
    lock_system<TestType> sys(domain);
    entry a{"a", 1};
    auto state = sys.lock();
    auto first = sys.acquire(a, state);
    auto second = sys.acquire(a, state);
    REQUIRE(first.lock != nullptr);
    CHECK(second.lock == first.lock);
    CHECK(second.cycle.empty());
    CHECK(first.lock->depth == 2);
    CHECK(sys.protocol.lock_count() == 1);
    CHECK(count_records(sys.protocol) == 1);
    CHECK(domain.waiting_threads() == 0);

    sys.protocol.release(*second.lock);
    CHECK(first.lock->depth == 1);
    CHECK(first.lock->holder_id() == std::this_thread::get_id());
    CHECK(sys.protocol.lock_count() == 1);
    sys.protocol.release(*first.lock);
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(record_of(a) == nullptr);
}

TEST_CASE("lock_protocol: destroying the protocol frees the records still alive",
          "[lock_protocol]") {
    // Checked by the leak sanitizer where one runs: the record is never released.
    importlock::wait_graph_domain domain;
    entry a{"a", 1};
    {
        lock_system<importlock::per_key_locks> sys(domain);
        auto state = sys.lock();
        auto got = sys.acquire(a, state);
        REQUIRE(got.lock != nullptr);
        CHECK(sys.protocol.lock_count() == 1);
    }
    SUCCEED();
}

// --- claim, import stacks, reentry_chain -----------------------------------------------------

TEMPLATE_TEST_CASE("lock_protocol: a claim marks the holder, stacks the key and counts the depth",
                   "[lock_protocol][claim]", importlock::per_key_locks, importlock::global_lock) {
    using sys_t = lock_system<TestType>;
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    entry b{"b", 2};
    const auto self = std::this_thread::get_id();
    const std::size_t depth_before = thread_import_depth();
    auto state = sys.lock();
    {
        auto ga = sys.acquire(a, state);
        typename sys_t::claim ca(sys.protocol, a, held(ga), state);
        CHECK(&ca.lock() == ga.lock);
        CHECK(sys.protocol.claimed_by_this_thread(a));
        CHECK(thread_import_depth() == depth_before + 1);
        CHECK(stacks_of(sys.protocol) ==
              std::map<std::thread::id, std::vector<std::string>>{{self, {"a"}}});
        {
            auto gb = sys.acquire(b, state);
            typename sys_t::claim cb(sys.protocol, b, held(gb), state);
            CHECK(sys.protocol.claimed_by_this_thread(b));
            CHECK(thread_import_depth() == depth_before + 2);
            CHECK(stacks_of(sys.protocol) ==
                  std::map<std::thread::id, std::vector<std::string>>{{self, {"a", "b"}}});
            CHECK(sys.protocol.lock_count() == (per_key<TestType> ? 2u : 1u));

            // Another thread's depth is its own (thread_local).
            std::size_t other_depth = 99;
            std::thread([&] { other_depth = thread_import_depth(); }).join();
            CHECK(other_depth == 0);

            // The claim gives everything back with the state mutex relocked if needed.
            state.unlock();
        }
        CHECK(state.owns_lock());
        CHECK_FALSE(sys.protocol.claimed(b));
        CHECK(sys.protocol.claimed_by_this_thread(a));
        CHECK(thread_import_depth() == depth_before + 1);
        CHECK(stacks_of(sys.protocol) ==
              std::map<std::thread::id, std::vector<std::string>>{{self, {"a"}}});
        CHECK(sys.protocol.lock_count() == 1);
        CHECK(record_of(b) == nullptr);
    }
    CHECK(state.owns_lock());
    CHECK_FALSE(sys.protocol.claimed(a));
    CHECK(thread_import_depth() == depth_before);
    CHECK(stacks_of(sys.protocol).empty());
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(record_of(a) == nullptr);
}

TEMPLATE_TEST_CASE("lock_protocol: a claim releases everything while an exception unwinds",
                   "[lock_protocol][claim]", importlock::per_key_locks, importlock::global_lock) {
    using sys_t = lock_system<TestType>;
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    const std::size_t depth_before = thread_import_depth();
    auto state = sys.lock();
    bool caught = false;
    try {
        auto got = sys.acquire(a, state);
        typename sys_t::claim c(sys.protocol, a, held(got), state);
        state.unlock();  // the loader runs unlocked, then throws
        throw std::runtime_error("loader threw");
    } catch (const std::runtime_error& e) {
        caught = std::string(e.what()) == "loader threw";
        CHECK(state.owns_lock());  // relocked by the claim
        CHECK(sys.protocol.lock_count() == 0);
        CHECK(record_of(a) == nullptr);
        CHECK_FALSE(sys.protocol.claimed(a));
        CHECK(thread_import_depth() == depth_before);
        CHECK(stacks_of(sys.protocol).empty());
    }
    CHECK(caught);
    // The key can be taken again at once.
    auto again = sys.acquire(a, state);
    REQUIRE(again.lock != nullptr);
    CHECK(again.lock->depth == 1);
    sys.protocol.release(*again.lock);
    CHECK(sys.protocol.lock_count() == 0);
}

TEST_CASE("lock_protocol: reentry_chain runs from the key's frame to the innermost import",
          "[lock_protocol][claim]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    entry b{"b", 2};
    entry c{"c", 3};
    entry outside{"outside", 4};
    auto state = sys.lock();
    CHECK(sys.protocol.reentry_chain(a) == std::vector<std::string>{"a", "a"});
    auto ga = sys.acquire(a, state);
    typename sys_t::claim ca(sys.protocol, a, held(ga), state);
    auto gb = sys.acquire(b, state);
    typename sys_t::claim cb(sys.protocol, b, held(gb), state);
    auto gc = sys.acquire(c, state);
    typename sys_t::claim cc(sys.protocol, c, held(gc), state);
    CHECK(sys.protocol.reentry_chain(a) == std::vector<std::string>{"a", "b", "c", "a"});
    CHECK(sys.protocol.reentry_chain(b) == std::vector<std::string>{"b", "c", "b"});
    CHECK(sys.protocol.reentry_chain(c) == std::vector<std::string>{"c", "c"});
    CHECK(sys.protocol.reentry_chain(outside) == std::vector<std::string>{"outside", "outside"});
}

TEST_CASE("lock_protocol: push and pop link frames, one stack per thread in depth order",
          "[lock_protocol][claim]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    using frame = typename sys_t::protocol_type::frame;
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    entry b{"b", 2};
    entry c{"c", 3};
    const auto self = std::this_thread::get_id();
    auto* const top_before = importlock::detail::thread_top_frame();
    std::lock_guard state(sys.mutex);
    CHECK(stacks_of(sys.protocol).empty());
    frame fa, fb, fc;
    sys.protocol.push(fa, a, true);
    ++importlock::detail::thread_import_depth();
    sys.protocol.push(fb, b, true);
    ++importlock::detail::thread_import_depth();
    sys.protocol.push(fc, c, true);
    CHECK(importlock::detail::thread_top_frame() == &fc);
    CHECK(fc.outer == &fb);
    CHECK(fb.inner == &fc);
    CHECK(stacks_of(sys.protocol) ==
          std::map<std::thread::id, std::vector<std::string>>{{self, {"a", "b", "c"}}});
    sys.protocol.unlist(fb);  // from the middle of the list: the others keep their order
    CHECK_FALSE(fb.listed);
    CHECK(stacks_of(sys.protocol) ==
          std::map<std::thread::id, std::vector<std::string>>{{self, {"a", "c"}}});
    sys.protocol.unlist(fc);
    sys.protocol.pop(fc);
    CHECK(fb.inner == nullptr);
    sys.protocol.pop(fb);
    --importlock::detail::thread_import_depth();
    sys.protocol.unlist(fa);
    sys.protocol.pop(fa);
    --importlock::detail::thread_import_depth();
    CHECK(stacks_of(sys.protocol).empty());
    CHECK(sys.protocol.stack_of(self).empty());
    CHECK(importlock::detail::thread_top_frame() == top_before);

    // An unlisted frame (an uncontended claim's) is on the thread's stack only.
    frame fd;
    sys.protocol.push(fd, a, false);
    CHECK(importlock::detail::thread_top_frame() == &fd);
    CHECK(stacks_of(sys.protocol).empty());
    sys.protocol.unlist(fd);  // not listed: nothing to do
    sys.protocol.pop(fd);
    CHECK(importlock::detail::thread_top_frame() == top_before);
}

TEST_CASE("lock_protocol: a released record is reused for the next key", "[lock_protocol]") {
    importlock::wait_graph_domain domain;
    lock_system<importlock::per_key_locks> sys(domain);
    entry a{"a", 1};
    entry b{"b", 2};
    auto state = sys.lock();
    auto ga = sys.acquire(a, state);
    const auto* first = ga.lock;
    sys.protocol.release(held(ga));
    CHECK(record_of(a) == nullptr);
    CHECK(sys.protocol.lock_count() == 0);
    auto gb = sys.acquire(b, state);
    CHECK(gb.lock == first);  // from the free list, not a new allocation
    CHECK(gb.lock->entry == &b);
    CHECK(gb.lock->failures == 0);
    CHECK(gb.lock->waiters == 0);
    CHECK(sys.protocol.lock_count() == 1);
    sys.protocol.release(held(gb));
}

// --- Waiting --------------------------------------------------------------------------------

TEMPLATE_TEST_CASE(
    "lock_protocol: a second thread waits while the lock is held, for_each_waiter reports it, "
    "and it takes the lock after release",
    "[lock_protocol][threads]", importlock::per_key_locks, importlock::global_lock) {
    watchdog dog("lock_protocol: second thread waits");
    importlock::wait_graph_domain domain;
    lock_system<TestType> sys(domain);
    entry a{"a", 1};
    entry b{"b", 2};
    // Per-key: the waiter wants the same key. Global: another key, behind the same lock.
    entry& wanted = per_key<TestType> ? a : b;
    const auto self = std::this_thread::get_id();

    auto state = sys.lock();
    auto mine = sys.acquire(a, state);
    auto& lock = held(mine);
    state.unlock();

    outcome waiter;
    std::thread::id holder_when_taken;
    std::size_t depth_when_taken = 0;
    std::thread t([&] {
        auto s = sys.lock();
        auto got = sys.acquire(wanted, s);
        waiter.record(got);
        if (got.lock != nullptr) {
            holder_when_taken = got.lock->holder_id();
            depth_when_taken = got.lock->depth;
            sys.protocol.release(*got.lock);
        }
    });
    const std::thread::id waiter_id = t.get_id();
    await([&] { return sys.waiters_on(wanted) == 1; });

    state.lock();
    CHECK(lock.holder_id() == self);
    CHECK(lock.depth == 1);
    CHECK(lock.waiters == 1);
    CHECK(sys.protocol.lock_count() == 1);
    CHECK(domain.waiting_threads() == 1);
    const auto waiting = waiting_threads_of(sys.protocol);
    REQUIRE(waiting.size() == 1);
    CHECK(waiting[0].first == waiter_id);
    CHECK(waiting[0].second == (per_key<TestType> ? "a" : "<global import lock>"));
    sys.protocol.release(lock);
    state.unlock();
    t.join();

    CHECK(waiter.took_lock);
    CHECK(waiter.cycle.empty());
    CHECK(holder_when_taken == waiter_id);
    CHECK(depth_when_taken == 1);
    state.lock();
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(record_of(a) == nullptr);
    CHECK(record_of(b) == nullptr);
    CHECK(domain.waiting_threads() == 0);
    CHECK(waiting_threads_of(sys.protocol).empty());
}

// --- Uncontended claims ---------------------------------------------------------------------

TEST_CASE("lock_protocol: an uncontended claim takes no record and releases without the mutex",
          "[lock_protocol][uncontended]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    const auto self = std::this_thread::get_id();
    const std::size_t depth_before = thread_import_depth();
    auto state = sys.lock();
    REQUIRE(sys.protocol.can_claim_uncontended(a));
    {
        typename sys_t::claim c(sys.protocol, a, state, sys_t::protocol_type::uncontended);
        CHECK_FALSE(c.has_record());
        CHECK(record_of(a) == nullptr);
        const std::uintptr_t word = a.claim_word.load();
        CHECK(word != 0);
        CHECK((word & 3) == 0);  // a frame's address, not a record's
        CHECK(sys.protocol.claimed_by_this_thread(a));
        CHECK(sys.protocol.claimed(a));
        CHECK(sys.protocol.claimed_by_this_thread(a));
        CHECK_FALSE(sys.protocol.can_claim_uncontended(a));
        CHECK(sys.protocol.lock_count() == 1);
        CHECK(count_records(sys.protocol) == 0);
        CHECK(thread_import_depth() == depth_before + 1);
        CHECK(stacks_of(sys.protocol).empty());  // found through the entry, not listed
        std::size_t visits = 0;
        sys.protocol.visit_uncontended_claim(a, [&](const auto& f) {
            ++visits;
            CHECK(f.thread == self);
            CHECK(f.depth == depth_before);
            CHECK(f.entry == &a);
            CHECK((a.claim_word.load() & 3) == 2);  // pinned meanwhile (no record)
        });
        CHECK(visits == 1);
        CHECK(a.claim_word.load() == word);  // unpinned
        state.unlock();
    }
    CHECK_FALSE(state.owns_lock());  // released by one compare-and-swap, no relock
    CHECK(a.claim_word.load() == 0);
    CHECK_FALSE(sys.protocol.claimed(a));
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(thread_import_depth() == depth_before);
    state.lock();
    CHECK(sys.protocol.can_claim_uncontended(a));
    std::size_t visits = 0;
    sys.protocol.visit_uncontended_claim(a, [&](const auto&) { ++visits; });
    CHECK(visits == 0);
}

TEST_CASE("lock_protocol: a thread re-entering its uncontended claim converts it to a record",
          "[lock_protocol][uncontended]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    const auto self = std::this_thread::get_id();
    auto state = sys.lock();
    {
        typename sys_t::claim c(sys.protocol, a, state, sys_t::protocol_type::uncontended);
        auto again = sys.acquire(a, state);
        auto& lock = held(again);
        CHECK(record_of(a) == &lock);
        CHECK((a.claim_word.load() & 1) == 1);
        CHECK(lock.holder_id() == self);
        CHECK(lock.depth == 2);                 // the claim's hold, converted, and this one
        CHECK(sys.protocol.lock_count() == 1);  // one record; the claim is counted in it
        CHECK(stacks_of(sys.protocol) ==
              std::map<std::thread::id, std::vector<std::string>>{{self, {"a"}}});
        sys.protocol.release(lock);
        CHECK(lock.depth == 1);
        CHECK(sys.protocol.claimed_by_this_thread(a));
    }  // the claim's compare-and-swap fails: released through the record, under the mutex
    CHECK(state.owns_lock());
    CHECK(record_of(a) == nullptr);
    CHECK(a.claim_word.load() == 0);
    CHECK_FALSE(sys.protocol.claimed(a));
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(stacks_of(sys.protocol).empty());
}

TEST_CASE("lock_protocol: a waiter converts an uncontended claim and is woken by its release",
          "[lock_protocol][uncontended][threads]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    watchdog dog("lock_protocol: waiter converts an uncontended claim");
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    const auto self = std::this_thread::get_id();
    auto state = sys.lock();
    std::optional<typename sys_t::claim> mine;
    mine.emplace(sys.protocol, a, state, sys_t::protocol_type::uncontended);
    state.unlock();

    outcome waiter;
    std::thread::id holder_when_taken;
    std::thread t([&] {
        auto s = sys.lock();
        auto got = sys.acquire(a, s);
        waiter.record(got);
        if (got.lock != nullptr) {
            holder_when_taken = got.lock->holder_id();
            sys.protocol.release(*got.lock);
        }
    });
    const std::thread::id waiter_id = t.get_id();
    await([&] { return sys.waiters_on(a) == 1; });

    state.lock();
    REQUIRE(record_of(a) != nullptr);
    const auto& lock = *sys_t::protocol_type::record_of(a);
    CHECK(lock.holder_id() == self);  // the claimer, taken over from the claim word
    CHECK(lock.depth == 1);
    CHECK(lock.waiters == 1);
    CHECK((a.claim_word.load() & 1) == 1);
    CHECK(sys.protocol.lock_count() == 1);
    CHECK(stacks_of(sys.protocol) ==
          std::map<std::thread::id, std::vector<std::string>>{{self, {"a"}}});
    CHECK(waiting_threads_of(sys.protocol) ==
          std::vector<std::pair<std::thread::id, std::string>>{{waiter_id, "a"}});
    state.unlock();
    mine.reset();  // the compare-and-swap fails; released under the mutex, waking the waiter
    CHECK(state.owns_lock());
    state.unlock();
    t.join();

    CHECK(waiter.took_lock);
    CHECK(holder_when_taken == waiter_id);
    state.lock();
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(record_of(a) == nullptr);
    CHECK(a.claim_word.load() == 0);
    CHECK(domain.waiting_threads() == 0);
    CHECK(sys.protocol.can_claim_uncontended(a));
}

TEST_CASE("lock_protocol: a cycle through two uncontended claims is found by exactly one thread",
          "[lock_protocol][uncontended][threads][cycle]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    watchdog dog("lock_protocol: cycle through uncontended claims");
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    entry b{"b", 2};
    std::latch holding(2);
    outcome ra;
    outcome rb;
    // A claims a, B claims b (both uncontended); A waits for b, then B wants a.
    std::thread ta([&] {
        auto state = sys.lock();
        typename sys_t::claim c(sys.protocol, a, state, sys_t::protocol_type::uncontended);
        state.unlock();
        holding.arrive_and_wait();
        state.lock();
        auto got = sys.acquire(b, state);  // converts B's claim and waits
        ra.record(got);
        if (got.lock != nullptr) sys.protocol.release(*got.lock);
    });
    std::thread tb([&] {
        auto state = sys.lock();
        typename sys_t::claim c(sys.protocol, b, state, sys_t::protocol_type::uncontended);
        state.unlock();
        holding.arrive_and_wait();
        await([&] { return sys.waiters_on(b) == 1; });
        state.lock();
        auto got = sys.acquire(a, state);  // converts A's claim: waiting would close the cycle
        rb.record(got);
        if (got.lock != nullptr) sys.protocol.release(*got.lock);
    });  // B's claim releases b through its record: A takes b
    ta.join();
    tb.join();
    CHECK(ra.took_lock);
    CHECK(ra.cycle.empty());
    CHECK_FALSE(rb.took_lock);
    CHECK(rb.cycle == std::vector<std::string>{"b", "a", "b"});
    CHECK(sys.locks() == 0);
    CHECK(domain.waiting_threads() == 0);
    for (const entry* e : {&a, &b}) {
        CHECK(record_of(*e) == nullptr);
        CHECK(e->claim_word.load() == 0);
    }
}

TEST_CASE(
    "lock_protocol: no_locks refuses a second thread while the first holds an uncontended "
    "claim",
    "[lock_protocol][uncontended][no_locks]") {
    using sys_t = lock_system<importlock::no_locks>;
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    auto state = sys.lock();
    {
        typename sys_t::claim c(sys.protocol, a, state, sys_t::protocol_type::uncontended);
        std::string error;
        std::thread([&] {
            auto s = sys.lock();
            try {
                (void)sys.acquire(a, s);
            } catch (const importlock::import_error& e) {
                error = e.what();
            }
        }).join();
        CHECK(contains(error, "no_locks"));
        CHECK(contains(error, "'a'"));
        CHECK(sys.protocol.lock_count() == 1);
    }
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(record_of(a) == nullptr);
    CHECK(a.claim_word.load() == 0);
}

// --- Cycles ---------------------------------------------------------------------------------

TEST_CASE(
    "lock_protocol: a two-thread cycle is reported to exactly one thread, with the chain; the "
    "other takes the lock once the first releases",
    "[lock_protocol][threads][cycle]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    watchdog dog("lock_protocol: forced two-thread cycle");
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    entry a2{"a2", 2};
    entry b{"b", 3};
    entry b2{"b2", 4};
    std::latch holding(2);
    outcome ra;
    outcome rb;

    // A imports a, then a2, then wants b. B imports b, then b2, then wants a.
    std::thread ta([&] {
        ra.thread = std::this_thread::get_id();
        auto state = sys.lock();
        auto g1 = sys.acquire(a, state);
        typename sys_t::claim c1(sys.protocol, a, held(g1), state);
        auto g2 = sys.acquire(a2, state);
        typename sys_t::claim c2(sys.protocol, a2, held(g2), state);
        state.unlock();
        holding.arrive_and_wait();
        state.lock();
        auto got = sys.acquire(b, state);  // waits: B holds b
        ra.record(got);
        if (got.lock != nullptr) {
            typename sys_t::claim c3(sys.protocol, b, *got.lock, state);
        }
    });
    std::thread tb([&] {
        rb.thread = std::this_thread::get_id();
        auto state = sys.lock();
        auto g1 = sys.acquire(b, state);
        typename sys_t::claim c1(sys.protocol, b, held(g1), state);
        auto g2 = sys.acquire(b2, state);
        typename sys_t::claim c2(sys.protocol, b2, held(g2), state);
        state.unlock();
        holding.arrive_and_wait();
        await([&] { return sys.waiters_on(b) == 1; });  // A is parked on b
        state.lock();
        auto got = sys.acquire(a, state);  // waiting would close the cycle
        rb.record(got);
        if (got.lock != nullptr) {
            typename sys_t::claim c3(sys.protocol, a, *got.lock, state);
        }
    });  // B's claims release b2 and b: A takes b
    ta.join();
    tb.join();

    CHECK(ra.took_lock);
    CHECK(ra.cycle.empty());
    CHECK_FALSE(rb.took_lock);
    // From the lock B holds: b, what B imported on top of it, then a (held by A) and what A
    // imported on top of a, back to b.
    CHECK(rb.cycle == std::vector<std::string>{"b", "b2", "a", "a2", "b"});
    CHECK(sys.locks() == 0);
    CHECK(domain.waiting_threads() == 0);
    for (const entry* e : {&a, &a2, &b, &b2}) CHECK(record_of(*e) == nullptr);
}

TEST_CASE("lock_protocol: racing into a cycle, exactly one of the two threads finds it",
          "[lock_protocol][threads][cycle]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    watchdog dog("lock_protocol: racing two-thread cycle");
    constexpr int rounds = 200;
    int cycles_found = 0;
    int locks_taken = 0;
    int bad_chains = 0;
    for (int round = 0; round < rounds; ++round) {
        importlock::wait_graph_domain domain;
        sys_t sys(domain);
        entry a{"a", 1};
        entry b{"b", 2};
        std::latch holding(2);
        outcome results[2];
        const auto run = [&](entry& mine, entry& other, outcome& out) {
            auto state = sys.lock();
            auto g = sys.acquire(mine, state);
            typename sys_t::claim c(sys.protocol, mine, held(g), state);
            state.unlock();
            holding.arrive_and_wait();
            state.lock();
            auto got = sys.acquire(other, state);
            out.record(got);
            if (got.lock != nullptr) {
                typename sys_t::claim c2(sys.protocol, other, *got.lock, state);
            }
        };  // the one that found the cycle releases its key: the other proceeds
        std::thread t1(run, std::ref(a), std::ref(b), std::ref(results[0]));
        std::thread t2(run, std::ref(b), std::ref(a), std::ref(results[1]));
        t1.join();
        t2.join();
        for (const outcome& r : results) {
            if (!r.cycle.empty()) {
                ++cycles_found;
                if (r.cycle != std::vector<std::string>{"a", "b", "a"} &&
                    r.cycle != std::vector<std::string>{"b", "a", "b"}) {
                    ++bad_chains;
                }
            }
            if (r.took_lock) ++locks_taken;
        }
        if (sys.locks() != 0 || domain.waiting_threads() != 0) {
            FAIL("round " << round << " left a record or a waiter behind");
        }
    }
    CHECK(cycles_found == rounds);
    CHECK(locks_taken == rounds);
    CHECK(bad_chains == 0);
}

// --- Timeouts and cancellation ---------------------------------------------------------------

TEMPLATE_TEST_CASE(
    "lock_protocol: an expired deadline while another thread holds throws import_timeout_error "
    "naming the key and the holder, and leaves no record behind",
    "[lock_protocol][threads][timeout]", importlock::per_key_locks, importlock::global_lock) {
    using sys_t = lock_system<TestType>;
    watchdog dog("lock_protocol: expired deadline");
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    entry b{"b", 2};
    entry& wanted = per_key<TestType> ? a : b;
    const auto self = std::this_thread::get_id();

    auto state = sys.lock();
    auto mine = sys.acquire(a, state);
    std::optional<typename sys_t::claim> c(std::in_place, sys.protocol, a, held(mine), state);
    state.unlock();

    bool timed_out = false;
    bool other_error = false;
    bool owned_after = false;
    std::string key;
    std::string what;
    std::thread::id holder;
    std::thread t([&] {
        auto s = sys.lock();
        try {
            auto got = sys.acquire(wanted, s, expired_deadline());
            (void)got;
        } catch (const importlock::import_timeout_error& e) {
            timed_out = true;
            key = e.key();
            what = e.what();
            holder = e.holder();
        } catch (...) {
            other_error = true;
        }
        owned_after = s.owns_lock();
    });
    t.join();  // the holder held a throughout

    CHECK(timed_out);
    CHECK_FALSE(other_error);
    CHECK(owned_after);
    CHECK(key == wanted.key);
    CHECK(holder == self);
    CHECK(contains(what, "'" + wanted.key + "'"));
    CHECK(contains(what, describe(self)));
    if constexpr (per_key<TestType>) {
        CHECK(contains(what, "which is importing it"));
    } else {
        CHECK(contains(what, "which is importing 'a' under the global import lock"));
    }
    state.lock();
    CHECK(sys.protocol.lock_count() == 1);  // the holder's only
    CHECK(sys.protocol.waiters_of(&wanted) == 0);
    CHECK(domain.waiting_threads() == 0);
    c.reset();  // the holder's import ends
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(record_of(a) == nullptr);
    CHECK(record_of(b) == nullptr);
}

TEST_CASE("lock_protocol: after an expired wait no record is left once the holder releases",
          "[lock_protocol][threads][timeout]") {
    watchdog dog("lock_protocol: timed wait");
    importlock::wait_graph_domain domain;
    lock_system<importlock::per_key_locks> sys(domain);
    entry a{"a", 1};
    const auto self = std::this_thread::get_id();
    auto state = sys.lock();
    auto mine = sys.acquire(a, state);
    auto& lock = held(mine);
    state.unlock();

    bool timed_out = false;
    std::thread::id holder;
    std::thread t([&] {
        auto s = sys.lock();
        wait_limit limit;
        // Really waits (the deadline is ahead), and must time out: the lock is held until
        // this thread has been joined.
        limit.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
        try {
            (void)sys.acquire(a, s, limit);
        } catch (const importlock::import_timeout_error& e) {
            timed_out = e.key() == "a";
            holder = e.holder();
        }
    });
    t.join();
    CHECK(timed_out);
    CHECK(holder == self);

    state.lock();
    CHECK(lock.waiters == 0);
    CHECK(sys.protocol.lock_count() == 1);
    sys.protocol.release(lock);
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(record_of(a) == nullptr);
    CHECK(domain.waiting_threads() == 0);
}

TEST_CASE("lock_protocol: a stop request cancels a wait with import_cancelled_error",
          "[lock_protocol][threads][cancel]") {
    watchdog dog("lock_protocol: cancellation");
    importlock::wait_graph_domain domain;
    lock_system<importlock::per_key_locks> sys(domain);
    entry a{"a", 1};
    const auto self = std::this_thread::get_id();
    auto state = sys.lock();
    auto mine = sys.acquire(a, state);
    auto& lock = held(mine);
    state.unlock();

    SECTION("requested before the wait: thrown at once") {
        stop_switch stop;
        stop.stop = true;
        bool cancelled = false;
        std::string key;
        std::thread::id holder;
        std::thread t([&] {
            auto s = sys.lock();
            try {
                (void)sys.acquire(a, s, stop.limit());
            } catch (const importlock::import_cancelled_error& e) {
                cancelled = true;
                key = e.key();
                holder = e.holder();
            }
        });
        t.join();
        CHECK(cancelled);
        CHECK(key == "a");
        CHECK(holder == self);
    }
    SECTION("requested while waiting: the waiter wakes and gives up") {
        stop_switch stop;
        std::atomic<bool> done{false};
        bool cancelled = false;
        std::string what;
        std::thread::id holder;
        std::thread t([&] {
            auto s = sys.lock();
            try {
                (void)sys.acquire(a, s, stop.limit());
            } catch (const importlock::import_cancelled_error& e) {
                cancelled = true;
                what = e.what();
                holder = e.holder();
            }
            done = true;
        });
        await([&] { return sys.waiters_on(a) == 1; });
        stop.stop = true;
        // Wakes the waiter whenever it is parked; a wake-up before it parks is harmless,
        // it sees the request on its next look.
        while (!done) {
            {
                std::lock_guard s(sys.mutex);
                sys.protocol.notify_all_waiters();
            }
            std::this_thread::yield();
        }
        t.join();
        CHECK(cancelled);
        CHECK(holder == self);
        CHECK(contains(what, "'a' cancelled while waiting for thread " + describe(self)));
    }
    state.lock();
    CHECK(lock.holder_id() == self);  // the holder's import goes on
    CHECK(lock.waiters == 0);
    CHECK(sys.protocol.lock_count() == 1);
    CHECK(domain.waiting_threads() == 0);
    sys.protocol.release(lock);
    CHECK(sys.protocol.lock_count() == 0);
}

// --- before_wait ----------------------------------------------------------------------------

TEST_CASE("lock_protocol: before_wait runs once, with the state mutex unlocked, before waiting",
          "[lock_protocol][threads][before_wait]") {
    watchdog dog("lock_protocol: before_wait");
    importlock::wait_graph_domain domain;
    lock_system<importlock::per_key_locks> sys(domain);
    entry a{"a", 1};
    const auto self = std::this_thread::get_id();

    SECTION("not called without a wait") {
        int calls = 0;
        auto state = sys.lock();
        auto got = sys.protocol.acquire(a, state, {}, false, [&](std::thread::id) { ++calls; });
        auto again = sys.protocol.acquire(a, state, {}, false, [&](std::thread::id) { ++calls; });
        CHECK(calls == 0);
        sys.protocol.release(held(again));
        sys.protocol.release(held(got));
    }
    SECTION(
        "called once, unlocked, with the holder; checked again before parking; not "
        "again after a wake-up") {
        auto state = sys.lock();
        auto mine = sys.acquire(a, state);
        auto& lock = held(mine);
        state.unlock();

        stop_switch polls;  // never stops: counts the waiter's passes through the loop
        std::atomic<int> hook_calls{0};
        bool state_unlocked = false;
        bool mutex_free = false;
        std::thread::id hook_holder;
        int polls_in_hook = 0;
        bool took = false;
        std::thread t([&] {
            auto s = sys.lock();
            auto got =
                sys.protocol.acquire(a, s, polls.limit(), false, [&](std::thread::id holder) {
                    if (hook_calls.load() == 0) {
                        polls_in_hook = polls.polls.load();
                        hook_holder = holder;
                        state_unlocked = !s.owns_lock();
                        // Nobody else touches the mutex while the main thread awaits
                        // hook_calls, so try_lock tells whether this thread holds it.
                        mutex_free = sys.mutex.try_lock();
                        if (mutex_free) sys.mutex.unlock();
                        // Takes the domain's mutex: a hang (the watchdog) if it were held.
                        (void)domain.waiting_threads();
                    }
                    hook_calls.fetch_add(1);
                });
            took = got.lock != nullptr;
            if (took) sys.protocol.release(*got.lock);
        });
        await([&] { return hook_calls.load() == 1; });
        // With the state mutex unlocked for the hook, a stop or a release may have
        // been missed: the waiter checks the limit again before it parks, with no
        // wake-up (a lost wake-up otherwise: test_limits, "a stop requested while
        // the waiter announces its wait still cancels it").
        await([&] { return polls.polls.load() >= 2; });
        // Wake the waiter once it is parked, until it has been round the loop again.
        const int polls_parked = polls.polls.load();
        while (polls.polls.load() == polls_parked) {
            {
                std::lock_guard s(sys.mutex);
                sys.protocol.notify_all_waiters();
            }
            std::this_thread::yield();
        }
        await([&] { return sys.waiters_on(a) == 1; });  // parked again
        state.lock();
        sys.protocol.release(lock);
        state.unlock();
        t.join();

        CHECK(polls_in_hook == 1);
        CHECK(polls_parked >= 2);
        CHECK(polls.polls.load() >= 3);
        CHECK(hook_calls.load() == 1);
        CHECK(state_unlocked);
        CHECK(mutex_free);
        CHECK(hook_holder == self);
        CHECK(took);
    }
    CHECK(sys.locks() == 0);
}

TEST_CASE("lock_protocol: a before_wait that throws abandons the wait cleanly",
          "[lock_protocol][threads][before_wait]") {
    watchdog dog("lock_protocol: throwing before_wait");
    importlock::wait_graph_domain domain;
    lock_system<importlock::per_key_locks> sys(domain);
    entry a{"a", 1};
    auto state = sys.lock();
    auto mine = sys.acquire(a, state);
    auto& lock = held(mine);
    state.unlock();

    bool threw = false;
    bool owned_after = false;
    std::thread t([&] {
        auto s = sys.lock();
        try {
            (void)sys.protocol.acquire(a, s, {}, false, [](std::thread::id) {
                throw std::runtime_error("observer threw");
            });
        } catch (const std::runtime_error& e) {
            threw = std::string(e.what()) == "observer threw";
        }
        owned_after = s.owns_lock();
    });
    t.join();
    CHECK(threw);
    CHECK(owned_after);
    state.lock();
    CHECK(lock.waiters == 0);
    CHECK(sys.protocol.lock_count() == 1);
    CHECK(domain.waiting_threads() == 0);
    sys.protocol.release(lock);
    CHECK(sys.protocol.lock_count() == 0);
}

// --- Shared failures ------------------------------------------------------------------------

TEMPLATE_TEST_CASE(
    "lock_protocol: share_failure hands the waiters one exception; the record and the "
    "exception die with the last waiter",
    "[lock_protocol][threads][share_failure]", importlock::per_key_locks, importlock::global_lock) {
    using sys_t = lock_system<TestType>;
    watchdog dog("lock_protocol: share_failure");
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    std::atomic<int> live{0};

    auto state = sys.lock();
    auto mine = sys.acquire(a, state);
    auto& lock = held(mine);
    state.unlock();

    struct leaving {
        std::exception_ptr failure;
        bool took_lock = false;
        std::size_t records_after = 99;  // seen with the state mutex still held
        std::size_t waiters_after = 99;
    };
    leaving left[2];
    const auto waiter = [&](leaving& out) {
        auto s = sys.lock();
        auto got = sys.acquire(a, s, {}, true);
        out.failure = got.failure;
        out.took_lock = got.lock != nullptr;
        out.records_after = sys.protocol.lock_count();
        out.waiters_after = sys.protocol.waiters_of(&a);
        if (got.lock != nullptr) sys.protocol.release(*got.lock);
    };
    std::thread w1(waiter, std::ref(left[0]));
    std::thread w2(waiter, std::ref(left[1]));
    await([&] { return sys.waiters_on(a) == 2; });

    state.lock();
    {
        std::exception_ptr error = std::make_exception_ptr(payload(live));
        CHECK(live.load() == 1);
        sys_t::protocol_type::share_failure(lock, error);
        CHECK(lock.failures == 1);
        CHECK(lock.failure == error);
    }
    CHECK(live.load() == 1);  // kept by the record
    sys.protocol.release(lock);
    state.unlock();
    w1.join();
    w2.join();

    REQUIRE(left[0].failure != nullptr);
    CHECK(left[0].failure == left[1].failure);  // the same exception object
    CHECK_FALSE(left[0].took_lock);
    CHECK_FALSE(left[1].took_lock);
    // Whichever left first saw the record kept for the other; the last one dropped it.
    const auto [first, last] =
        left[0].waiters_after == 1 ? std::pair{&left[0], &left[1]} : std::pair{&left[1], &left[0]};
    CHECK(first->waiters_after == 1);
    CHECK(first->records_after == 1);
    CHECK(last->waiters_after == 0);
    CHECK(last->records_after == 0);
    CHECK(sys.locks() == 0);
    CHECK(record_of(a) == nullptr);

    bool rethrown = false;
    try {
        std::rethrow_exception(left[0].failure);
    } catch (const payload& p) {
        rethrown = std::string(p.what()) == "loader failed";
    }
    CHECK(rethrown);
    CHECK(live.load() == 1);  // only the waiters' copies of the pointer keep it
    left[0].failure = nullptr;
    CHECK(live.load() == 1);
    left[1].failure = nullptr;
    CHECK(live.load() == 0);  // the record kept no reference

    // A later import retries: the failure was for the waiters of that import only.
    state.lock();
    auto again = sys.acquire(a, state, {}, true);
    REQUIRE(again.lock != nullptr);
    CHECK_FALSE(again.failure);
    sys.protocol.release(*again.lock);
    CHECK(sys.protocol.lock_count() == 0);
}

TEST_CASE("lock_protocol: share_failure without waiters keeps nothing", "[lock_protocol]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    std::atomic<int> live{0};
    auto state = sys.lock();
    auto got = sys.acquire(a, state);
    auto& lock = held(got);
    sys_t::protocol_type::share_failure(lock, std::make_exception_ptr(payload(live)));
    CHECK(lock.failures == 0);
    CHECK(lock.failure == nullptr);
    CHECK(live.load() == 0);
    sys.protocol.release(lock);
}

TEST_CASE("lock_protocol: a waiter that does not share failures retries and takes the lock",
          "[lock_protocol][threads][share_failure]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    watchdog dog("lock_protocol: retrying waiter");
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    std::atomic<int> live{0};
    auto state = sys.lock();
    auto mine = sys.acquire(a, state);
    auto& lock = held(mine);
    state.unlock();

    outcome sharer;
    outcome retrier;
    std::thread ws([&] {
        auto s = sys.lock();
        auto got = sys.acquire(a, s, {}, true);
        sharer.record(got);
        if (got.lock != nullptr) sys.protocol.release(*got.lock);
    });
    std::thread wr([&] {
        auto s = sys.lock();
        auto got = sys.acquire(a, s, {}, false);
        retrier.record(got);
        if (got.lock != nullptr) sys.protocol.release(*got.lock);
    });
    await([&] { return sys.waiters_on(a) == 2; });
    state.lock();
    sys_t::protocol_type::share_failure(lock, std::make_exception_ptr(payload(live)));
    sys.protocol.release(lock);
    state.unlock();
    ws.join();
    wr.join();
    CHECK(sharer.failure);
    CHECK_FALSE(sharer.took_lock);
    CHECK(retrier.took_lock);
    CHECK_FALSE(retrier.failure);
    CHECK(sys.locks() == 0);
    CHECK(live.load() == 0);
}

// --- no_locks -------------------------------------------------------------------------------

TEST_CASE("lock_protocol: no_locks refuses a second importing thread with import_error",
          "[lock_protocol][no_locks]") {
    // The state mutex is a null_mutex: every use of the protocol is ordered by thread
    // creation and join instead (the main thread does nothing while the other runs).
    using sys_t = lock_system<importlock::no_locks>;
    static_assert(importlock::detail::single_threaded<importlock::no_locks>);
    watchdog dog("lock_protocol: no_locks");
    importlock::wait_graph_domain domain;
    sys_t sys(domain);
    entry a{"a", 1};
    const auto self = std::this_thread::get_id();
    auto state = sys.lock();
    auto mine = sys.acquire(a, state);
    auto& lock = held(mine);
    auto again = sys.acquire(a, state);  // the holder still re-enters
    CHECK(again.lock == &lock);
    CHECK(lock.depth == 2);

    bool refused = false;
    bool other_error = false;
    std::string key;
    std::string what;
    std::size_t records_after = 99;
    std::thread t([&] {
        std::unique_lock<importlock::null_mutex> s(sys.mutex);
        try {
            (void)sys.acquire(a, s);
        } catch (const importlock::import_timeout_error&) {
            other_error = true;
        } catch (const importlock::import_error& e) {
            refused = true;
            key = e.key();
            what = e.what();
        } catch (...) {
            other_error = true;
        }
        records_after = sys.protocol.lock_count();
    });
    t.join();
    CHECK(refused);
    CHECK_FALSE(other_error);
    CHECK(key == "a");
    CHECK(contains(what, "importlock::no_locks: a second thread imported 'a' while thread " +
                             describe(self) + " was importing it"));
    CHECK(contains(what, "per_key_locks"));
    CHECK(records_after == 1);
    CHECK(lock.waiters == 0);
    CHECK(lock.depth == 2);
    CHECK(domain.waiting_threads() == 0);
    sys.protocol.release(*again.lock);
    sys.protocol.release(lock);
    CHECK(sys.protocol.lock_count() == 0);
    CHECK(record_of(a) == nullptr);
}

// --- held_by --------------------------------------------------------------------------------

TEST_CASE("lock_protocol: held_by names what the holder imports", "[lock_protocol]") {
    importlock::wait_graph_domain domain;
    const auto self = std::this_thread::get_id();
    SECTION("per-key: the lock's own key") {
        lock_system<importlock::per_key_locks> sys(domain);
        entry a{"a", 1};
        auto state = sys.lock();
        auto got = sys.acquire(a, state);
        CHECK(sys.protocol.held_by(self, held(got)) == "it");
        sys.protocol.release(held(got));
    }
    SECTION("global: the top of the holder's stack") {
        using sys_t = lock_system<importlock::global_lock>;
        sys_t sys(domain);
        entry a{"a", 1};
        entry slow{"slow", 2};
        auto state = sys.lock();
        auto got = sys.acquire(a, state);
        CHECK(sys.protocol.held_by(self, held(got)) == "under the global import lock");
        typename sys_t::claim ca(sys.protocol, a, held(got), state);
        CHECK(sys.protocol.held_by(self, held(got)) == "'a' under the global import lock");
        auto got2 = sys.acquire(slow, state);
        typename sys_t::claim cs(sys.protocol, slow, held(got2), state);
        CHECK(sys.protocol.held_by(self, held(got)) == "'slow' under the global import lock");
    }
}

// --- Domains --------------------------------------------------------------------------------

TEST_CASE("lock_protocol: a cycle through two protocols is found when they share a domain",
          "[lock_protocol][threads][domain]") {
    using sys_t = lock_system<importlock::per_key_locks>;
    watchdog dog("lock_protocol: shared domain");
    importlock::wait_graph_domain shared;
    sys_t s1(shared);
    sys_t s2(shared);
    entry a{"a", 1};  // s1's
    entry b{"b", 2};  // s2's
    std::latch holding(2);
    outcome ra;
    outcome rb;
    std::thread ta([&] {
        auto st1 = s1.lock();
        auto g = s1.acquire(a, st1);
        typename sys_t::claim c(s1.protocol, a, held(g), st1);
        st1.unlock();
        holding.arrive_and_wait();
        auto st2 = s2.lock();
        auto got = s2.acquire(b, st2);  // waits: B holds b
        ra.record(got);
        if (got.lock != nullptr) s2.protocol.release(*got.lock);
    });
    std::thread tb([&] {
        auto st2 = s2.lock();
        auto g = s2.acquire(b, st2);
        typename sys_t::claim c(s2.protocol, b, held(g), st2);
        st2.unlock();
        holding.arrive_and_wait();
        await([&] { return s2.waiters_on(b) == 1; });
        auto st1 = s1.lock();
        auto got = s1.acquire(a, st1);  // closes the cycle through s2's lock
        rb.record(got);
        if (got.lock != nullptr) s1.protocol.release(*got.lock);
        st1.unlock();
    });  // ~claim relocks st2 and releases b: A takes it
    ta.join();
    tb.join();
    CHECK(ra.took_lock);
    CHECK(ra.cycle.empty());
    CHECK_FALSE(rb.took_lock);
    // s2's lock contributes its key only (s1 keeps no stack of B's imports in s2).
    CHECK(rb.cycle == std::vector<std::string>{"b", "a", "b"});
    CHECK(s1.locks() == 0);
    CHECK(s2.locks() == 0);
    CHECK(shared.waiting_threads() == 0);
}

TEST_CASE("lock_protocol: protocols on different domains do not see each other's waits",
          "[lock_protocol][threads][domain]") {
    // The cycle would be real, so nothing may wait on it: B asks with an expired deadline.
    // The cycle check comes before the deadline, so a found cycle would be returned; not
    // finding it, B gets import_timeout_error.
    using sys_t = lock_system<importlock::per_key_locks>;
    watchdog dog("lock_protocol: separate domains");
    importlock::wait_graph_domain d1;
    importlock::wait_graph_domain d2;
    sys_t s1(d1);
    sys_t s2(d2);
    entry a{"a", 1};  // s1's
    entry b{"b", 2};  // s2's
    std::latch holding(2);
    outcome ra;
    outcome rb;
    bool rb_timed_out = false;
    std::size_t waiting_d1 = 99;
    std::size_t waiting_d2 = 99;
    std::thread ta([&] {
        ra.thread = std::this_thread::get_id();
        auto st1 = s1.lock();
        auto g = s1.acquire(a, st1);
        typename sys_t::claim c(s1.protocol, a, held(g), st1);
        st1.unlock();
        holding.arrive_and_wait();
        auto st2 = s2.lock();
        auto got = s2.acquire(b, st2);  // waits until B gives b up
        ra.record(got);
        if (got.lock != nullptr) s2.protocol.release(*got.lock);
    });
    std::thread tb([&] {
        auto st2 = s2.lock();
        auto g = s2.acquire(b, st2);
        typename sys_t::claim c(s2.protocol, b, held(g), st2);
        st2.unlock();
        holding.arrive_and_wait();
        await([&] { return s2.waiters_on(b) == 1; });
        waiting_d1 = d1.waiting_threads();
        waiting_d2 = d2.waiting_threads();
        auto st1 = s1.lock();
        try {
            auto got = s1.acquire(a, st1, expired_deadline());
            rb.record(got);
            if (got.lock != nullptr) s1.protocol.release(*got.lock);
        } catch (const importlock::import_timeout_error& e) {
            rb_timed_out = e.key() == "a" && e.holder() == ra.thread;
        }
        st1.unlock();
    });
    ta.join();
    tb.join();
    CHECK(waiting_d1 == 0);
    CHECK(waiting_d2 == 1);  // A registered as waiting, in s2's domain only
    CHECK(rb_timed_out);
    CHECK(rb.cycle.empty());
    CHECK(ra.took_lock);
    CHECK(s1.locks() == 0);
    CHECK(s2.locks() == 0);
    CHECK(d1.waiting_threads() == 0);
    CHECK(d2.waiting_threads() == 0);
}

// Under global_lock a cycle needs two systems on one domain. The chain should still say what
// the holder imports under its global lock, as held_by does ("'a2' under the global import
// lock"): cycle_chain's stacked_above matches stack frames by entry.extra.lock, which
// global_lock never sets, so the holder's keys never appear.
TEST_CASE(
    "lock_protocol: a cycle through two global_lock systems names the keys imported under "
    "the global lock",
    "[lock_protocol][threads][domain]") {
    using sys_t = lock_system<importlock::global_lock>;
    watchdog dog("lock_protocol: global_lock cycle chain");
    importlock::wait_graph_domain shared;
    sys_t s1(shared);
    sys_t s2(shared);
    entry a{"a", 1};    // s1's
    entry a2{"a2", 2};  // s1's
    entry a3{"a3", 3};  // s1's
    entry b{"b", 4};    // s2's
    std::latch holding(2);
    outcome ra;
    outcome rb;
    std::thread ta([&] {
        auto st1 = s1.lock();
        auto g1 = s1.acquire(a, st1);
        typename sys_t::claim c1(s1.protocol, a, held(g1), st1);
        auto g2 = s1.acquire(a2, st1);
        typename sys_t::claim c2(s1.protocol, a2, held(g2), st1);
        st1.unlock();
        holding.arrive_and_wait();
        auto st2 = s2.lock();
        auto got = s2.acquire(b, st2);  // waits: B holds s2's global lock
        ra.record(got);
        if (got.lock != nullptr) s2.protocol.release(*got.lock);
    });
    std::thread tb([&] {
        auto st2 = s2.lock();
        auto g = s2.acquire(b, st2);
        typename sys_t::claim c(s2.protocol, b, held(g), st2);
        st2.unlock();
        holding.arrive_and_wait();
        await([&] { return s2.waiters_on(b) == 1; });
        auto st1 = s1.lock();
        auto got = s1.acquire(a3, st1);  // s1's global lock is A's: a cycle
        rb.record(got);
        if (got.lock != nullptr) s1.protocol.release(*got.lock);
        st1.unlock();
    });
    ta.join();
    tb.join();
    CHECK(ra.took_lock);
    CHECK_FALSE(rb.took_lock);
    REQUIRE_FALSE(rb.cycle.empty());
    CHECK(rb.cycle.front() == rb.cycle.back());
    INFO("chain: " << importlock::circular_import_error::format_chain(rb.cycle));
    CHECK(std::find(rb.cycle.begin(), rb.cycle.end(), "a2") != rb.cycle.end());
}
