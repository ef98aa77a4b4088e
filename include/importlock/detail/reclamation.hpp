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
// (asymmetric_barrier.hpp), else a full fence (out of line: the inline fast
// path reads one thread_local, the record when no fence is needed). Sections
// nest (the inner one does nothing). No shared memory is written, no lock taken.
//
// Writers: synchronize() returns once every section that began before it
// has ended: a heavy barrier (skipped, for a full fence, when no other
// thread owns a record), then, for each other record that was odd, a wait
// until its counter changes. It waits only for sections, which contain a
// probe, the key's equality (user code), an entry's guard (a few
// instructions) and at most the construction of an import_halted_error, so
// it returns promptly unless a key's equality blocks; the caller must hold
// no lock a reader could wait for and must not be inside a section itself
// (its own record is skipped). After spin_rounds polls, `on_wait` runs
// between polls (a test scheduler's yield point), with a yield of the CPU.
//
// A thread whose record was already released (thread_local destructors that
// import after it) or whose record could not be allocated reads through the
// shared count `unrecorded_readers_` instead: one atomic increment and
// decrement per section, waited for by synchronize().
//
// fork(): a child forked while another thread was inside a section inherits
// that thread's odd counter, and its first synchronize() would wait for it
// forever, as for a mutex held across fork(); fork while no other thread reads.
//
// Thread-safety: any thread. Cost: see above; a record is 64 bytes, never
// freed (reused by later threads), one per thread that ever read at once.
// State: one registry per process, created on first use and never destroyed
// (like the default wait_graph_domain).
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

    // Returns whether a thread other than the one that owns `self` (which may
    // be null) owns a record or reads unrecorded, i.e. whether synchronize()
    // would pay the heavy barrier now. A hint for deferring garbage
    // (registry.hpp): the answer may be stale as soon as it is returned.
    bool others_may_read(const reader_record* self) const noexcept {
        return others_own_records(self, head_.load(std::memory_order_acquire));
    }

    // Waits until every read section that began before the call (on a thread
    // other than the one that owns `self`, which may be null) has ended.
    template <class OnWait>
    void synchronize(const reader_record* self, OnWait&& on_wait) const noexcept {
        std::atomic_thread_fence(std::memory_order_seq_cst);
        reader_record* const head = head_.load(std::memory_order_acquire);
        if (!others_own_records(self, head)) return;  // nobody else reads: the fence sufficed
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
    // Acquire: what a thread read before releasing its record (or leaving an
    // unrecorded section) happens before a caller that saw it released frees it.
    bool others_own_records(const reader_record* self, reader_record* head) const noexcept {
        if (unrecorded_readers_.load(std::memory_order_acquire) != 0) return true;
        for (reader_record* r = head; r != nullptr; r = r->next) {
            if (r != self && r->owned.load(std::memory_order_acquire)) return true;
        }
        return false;
    }

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
// The same record when its sections need no fence (the process has an
// asymmetric barrier), else null: the one variable a section's fast path
// reads, so that it tests neither the barrier kind nor two pointers.
inline thread_local reader_record* this_thread_unfenced_reader = nullptr;

// Releases this thread's record at thread exit; later sections go unrecorded.
struct reader_record_owner {
    reader_record* record = nullptr;
    ~reader_record_owner() {
        if (record == nullptr) return;
        this_thread_reader = nullptr;
        this_thread_unfenced_reader = nullptr;
        reader_registry::process_wide().release(record);
    }
};
// Set once this thread's record has an owner: after the owner released it,
// the thread reads unrecorded rather than registering again.
inline thread_local bool this_thread_reader_armed = false;

// How a read section was entered: `record` and the odd counter value it set
// (ended by storing entered + 1); or, with a null record, nested in another
// section (entered == 0: nothing to end) or unrecorded (entered == 1).
struct section_entry {
    reader_record* record;
    std::uint64_t entered;
};

// Enters a section with the record `r`: an odd counter, then the barrier
// (`asymmetric`: a compiler barrier, the writer's heavy barrier orders it).
inline section_entry enter_recorded(reader_record* r, bool asymmetric) noexcept {
    const std::uint64_t s = r->sections.load(std::memory_order_relaxed);
    if ((s & 1) != 0) [[unlikely]]
        return {nullptr, 0};  // nested: the outer one covers it
    r->sections.store(s + 1, std::memory_order_relaxed);
    light_barrier(asymmetric);
    return {r, s + 1};
}

// The thread's first section (registers its record and arranges its release
// at thread exit), a section with a record that needs a fence (no asymmetric
// barrier), a section after the record's release, or one whose record could
// not be allocated (unrecorded). Out of line: hits inline only the common case.
[[gnu::noinline]] inline section_entry enter_section_slowly() noexcept {
    if (reader_record* r = this_thread_reader) return enter_recorded(r, r->asymmetric);
    reader_registry& registry = reader_registry::process_wide();
    if (!this_thread_reader_armed) {
        if (reader_record* r = registry.acquire()) {
            try {
                thread_local reader_record_owner owner;
                owner.record = r;
                this_thread_reader_armed = true;  // the owner releases it
                this_thread_reader = r;
                if (r->asymmetric) this_thread_unfenced_reader = r;
                return enter_recorded(r, r->asymmetric);
            } catch (...) {  // the thread_local's registration failed
                registry.release(r);
            }
        }
    }
    registry.enter_unrecorded();
    return {nullptr, 1};
}
[[gnu::noinline]] inline void exit_unrecorded_section() noexcept {
    reader_registry::process_wide().exit_unrecorded();
}

// Enters a read section of this thread (see the header comment).
inline section_entry enter_section() noexcept {
    reader_record* const r = this_thread_unfenced_reader;
    if (r == nullptr) [[unlikely]]
        return enter_section_slowly();
    return enter_recorded(r, true);
}

// Ends the section `entry` began.
inline void exit_section(section_entry entry) noexcept {
    if (entry.record != nullptr) [[likely]] {
        entry.record->sections.store(entry.entered + 1, std::memory_order_release);
    } else if (entry.entered != 0) {
        exit_unrecorded_section();
    }
}

// A read section in the process-wide registry, for its scope.
class read_section {
public:
    read_section() noexcept : entry_(enter_section()) {}
    read_section(const read_section&) = delete;
    read_section& operator=(const read_section&) = delete;
    ~read_section() { exit_section(entry_); }

private:
    section_entry entry_;
};

// Returns f() run inside a read section (ended however f leaves).
template <class F>
inline decltype(auto) in_read_section(F&& f) {
    const read_section section;
    return f();
}

// Waits for every read section of other threads that began before the call.
template <class OnWait>
void synchronize_readers(OnWait&& on_wait) noexcept {
    reader_registry::process_wide().synchronize(this_thread_reader, on_wait);
}

// Returns whether synchronize_readers() would pay the heavy barrier now (a
// hint: another thread owns a reader record or reads unrecorded).
inline bool other_readers_now() noexcept {
    return reader_registry::process_wide().others_may_read(this_thread_reader);
}

}  // namespace importlock::detail
