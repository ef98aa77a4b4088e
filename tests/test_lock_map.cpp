// SPDX-License-Identifier: BSL-1.0
// Unit tests of importlock::detail::lock_map (per_key and global) and
// importlock::detail::module_lock.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/watchdog.hpp"

#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using lock_type = importlock::detail::module_lock<std::string, std::condition_variable>;
using per_key_map = importlock::detail::lock_map<importlock::lock_scope::per_key, std::string,
                                                 lock_type, std::equal_to<std::string>>;
using global_map = importlock::detail::lock_map<importlock::lock_scope::global, std::string,
                                                lock_type, std::equal_to<std::string>>;

const std::hash<std::string> hash_of{};

// Two distinct thread ids: this thread's and another's.
struct thread_ids {
    std::thread::id self = std::this_thread::get_id();
    std::thread::id other;
    thread_ids() {
        std::thread t([this] { other = std::this_thread::get_id(); });
        t.join();
    }
};

}  // namespace

TEST_CASE("module_lock: a new lock is free and unused", "[module_lock]") {
    lock_type lock;
    CHECK(lock.owner == std::thread::id{});
    CHECK(lock.depth == 0);
    CHECK(lock.waiters == 0);
    CHECK(lock.key == nullptr);
    CHECK(lock.unused());
}

TEST_CASE("module_lock: try_acquire is re-entrant for the owner and refused for others",
          "[module_lock]") {
    const thread_ids ids;
    REQUIRE(ids.self != ids.other);
    lock_type lock;
    REQUIRE(lock.try_acquire(ids.self));
    CHECK(lock.owner == ids.self);
    CHECK(lock.depth == 1);
    CHECK_FALSE(lock.unused());

    REQUIRE(lock.try_acquire(ids.self));
    CHECK(lock.owner == ids.self);
    CHECK(lock.depth == 2);

    CHECK_FALSE(lock.try_acquire(ids.other));
    CHECK(lock.owner == ids.self);  // a refusal changes nothing
    CHECK(lock.depth == 2);

    lock.release();
    CHECK(lock.owner == ids.self);  // still held once
    CHECK(lock.depth == 1);
    CHECK_FALSE(lock.try_acquire(ids.other));

    lock.release();
    CHECK(lock.owner == std::thread::id{});  // depth 0 clears the owner
    CHECK(lock.depth == 0);
    CHECK(lock.unused());

    REQUIRE(lock.try_acquire(ids.other));  // now another thread gets it
    CHECK(lock.owner == ids.other);
    CHECK(lock.depth == 1);
    CHECK_FALSE(lock.try_acquire(ids.self));
    lock.release();
    CHECK(lock.owner == std::thread::id{});
    CHECK(lock.unused());
}

TEST_CASE("module_lock: a lock with waiters is not unused", "[module_lock]") {
    lock_type lock;
    lock.waiters = 1;
    CHECK(lock.depth == 0);
    CHECK_FALSE(lock.unused());
    lock.waiters = 0;
    CHECK(lock.unused());
}

TEST_CASE("module_lock: releasing to depth 0 wakes a waiter", "[module_lock]") {
    importlock_test::watchdog dog("module_lock release wakes a waiter");
    lock_type lock;
    std::mutex state;
    const std::thread::id self = std::this_thread::get_id();
    REQUIRE(lock.try_acquire(self));
    REQUIRE(lock.try_acquire(self));
    bool acquired = false;
    std::thread::id waiter_id;

    std::thread waiter([&] {
        std::unique_lock guard(state);
        ++lock.waiters;
        // Only a notify from release() ends this wait (the predicate absorbs spurious wakeups);
        // a missing notify hangs and the watchdog reports it.
        lock.released.wait(guard, [&] { return lock.depth == 0; });
        --lock.waiters;
        waiter_id = std::this_thread::get_id();
        acquired = lock.try_acquire(waiter_id);
    });
    // The waiter registers and starts waiting under one hold of `state`: once we see it
    // registered, it is parked (or re-checking its predicate).
    importlock_test::await([&] {
        std::lock_guard guard(state);
        return lock.waiters == 1;
    });
    {
        std::lock_guard guard(state);
        lock.release();  // depth 1: still held
        CHECK(lock.owner == self);
        lock.release();  // depth 0: notifies
        CHECK(lock.owner == std::thread::id{});
    }
    waiter.join();
    CHECK(acquired);
    CHECK(lock.owner == waiter_id);
    CHECK(lock.waiters == 0);
    lock.release();
    CHECK(lock.unused());
}

TEST_CASE("lock_map<per_key>: records are created on demand", "[lock_map]") {
    per_key_map map;
    CHECK(map.size() == 0);

    lock_type& a = map.lock_for("a", hash_of("a"));
    CHECK(map.size() == 1);
    CHECK(a.unused());
    CHECK(a.owner == std::thread::id{});
    REQUIRE(a.key != nullptr);
    CHECK(*a.key == "a");
    CHECK(a.hash == hash_of("a"));

    CHECK(&map.lock_for("a", hash_of("a")) == &a);  // the same record again
    CHECK(map.size() == 1);

    lock_type& b = map.lock_for("b", hash_of("b"));
    CHECK(&b != &a);
    CHECK(map.size() == 2);
    REQUIRE(b.key != nullptr);
    CHECK(*b.key == "b");
    CHECK(b.key != a.key);

    // The key pointer refers to the map's own copy, not to the caller's string.
    std::string temporary = "c";
    lock_type& c = map.lock_for(temporary, hash_of("c"));
    temporary = "changed";
    REQUIRE(c.key != nullptr);
    CHECK(*c.key == "c");
    CHECK(c.key != &temporary);

    std::map<std::string, const lock_type*> seen;
    map.for_each([&](const lock_type& lock) { seen.emplace(*lock.key, &lock); });
    CHECK(seen == std::map<std::string, const lock_type*>{{"a", &a}, {"b", &b}, {"c", &c}});
}

