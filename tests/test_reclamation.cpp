// SPDX-License-Identifier: BSL-1.0
// Unit tests of importlock::detail's grace periods (detail/reclamation.hpp) and its
// asymmetric barrier (detail/asymmetric_barrier.hpp), each component alone, in the style of
// abseil's graphcycles tests: the header contract's claims, one test each.
//
//   reader_registry    acquire reuses released records; synchronize returns at once with no
//                      other owned record, skips `self`, waits for an odd counter until it
//                      changes (to even, or to a later section's odd value), and for
//                      unrecorded readers
//   read_section       a thread's first section registers it; nested sections do nothing;
//                      the record is released at thread exit, and a thread_local destructor
//                      that reads afterwards reads unrecorded (and is waited for)
//   in_read_section    returns f()'s value; ends the section when f throws
//   synchronize_readers waits for another thread's read_section
//
// Concurrency tests force their interleaving: a latch says the waiter is inside its wait
// loop (its on_wait ran), the reader leaves only when the test says so, and a watchdog
// turns a hang into a failure. No sleep decides a result.
#include <importlock/detail/asymmetric_barrier.hpp>
#include <importlock/detail/reclamation.hpp>

#include "support/catch.hpp"
#include "support/watchdog.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <latch>
#include <semaphore>
#include <stdexcept>
#include <thread>
#include <vector>

namespace {

using importlock::detail::reader_record;
using importlock::detail::reader_registry;
using importlock_test::watchdog;

// The barrier kinds a local registry can be built with here.
std::vector<bool> barrier_kinds() {
    std::vector<bool> kinds{false};
    if (importlock::detail::asymmetric_barrier_available()) kinds.push_back(true);
    return kinds;
}

// Runs body(registry, waits, on_wait) once per barrier kind: `on_wait` counts its calls
// into `waits`.
template <class Body>
void for_each_barrier_kind(Body&& body) {
    for (const bool asymmetric : barrier_kinds()) {
        INFO("asymmetric " << asymmetric);
        reader_registry r(asymmetric);
        int waits = 0;
        body(r, waits, [&waits]() noexcept { ++waits; });
    }
}

// An on_wait that counts its calls and counts `first` down on the first one: once the
// latch is released, the waiter has been through spin_rounds polls and is in its loop.
struct counting_wait {
    std::atomic<int>* calls;
    std::latch* first;
    void operator()() const noexcept {
        if (calls->fetch_add(1) == 0) first->count_down();
    }
};

// A section entered and left by hand, as read_section does on a record it owns.
void enter_by_hand(reader_record& r) {
    const std::uint64_t s = r.sections.load(std::memory_order_relaxed);
    REQUIRE((s & 1) == 0);
    r.sections.store(s + 1, std::memory_order_relaxed);
    importlock::detail::light_barrier(r.asymmetric);
}

}  // namespace

TEST_CASE("asymmetric_barrier: availability is fixed; both barrier kinds can be run",
          "[reclamation]") {
    const bool available = importlock::detail::asymmetric_barrier_available();
    CHECK(importlock::detail::asymmetric_barrier_available() == available);  // cached
    importlock::detail::heavy_barrier(false);
    importlock::detail::light_barrier(false);
    if (available) {
        importlock::detail::heavy_barrier(true);
        importlock::detail::light_barrier(true);
    }
    CHECK(reader_registry::process_wide().asymmetric() == available);
    CHECK(&reader_registry::process_wide() == &reader_registry::process_wide());
}

// Calls r.synchronize(nullptr, on_wait) on its own thread and returns once that call
// waits (its on_wait ran), or returned without waiting (a bug: the checks then fail
// instead of hanging).
struct waiting_synchronizer {
    std::atomic<int> waits{0};
    std::latch waiting{1};
    std::atomic<bool> returned{false};
    std::thread thread;
    explicit waiting_synchronizer(reader_registry& r)
        : thread([this, &r] {
              r.synchronize(nullptr, counting_wait{&waits, &waiting});
              returned.store(true);
              if (waits.load() == 0) waiting.count_down();
          }) {
        waiting.wait();
    }
    void join() { thread.join(); }
};

