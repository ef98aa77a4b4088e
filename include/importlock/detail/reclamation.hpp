// SPDX-License-Identifier: BSL-1.0
// importlock/detail/reclamation.hpp: when memory that lock-free readers may
// still be reading can be freed (a grace period, as in userspace RCU).
//
// Purpose: a hit reads the registry's table and an entry without a lock.
// Erase, failed imports, clear() and a table that grows or shrinks unlink
// memory that a hit on another thread may have just found; it is freed only
// after every read section that could have found it has ended.
//
// Readers: each thread that reads gets a reader_record (one per thread, for
// every system: reads are about threads, and a record per system would cost
// every hit a lookup of its own). A read_section makes the record's counter
// odd for its duration: a load and a store to the thread's own cache line on
// entry, a store on exit, and, ordering the first store before the section's
// loads, a compiler barrier when the process has an asymmetric barrier
// (asymmetric_barrier.hpp), else a full fence. Sections nest (the inner one
// does nothing). No shared memory is written, no lock taken.
//
// Writers: synchronize() returns once every section that began before it
// has ended: a heavy barrier (skipped, for a full fence, when no other
// thread owns a record), then, for each other record that was odd, a wait
// until its counter changes. It waits only for sections, which never block
// on anything but an entry's guard (a few instructions), so it returns
// promptly; the caller must hold no lock a reader could wait for and must
// not be inside a section itself (its own record is skipped). `on_wait` runs
// between polls (a test scheduler's yield point).
//
// A thread whose record was already released (thread_local destructors that
// import after it) or whose record could not be allocated reads through the
// shared count `unrecorded_readers_` instead: one atomic increment and
// decrement per section, waited for by synchronize().
//
// Thread-safety: any thread. Cost: see above; a record is 64 bytes, never
// freed (reused by later threads), one per thread that ever read at once.
// State: one registry per process, created on first use and never destroyed
// (the only process-wide state importlock keeps besides the default
// wait_graph_domain).
#pragma once

#include <atomic>
#include <cstdint>
#include <new>
#include <thread>

#include "adaptive_lock.hpp"
#include "asymmetric_barrier.hpp"

namespace importlock::detail {

// One thread's read sections: `sections` is odd while one runs.
struct alignas(64) reader_record {
    std::atomic<std::uint64_t> sections{0};
    std::atomic<bool> owned{true};
    bool asymmetric = false;        // the process's barrier kind (immutable)
    reader_record* next = nullptr;  // the registry's list (immutable once linked)
};

class reader_registry {
public:
    // `asymmetric`: whether writers use the process-wide barrier (readers then
    // order with a compiler barrier only).
    explicit reader_registry(bool asymmetric) noexcept : asymmetric_(asymmetric) {}
    reader_registry(const reader_registry&) = delete;
    reader_registry& operator=(const reader_registry&) = delete;
    ~reader_registry() {
        for (reader_record* r = head_.load(std::memory_order_acquire); r != nullptr;) {
            reader_record* next = r->next;
            delete r;
            r = next;
        }
    }

    // The registry of every system (never destroyed).
    static reader_registry& process_wide() {
        static reader_registry* const registry =
            new reader_registry(asymmetric_barrier_available());
        return *registry;
    }

    bool asymmetric() const noexcept { return asymmetric_; }

    // Returns a record owned by the caller: a released one, else a new one;
    // null when the allocation fails. Ends with a full fence, which pairs with
    // synchronize()'s: a writer that did not see the record owned has unlinked
    // what it frees before this thread's first section reads.
    reader_record* acquire() noexcept {
        reader_record* r = head_.load(std::memory_order_acquire);
        for (; r != nullptr; r = r->next) {
            bool free = false;
            if (!r->owned.load(std::memory_order_relaxed) &&
                r->owned.compare_exchange_strong(free, true, std::memory_order_seq_cst)) {
                break;
            }
        }
        if (r == nullptr) {
            r = new (std::nothrow) reader_record;
            if (r == nullptr) return nullptr;
            r->asymmetric = asymmetric_;
            reader_record* head = head_.load(std::memory_order_relaxed);
            do {
                r->next = head;
            } while (!head_.compare_exchange_weak(head, r, std::memory_order_seq_cst,
                                                  std::memory_order_relaxed));
        }
        std::atomic_thread_fence(std::memory_order_seq_cst);
        return r;
    }

    // Returns `r` for another thread to own. Precondition: not in a section.
    void release(reader_record* r) noexcept { r->owned.store(false, std::memory_order_release); }

    // Waits until every read section that began before the call (on a thread
    // other than the one that owns `self`, which may be null) has ended.
    template <class OnWait>
    void synchronize(const reader_record* self, OnWait&& on_wait) const noexcept {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        reader_record* const head = head_.load(std::memory_order_acquire);
        bool others = unrecorded_readers_.load(std::memory_order_relaxed) != 0;
        for (reader_record* r = head; r != nullptr && !others; r = r->next) {
            others = r != self && r->owned.load(std::memory_order_relaxed);
        }
        if (!others) return;  // nobody else can be reading: the fence sufficed
        heavy_barrier(asymmetric_);
        for (reader_record* r = head; r != nullptr; r = r->next) {
            if (r == self) continue;
            const std::uint64_t seen = r->sections.load(std::memory_order_acquire);
            if ((seen & 1) == 0) continue;
            wait_while([&] { return r->sections.load(std::memory_order_acquire) == seen; },
                       on_wait);
        }
        wait_while([&] { return unrecorded_readers_.load(std::memory_order_acquire) != 0; },
                   on_wait);
    }