TEST_CASE("lock_map<per_key>: keys with the same hash get separate records", "[lock_map]") {
    per_key_map map;
    lock_type& x = map.lock_for("x", 7);
    lock_type& y = map.lock_for("y", 7);
    CHECK(&x != &y);
    CHECK(map.size() == 2);
    CHECK(&map.lock_for("x", 7) == &x);
    CHECK(&map.lock_for("y", 7) == &y);
    REQUIRE(x.key != nullptr);
    REQUIRE(y.key != nullptr);
    CHECK(*x.key == "x");
    CHECK(*y.key == "y");

    REQUIRE(y.try_acquire(std::this_thread::get_id()));
    map.forget_if_unused(x);
    CHECK(map.size() == 1);
    CHECK(&map.lock_for("y", 7) == &y);  // the colliding record survives, still held
    CHECK(y.depth == 1);
    y.release();
    map.forget_if_unused(y);
    CHECK(map.size() == 0);
}

TEST_CASE("lock_map<per_key>: forget_if_unused erases only unused records", "[lock_map]") {
    const std::thread::id self = std::this_thread::get_id();
    per_key_map map;
    lock_type& held = map.lock_for("held", hash_of("held"));
    lock_type& awaited = map.lock_for("awaited", hash_of("awaited"));
    lock_type& idle = map.lock_for("idle", hash_of("idle"));
    REQUIRE(held.try_acquire(self));
    REQUIRE(awaited.try_acquire(self));
    awaited.release();
    awaited.waiters = 1;  // free, but a thread still waits on it
    REQUIRE(map.size() == 3);

    map.forget_if_unused(held);
    CHECK(map.size() == 3);
    CHECK(&map.lock_for("held", hash_of("held")) == &held);
    CHECK(held.owner == self);  // the record kept its state

    map.forget_if_unused(awaited);
    CHECK(map.size() == 3);
    CHECK(&map.lock_for("awaited", hash_of("awaited")) == &awaited);

    map.forget_if_unused(idle);
    CHECK(map.size() == 2);

    // A lock that is not in the map is ignored, even with a matching hash.
    lock_type stranger;
    stranger.hash = hash_of("held");
    map.forget_if_unused(stranger);
    CHECK(map.size() == 2);

    held.release();
    map.forget_if_unused(held);
    CHECK(map.size() == 1);

    awaited.waiters = 0;
    map.forget_if_unused(awaited);
    CHECK(map.size() == 0);

    // A forgotten key gets a fresh, free record.
    lock_type& again = map.lock_for("held", hash_of("held"));
    CHECK(map.size() == 1);
    CHECK(again.unused());
    CHECK(again.owner == std::thread::id{});
    REQUIRE(again.key != nullptr);
    CHECK(*again.key == "held");
}

TEST_CASE("lock_map<per_key>: size follows live records, not keys ever seen", "[lock_map]") {
    const std::thread::id self = std::this_thread::get_id();
    per_key_map map;
    std::size_t wrong_sizes = 0;
    for (int i = 0; i < 1000; ++i) {
        const std::string key = "k" + std::to_string(i);
        lock_type& lock = map.lock_for(key, hash_of(key));
        REQUIRE(lock.try_acquire(self));
        if (map.size() != 1) ++wrong_sizes;
        lock.release();
        map.forget_if_unused(lock);
        if (map.size() != 0) ++wrong_sizes;
    }
    CHECK(wrong_sizes == 0);
    std::vector<lock_type*> held;
    for (int i = 0; i < 100; ++i) {
        const std::string key = "k" + std::to_string(i);
        held.push_back(&map.lock_for(key, hash_of(key)));
        REQUIRE(held.back()->try_acquire(self));
    }
    CHECK(map.size() == 100);
    for (lock_type* lock : held) {
        lock->release();
        map.forget_if_unused(*lock);
    }
    CHECK(map.size() == 0);
}

TEST_CASE("lock_map<global>: one record shared by every key", "[lock_map]") {
    const thread_ids ids;
    global_map map;
    CHECK(map.size() == 0);
    lock_type& a = map.lock_for("a", hash_of("a"));
    lock_type& b = map.lock_for("b", hash_of("b"));
    CHECK(&a == &b);
    CHECK(a.key == nullptr);  // a global lock has no key
    CHECK(map.size() == 0);   // free and unawaited

    REQUIRE(a.try_acquire(ids.self));
    CHECK(map.size() == 1);
    REQUIRE(b.try_acquire(ids.self));  // re-entrant through another key
    CHECK(a.depth == 2);
    CHECK_FALSE(map.lock_for("c", hash_of("c")).try_acquire(ids.other));

    std::size_t visits = 0;
    map.for_each([&](const lock_type& lock) {
        ++visits;
        CHECK(&lock == &a);
    });
    CHECK(visits == 1);  // visible while held

    map.forget_if_unused(a);  // never erases
    CHECK(map.size() == 1);
    CHECK(&map.lock_for("z", hash_of("z")) == &a);

    a.release();
    a.release();
    CHECK(map.size() == 0);
    a.waiters = 1;
    CHECK(map.size() == 1);  // awaited counts too
    a.waiters = 0;
    map.forget_if_unused(a);
    CHECK(map.size() == 0);
    CHECK(&map.lock_for("a", hash_of("a")) == &a);

    visits = 0;
    map.for_each([&](const lock_type&) { ++visits; });
    CHECK(visits == 0);
}