TEST_CASE("reader_registry: acquire returns a record, reuses a released one", "[reclamation]") {
    for (const bool asymmetric : barrier_kinds()) {
        INFO("asymmetric " << asymmetric);
        reader_registry r(asymmetric);
        CHECK(r.asymmetric() == asymmetric);

        reader_record* a = r.acquire();
        REQUIRE(a != nullptr);
        CHECK(a->owned.load());
        CHECK(a->asymmetric == asymmetric);
        CHECK(a->sections.load() == 0);
        CHECK(reinterpret_cast<std::uintptr_t>(a) % 64 == 0);  // a cache line of its own

        r.release(a);
        CHECK_FALSE(a->owned.load());
        CHECK(r.acquire() == a);  // reused, owned again
        CHECK(a->owned.load());

        reader_record* b = r.acquire();  // a is owned: a second record
        REQUIRE(b != nullptr);
        CHECK(b != a);
        CHECK(b->owned.load());
        CHECK(b->asymmetric == asymmetric);

        // A released record keeps its counter (even) for the next owner.
        enter_by_hand(*b);
        b->sections.store(b->sections.load() + 1);
        const std::uint64_t b_sections = b->sections.load();
        r.release(b);
        r.release(a);
        reader_record* c = r.acquire();
        reader_record* d = r.acquire();
        CHECK(((c == a && d == b) || (c == b && d == a)));
        CHECK(b->sections.load() == b_sections);
        reader_record* e = r.acquire();  // both owned again: a third
        CHECK(e != a);
        CHECK(e != b);
        r.release(c);
        r.release(d);
        r.release(e);
    }  // the registry deletes its records
}

TEST_CASE("reader_registry: synchronize with no other owned record returns without waiting",
          "[reclamation]") {
    watchdog dog("synchronize without readers");
    for_each_barrier_kind([](reader_registry& r, const int& waits, const auto& on_wait) {
        r.synchronize(nullptr, on_wait);  // no record at all
        CHECK(waits == 0);

        reader_record* self = r.acquire();
        REQUIRE(self != nullptr);
        r.synchronize(self, on_wait);  // only the caller's own record
        CHECK(waits == 0);

        reader_record* released = r.acquire();
        REQUIRE(released != nullptr);
        r.release(released);
        r.synchronize(self, on_wait);  // a released record reads nothing
        r.synchronize(nullptr, on_wait);
        CHECK(waits == 0);

        reader_record* idle = r.acquire();  // reuses `released`
        REQUIRE(idle == released);
        r.synchronize(self, on_wait);  // owned by another thread, not in a section
        CHECK(waits == 0);
        r.release(idle);
        r.release(self);
    });
}

TEST_CASE("reader_registry: synchronize skips self even while self is in a section",
          "[reclamation]") {
    watchdog dog("synchronize skips self");
    for_each_barrier_kind([](reader_registry& r, const int& waits, const auto& on_wait) {
        reader_record* self = r.acquire();
        REQUIRE(self != nullptr);
        enter_by_hand(*self);
        r.synchronize(self, on_wait);  // the early return: no other record
        CHECK(waits == 0);

        reader_record* other = r.acquire();  // owned, not reading: past the early return
        REQUIRE(other != nullptr);
        r.synchronize(self, on_wait);  // the wait loop skips self's odd counter
        CHECK(waits == 0);
        CHECK((self->sections.load() & 1) == 1);
        self->sections.store(self->sections.load() + 1);
        r.release(other);
        r.release(self);
    });
}