    // The readers that have no record (see the header comment).
    void enter_unrecorded() noexcept {
        unrecorded_readers_.fetch_add(1, std::memory_order_seq_cst);
    }
    void exit_unrecorded() noexcept { unrecorded_readers_.fetch_sub(1, std::memory_order_release); }

private:
    template <class Busy, class OnWait>
    static void wait_while(Busy&& busy, OnWait& on_wait) noexcept {
        for (int polls = 0; busy(); ++polls) {
            if (polls < spin_rounds) {
                cpu_pause();
            } else {
                on_wait();
                std::this_thread::yield();
            }
        }
    }

    std::atomic<reader_record*> head_{nullptr};
    std::atomic<long> unrecorded_readers_{0};
    const bool asymmetric_;
};

// This thread's record in the process-wide registry, or null before its first
// section (and after its release at thread exit).
inline thread_local reader_record* this_thread_reader = nullptr;

// Releases this thread's record at thread exit; later sections go unrecorded.
struct reader_record_owner {
    reader_record* record = nullptr;
    ~reader_record_owner() {
        if (record == nullptr) return;
        this_thread_reader = nullptr;
        reader_registry::process_wide().release(record);
    }
};
// Set once this thread's record has an owner: after the owner released it,
// the thread reads unrecorded rather than registering again.
inline thread_local bool this_thread_reader_armed = false;

// A read section in the process-wide registry (see the header comment).
class read_section {
public:
    read_section() noexcept {
        reader_record* r = this_thread_reader;
        if (r == nullptr) [[unlikely]] {
            enter_without_record();
            return;
        }
        const std::uint64_t s = r->sections.load(std::memory_order_relaxed);
        if ((s & 1) != 0) return;  // nested: the outer section covers this one
        r->sections.store(s + 1, std::memory_order_relaxed);
        light_barrier(r->asymmetric);
        record_ = r;
        entered_ = s + 1;
    }
    read_section(const read_section&) = delete;
    read_section& operator=(const read_section&) = delete;
    ~read_section() {
        if (record_ != nullptr) {
            record_->sections.store(entered_ + 1, std::memory_order_release);
        } else if (unrecorded_) [[unlikely]] {
            reader_registry::process_wide().exit_unrecorded();
        }
    }

private:
    // The thread's first section: registers it (and arranges the record's
    // release at thread exit), then enters; unrecorded when that fails.
    void enter_without_record() noexcept {
        reader_registry& registry = reader_registry::process_wide();
        if (!this_thread_reader_armed) {
            if (reader_record* r = registry.acquire()) {
                try {
                    thread_local reader_record_owner owner;
                    owner.record = r;
                    this_thread_reader_armed = true;  // the owner releases it
                    this_thread_reader = r;
                    const std::uint64_t s = r->sections.load(std::memory_order_relaxed);
                    r->sections.store(s + 1, std::memory_order_relaxed);
                    light_barrier(r->asymmetric);
                    record_ = r;
                    entered_ = s + 1;
                    return;
                } catch (...) {  // the thread_local's registration failed
                    registry.release(r);
                }
            }
        }
        registry.enter_unrecorded();
        unrecorded_ = true;
    }

    reader_record* record_ = nullptr;
    std::uint64_t entered_ = 0;
    bool unrecorded_ = false;
};

// f() in a read_section: the thread's first, a nested or an unrecorded
// section. Out of line, so that callers inline only the common case (and `f`
// by value, so that the common case keeps its captures in registers).
template <class F>
[[gnu::noinline, gnu::cold]] decltype(auto) in_read_section_slow(F f) {
    const read_section section;
    return f();
}

// Returns f() run inside a read section. The common case (the thread has a
// record and is not in a section yet) inline, with nothing on the exit path
// but the store: what a hit pays.
template <class F>
inline decltype(auto) in_read_section(F&& f) {
    if (reader_record* const r = this_thread_reader) [[likely]] {
        const std::uint64_t s = r->sections.load(std::memory_order_relaxed);
        if ((s & 1) == 0) [[likely]] {
            r->sections.store(s + 1, std::memory_order_relaxed);
            light_barrier(r->asymmetric);
            struct leave {
                reader_record* r;
                std::uint64_t s;
                ~leave() { r->sections.store(s + 2, std::memory_order_release); }
            } const left_on_return_or_throw{r, s};
            return f();
        }
    }
    return in_read_section_slow(f);
}

// Waits for every read section of other threads that began before the call.
template <class OnWait>
void synchronize_readers(OnWait&& on_wait) noexcept {
    reader_registry::process_wide().synchronize(this_thread_reader, on_wait);
}

}  // namespace importlock::detail