TEST_CASE("reader_registry: synchronize waits for a section that began before it",
          "[reclamation][threads]") {
    watchdog dog("synchronize waits for an odd counter");
    for (const bool asymmetric : barrier_kinds()) {
        // later_section: A ends its section and begins another before synchronize looks
        // again, so the counter is odd again but a different value.
        for (const bool later_section : {false, true}) {
            INFO("asymmetric " << asymmetric << ", later section " << later_section);
            reader_registry r(asymmetric);
            reader_record* a_record = nullptr;
            std::uint64_t entered = 0;
            std::latch a_in_section(1);
            std::binary_semaphore a_may_leave(0);
            std::latch a_left(1);
            std::binary_semaphore a_may_exit(0);
            std::thread a([&] {
                a_record = r.acquire();
                if (a_record == nullptr) {
                    a_in_section.count_down();
                    return;
                }
                entered = a_record->sections.load() + 1;
                a_record->sections.store(entered, std::memory_order_relaxed);
                importlock::detail::light_barrier(a_record->asymmetric);
                a_in_section.count_down();
                a_may_leave.acquire();
                // Ends the section; with later_section, also begins the next one (one store).
                a_record->sections.store(entered + (later_section ? 2 : 1),
                                         std::memory_order_release);
                a_left.count_down();
                a_may_exit.acquire();
                if (later_section) a_record->sections.store(entered + 3);
                r.release(a_record);
            });
            a_in_section.wait();
            REQUIRE(a_record != nullptr);

            // b polls the odd counter spin_rounds times, then calls on_wait.
            waiting_synchronizer b(r);
            CHECK_FALSE(b.returned.load());
            CHECK(a_record->sections.load() == entered);  // nothing moved it: b must wait

            a_may_leave.release();
            b.join();
            CHECK(b.returned.load());
            CHECK(b.waits.load() >= 1);
            a_left.wait();
            // With later_section, b returned while A was still (again) in a section.
            CHECK(((a_record->sections.load() & 1) == 1) == later_section);
            a_may_exit.release();
            a.join();
        }
    }
}

TEST_CASE("reader_registry: an unrecorded reader holds synchronize until it exits",
          "[reclamation][threads]") {
    watchdog dog("synchronize waits for unrecorded readers");
    for (const bool asymmetric : barrier_kinds()) {
        INFO("asymmetric " << asymmetric);
        reader_registry r(asymmetric);
        r.enter_unrecorded();  // no record anywhere: the count alone makes b wait
        r.enter_unrecorded();  // two of them

        // b polls the odd counter spin_rounds times, then calls on_wait.
        waiting_synchronizer b(r);
        CHECK_FALSE(b.returned.load());
        r.exit_unrecorded();
        // One is still reading: b keeps waiting. Not observable without a sleep, so the
        // check is only that b has not returned yet while it cannot have.
        CHECK_FALSE(b.returned.load());
        r.exit_unrecorded();
        b.join();
        CHECK(b.returned.load());

        int later_waits = 0;
        r.synchronize(nullptr, [&]() noexcept { ++later_waits; });
        CHECK(later_waits == 0);  // the count is back to zero
    }
}

TEST_CASE("read_section: a thread's first section registers it; nested sections do nothing",
          "[reclamation][threads]") {
    watchdog dog("read_section registers");
    using importlock::detail::this_thread_reader;
    reader_record* record = nullptr;
    bool null_before = false;
    bool same_record_inside = false;
    std::uint64_t at_outer = 0;
    std::uint64_t at_inner = 0;
    std::uint64_t after_inner = 0;
    std::uint64_t after_outer = 0;
    bool same_record_after = false;
    std::thread t([&] {
        null_before = this_thread_reader == nullptr;
        {
            const importlock::detail::read_section outer;
            record = this_thread_reader;
            if (record == nullptr) return;
            at_outer = record->sections.load();
            {
                const importlock::detail::read_section inner;
                same_record_inside = this_thread_reader == record;
                at_inner = record->sections.load();
            }
            after_inner = record->sections.load();
        }
        after_outer = record->sections.load();
        same_record_after = this_thread_reader == record;
    });
    t.join();
    CHECK(null_before);
    REQUIRE(record != nullptr);
    CHECK((at_outer & 1) == 1);
    CHECK(same_record_inside);
    CHECK(at_inner == at_outer);     // the inner section changed nothing
    CHECK(after_inner == at_outer);  // and its end did not end the outer one
    CHECK(after_outer == at_outer + 1);
    CHECK((after_outer & 1) == 0);
    CHECK(same_record_after);  // kept for the thread's later sections
    CHECK(record->asymmetric == reader_registry::process_wide().asymmetric());
    // The thread exited: its record was released for another thread to own.
    CHECK_FALSE(record->owned.load());
}

TEST_CASE("in_read_section: returns f()'s value, ends the section when f throws",
          "[reclamation][threads]") {
    watchdog dog("in_read_section");
    using importlock::detail::in_read_section;
    using importlock::detail::this_thread_reader;
    struct observed {
        reader_record* record = nullptr;
        int first = 0;  // the thread's first section: in_read_section, slow path
        bool first_odd = false;
        int fast = 0;  // the common case: a record, not in a section
        bool fast_odd = false;
        int nested = 0;  // in_read_section inside in_read_section
        std::uint64_t nested_sections = 0;
        std::uint64_t outer_sections = 0;
        bool threw_fast = false;
        std::uint64_t after_fast_throw = 0;
        bool threw_nested = false;
        std::uint64_t after_nested_throw_inside = 0;  // still in the outer section
        std::uint64_t after_nested_throw = 0;
        int* ref = nullptr;  // decltype(auto): a reference comes back as one
    };
    int target = 0;
    observed o;
    std::thread t([&] {
        o.first = in_read_section([&] {
            o.record = this_thread_reader;
            o.first_odd = o.record != nullptr && (o.record->sections.load() & 1) == 1;
            return 1;
        });
        if (o.record == nullptr) return;
        o.fast = in_read_section([&] {
            o.fast_odd = (o.record->sections.load() & 1) == 1;
            return 2;
        });
        o.nested = in_read_section([&] {
            o.outer_sections = o.record->sections.load();
            return in_read_section([&] {
                o.nested_sections = o.record->sections.load();
                return 3;
            });
        });
        try {
            in_read_section([]() -> int { throw std::runtime_error("reader failed"); });
        } catch (const std::runtime_error&) {
            o.threw_fast = true;
        }
        o.after_fast_throw = o.record->sections.load();
        try {
            in_read_section([&]() -> int {
                try {
                    in_read_section([]() -> int { throw std::runtime_error("inner failed"); });
                } catch (const std::runtime_error&) {
                    o.after_nested_throw_inside = o.record->sections.load();
                    throw;
                }
                return 0;
            });
        } catch (const std::runtime_error&) {
            o.threw_nested = true;
        }
        o.after_nested_throw = o.record->sections.load();
        int& r = in_read_section([&]() -> int& { return target; });
        o.ref = &r;
    });
    t.join();
    REQUIRE(o.record != nullptr);
    CHECK(o.first == 1);
    CHECK(o.first_odd);
    CHECK(o.fast == 2);
    CHECK(o.fast_odd);
    CHECK(o.nested == 3);
    CHECK((o.outer_sections & 1) == 1);
    CHECK(o.nested_sections == o.outer_sections);
    CHECK(o.threw_fast);
    CHECK((o.after_fast_throw & 1) == 0);
    CHECK(o.threw_nested);
    CHECK((o.after_nested_throw_inside & 1) == 1);  // the inner throw left the outer open
    CHECK((o.after_nested_throw & 1) == 0);
    CHECK(o.after_nested_throw == o.after_fast_throw + 2);
    CHECK(o.ref == &target);
    CHECK_FALSE(o.record->owned.load());
}

TEST_CASE("read_section: an exited thread's record is released and reused",
          "[reclamation][threads]") {
    watchdog dog("records are reused");
    reader_record* record = nullptr;
    std::thread([&] {
        const importlock::detail::read_section section;
        record = importlock::detail::this_thread_reader;
    }).join();
    REQUIRE(record != nullptr);
    CHECK_FALSE(record->owned.load());
    CHECK((record->sections.load() & 1) == 0);

    // No other thread of this program reads now: acquire takes the released records (a
    // new one only once none is left), so `record` comes back before a new one.
    reader_registry& registry = reader_registry::process_wide();
    std::vector<reader_record*> taken;
    bool found = false;
    for (int i = 0; i < 10000 && !found; ++i) {
        reader_record* r = registry.acquire();
        REQUIRE(r != nullptr);
        taken.push_back(r);
        found = r == record;
    }
    CHECK(found);
    for (reader_record* r : taken) registry.release(r);

    // A later thread gets a released record too (maybe this one) and releases it again.
    reader_record* second = nullptr;
    std::thread([&] {
        const importlock::detail::read_section section;
        second = importlock::detail::this_thread_reader;
    }).join();
    REQUIRE(second != nullptr);
    CHECK_FALSE(second->owned.load());
}

namespace {

// A thread_local whose destructor runs `at_exit` (after the record owner's destructor
// when it was constructed before the thread's first section).
struct at_thread_exit {
    std::function<void()> at_exit;
    ~at_thread_exit() {
        if (at_exit) at_exit();
    }
};

}  // namespace

TEST_CASE("read_section: after the record's release at thread exit, sections go unrecorded",
          "[reclamation][threads]") {
    watchdog dog("unrecorded sections at thread exit");
    using importlock::detail::this_thread_reader;
    reader_record* record = nullptr;
    bool null_in_late_destructor = false;
    bool record_released_before = false;
    std::latch in_late_section(1);
    std::binary_semaphore may_leave(0);
    std::thread t([&] {
        thread_local at_thread_exit late;  // constructed first: destroyed after the owner
        late.at_exit = [&] {
            null_in_late_destructor = this_thread_reader == nullptr;
            record_released_before = record != nullptr && !record->owned.load();
            const importlock::detail::read_section section;  // unrecorded
            in_late_section.count_down();
            may_leave.acquire();
        };
        const importlock::detail::read_section first;  // registers: the owner is built now
        record = this_thread_reader;
    });
    in_late_section.wait();
    CHECK(null_in_late_destructor);
    CHECK(record_released_before);

    std::atomic<int> waits{0};
    std::latch waiting(1);
    std::atomic<bool> returned{false};
    std::thread w([&] {
        importlock::detail::synchronize_readers(counting_wait{&waits, &waiting});
        returned.store(true);
        if (waits.load() == 0) waiting.count_down();  // a bug: do not hang
    });
    waiting.wait();
    CHECK_FALSE(returned.load());  // the unrecorded section holds it
    may_leave.release();
    w.join();
    t.join();
    CHECK(returned.load());
}

TEST_CASE(
    "read_section: a thread whose first section runs in a thread_local destructor "
    "releases its record",
    "[reclamation][threads]") {
    watchdog dog("first section at thread exit");
    reader_record* record = nullptr;
    bool odd_inside = false;
    std::thread t([&] {
        thread_local at_thread_exit late;
        late.at_exit = [&] {
            const importlock::detail::read_section section;
            record = importlock::detail::this_thread_reader;
            odd_inside = record != nullptr && (record->sections.load() & 1) == 1;
        };
    });
    t.join();
    if (record == nullptr) {
        SUCCEED("the section went unrecorded");
    } else {
        CHECK(odd_inside);
        CHECK((record->sections.load() & 1) == 0);
        CHECK_FALSE(record->owned.load());  // else every later synchronize pays a barrier
    }
}

TEST_CASE("synchronize_readers: returns only after another thread's read_section ended",
          "[reclamation][threads]") {
    watchdog dog("synchronize_readers waits");
    for (const bool use_in_read_section : {false, true}) {
        INFO("in_read_section " << use_in_read_section);
        std::latch in_section(1);
        std::binary_semaphore may_leave(0);
        std::atomic<bool> reader_left{false};
        std::thread reader([&] {
            const auto body = [&] {
                in_section.count_down();
                may_leave.acquire();
                reader_left.store(true);
                return 0;
            };
            if (use_in_read_section) {
                // A first section (registers) and then the inline fast path.
                importlock::detail::in_read_section([] { return 0; });
                importlock::detail::in_read_section(body);
            } else {
                const importlock::detail::read_section section;
                body();
            }
        });
        in_section.wait();

        std::atomic<int> waits{0};
        std::latch waiting(1);
        std::atomic<bool> returned{false};
        bool left_when_returned = false;
        std::thread writer([&] {
            importlock::detail::synchronize_readers(counting_wait{&waits, &waiting});
            left_when_returned = reader_left.load();
            returned.store(true);
            if (waits.load() == 0) waiting.count_down();  // a bug: do not hang
        });
        waiting.wait();
        CHECK_FALSE(returned.load());
        may_leave.release();
        writer.join();
        reader.join();
        CHECK(returned.load());
        CHECK(left_when_returned);
        CHECK(waits.load() >= 1);
    }
}

TEST_CASE("synchronize_readers: the caller's own section is skipped, others' ended ones too",
          "[reclamation][threads]") {
    watchdog dog("synchronize_readers skips self");
    // A reader that has entered and left a section: its record is owned and even.
    std::latch done_reading(1);
    std::binary_semaphore may_exit(0);
    std::thread idle([&] {
        importlock::detail::in_read_section([] { return 0; });
        done_reading.count_down();
        may_exit.acquire();
    });
    done_reading.wait();
    int waits = 0;
    std::thread([&] {
        importlock::detail::in_read_section([&] {
            // Inside its own section (contract: a caller must not be; the record is
            // skipped, so it does not wait for itself).
            importlock::detail::synchronize_readers([&]() noexcept { ++waits; });
            return 0;
        });
    }).join();
    CHECK(waits == 0);
    may_exit.release();
    idle.join();
}

// Without an asymmetric barrier (not Linux, or the kernel refused it) a thread's record
// is not in the thread_local the inline fast path reads: every section goes out of line
// and adds a fence. This machine has the barrier, so the test clears that thread_local
// (as such a process would have it) and checks the out-of-line path's counting, nesting
// and a writer's wait for it.
TEST_CASE("read sections: a record that needs a fence is entered out of line, counted the same",
          "[reclamation][threads]") {
    watchdog dog("fenced sections");
    using namespace importlock::detail;
    std::latch inside(1);
    std::binary_semaphore may_leave(0);
    std::atomic<bool> left{false};
    bool counted = false, nested_unchanged = false, even_after = false;
    std::thread reader([&] {
        in_read_section([] { return 0; });  // registers this thread's record
        reader_record* const r = this_thread_reader;
        if (r == nullptr) {
            inside.count_down();
            return;
        }
        reader_record* const unfenced = this_thread_unfenced_reader;
        this_thread_unfenced_reader = nullptr;
        const std::uint64_t before = r->sections.load();
        {
            const read_section section;
            counted = r->sections.load() == before + 1;
            {
                const read_section nested;
                nested_unchanged = r->sections.load() == before + 1;
            }
            inside.count_down();
            may_leave.acquire();
            left.store(true);
        }
        even_after = r->sections.load() == before + 2;
        this_thread_unfenced_reader = unfenced;
    });
    inside.wait();
    std::atomic<int> waits{0};
    bool returned_after_section = false;
    std::thread writer([&] {
        synchronize_readers([&]() noexcept {
            if (waits.fetch_add(1) == 0) may_leave.release();  // it waits: let the reader go
        });
        returned_after_section = left.load();
    });
    writer.join();
    reader.join();
    CHECK(returned_after_section);  // synchronize returned only once the section had ended
    CHECK(counted);
    CHECK(nested_unchanged);
    CHECK(even_after);
    CHECK(waits.load() >= 1);
}
