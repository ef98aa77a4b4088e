// SPDX-License-Identifier: BSL-1.0
// importlock/detail/lock_protocol.hpp: module locks, import stacks and the
// wait-for graph of one import system (DESIGN §1.2-§1.4; CPython's
// _ModuleLock and _ModuleLockManager).
//
// Purpose: lets a thread take a key's module lock, re-enter it, or learn that
// waiting would close a cycle; keeps each thread's stack of keys it is
// importing, for cycle chains, the depth limit and snapshots.
//
// Uncontended claims take no record. A key's entry has a claim word
// (registry_entry::claim_word): 0 when free; the address of the holder's
// frame while a thread holds the key's import and nobody else wants it; and
// the address of the key's record (below) with its low bit set while one is
// linked (the entry keeps no other pointer to it). A
// thread claims a free key by storing its frame's address (under the state
// mutex, like every claim) and releases it by one compare-and-swap back to 0,
// without the mutex: an uncontended cold import takes the state mutex once
// (claim_uncontended and the claim's destructor). A thread that finds the key
// held converts the claim, under the mutex: it links a record whose holder is
// the claimer (read from its frame, which the successful compare-and-swap
// keeps alive until the claimer's release takes the mutex) and sets the low
// bit by compare-and-swap;
// the holder's release then fails its compare-and-swap and releases the
// record under the mutex, waking the waiters. If the holder released first,
// the conversion's compare-and-swap fails and the converter takes the record
// itself. snapshot() pins an uncontended claim by setting the word's second
// bit for as long as it reads the holder's frame (visit_uncontended_claim),
// so that the holder's compare-and-swap fails and that frame stays alive.
// An erase that finds the key's module ready but its claim still held (the
// load's last steps) sets the third bit (mark_release_for_sweep): the
// holder's compare-and-swap fails, it releases under the mutex, and the
// system removes the entry then if nothing refers to it any more.
//
// A module lock record is not a mutex: holder, depth, waiters and a
// condition variable, linked from the key's entry while a key's import is
// contended (or taken through acquire()), and returned to a free list when
// nobody holds or awaits it (so lock_count() follows the imports in flight,
// and no record is allocated once the list holds as many as were ever in use
// at once). With lock_scope::global one record serves every key (CPython <
// 3.3) and every claim goes through it.
//
// Import stacks: each claim (a thread's hold on one key's import) is a frame
// on the claiming thread's native stack, linked to the same thread's frames
// of the same system (`outer`, `inner`), which may live in other protocols of
// that system (one per shard of its registry: import_state.hpp), and to the
// thread's frames of every system (thread_top_frame). The thread's own walk
// (re-entry chains) and the cycle walk, which reads only the frames of
// threads that wait, need no lock of another shard. A frame held through a
// record is also linked into the protocol's list of frames (for stacks and
// snapshots); an uncontended claim's frame is found through its entry. No
// per-thread container is created or destroyed.
//
// Thread-safety: every member needs the protocol's state mutex (passed in as
// `state`), except the uncontended release (one compare-and-swap, in
// ~claim), that a lock's holder is atomic, so that threads of other systems
// walking the wait_graph_domain read it safely, and that cycle chains read
// the frames of threads blocked in the domain (stable while the domain's
// mutex is held, which their wait registration happened before). Checking
// the graph for a cycle and registering as a waiter happen in one step under
// the domain's mutex, so exactly one thread of a cycle finds it. The domain
// is touched only when a thread has to wait.
//
// Cost: an uncontended claim is a few stores under the state mutex and its
// release one compare-and-swap and one counter increment (a release
// read-modify-write), with no allocation and no lock (unless an erase marked
// the claim: then the release takes the mutex); a contended acquire and release are O(1) under the
// mutex and allocate nothing once the free list is warm. A wait adds O(chain
// length) for the cycle walk under the domain's mutex. Reading a thread's
// stack (cycle chains, re-entry chains, snapshots, held_by) is O(f log f) in
// the f frames in flight.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "../errors.hpp"
#include "../key_traits.hpp"
#include "../locking/lock_policy.hpp"
#include "../locking/no_locks.hpp"
#include "../wait_graph_domain.hpp"
#include "algorithm.hpp"
#include "chrono.hpp"
#include "deadline.hpp"
#include "registry_entry.hpp"
#include "scope_exit.hpp"

namespace importlock::detail {

// The thread's nesting of imports over every system: bounds the native stack
// an import chain can use (§1.12; CPython's recursion limit is per thread).
inline std::size_t& thread_import_depth() noexcept {
    thread_local std::size_t depth = 0;
    return depth;
}

// What every import frame has, whatever its system: the system (the owner
// given to its lock_protocol) and the frame below it on the same thread.
struct frame_link {
    const void* owner = nullptr;
    frame_link* thread_outer = nullptr;
};

// The innermost import frame of this thread, over every system; only this
// thread reads or writes it.
inline frame_link*& thread_top_frame() noexcept {
    thread_local frame_link* top = nullptr;
    return top;
}

// Whether a policy's mutex does nothing, so that only one thread may import.
template <class Policy>
inline constexpr bool single_threaded = std::is_same_v<typename Policy::mutex_type, null_mutex>;

template <class Key, class Policy, class Entry>
class lock_protocol {
public:
    using mutex_type = typename Policy::mutex_type;
    using state_lock = std::unique_lock<mutex_type>;
    using condition_variable_type = typename Policy::condition_variable_type;
    static constexpr bool global = Policy::scope == lock_scope::global;

    struct frame;

    // One module lock: CPython's _ModuleLock.
    struct module_lock : wait_node {
        Entry* entry = nullptr;  // the key's entry; null for the global lock
        // The frame of the claim holding a key's lock (null between its
        // acquire and the claim, and for the global lock).
        const frame* claimed_by = nullptr;
        std::size_t depth = 0;  // re-entrant acquisitions by the holder
        std::size_t waiters = 0;
        condition_variable_type released;  // notified when depth drops to 0
        // Failures shared with the waiters (failure_mode::waiters_share_failure):
        // the count of failed imports under this record and the last one's
        // exception. Dropped with the record, when no waiter needs it.
        std::uint64_t failures = 0;
        std::exception_ptr failure;
        module_lock* prev = nullptr;  // the live list
        module_lock* next = nullptr;

        std::thread::id holder_id() const noexcept {
            return holder.load(std::memory_order_acquire);
        }
    };

    // How an acquire ended without the lock.
    struct acquisition {
        module_lock* lock = nullptr;     // non-null: held by this thread
        std::vector<std::string> cycle;  // non-empty: waiting would close it ("a -> b -> a")
        std::exception_ptr failure;      // non-null: the awaited import failed (shared)
    };

    // `owner` identifies the system: the protocols of one system's shards
    // share it (null: this protocol alone).
    explicit lock_protocol(wait_graph_domain& domain, const void* owner = nullptr) noexcept
        : domain_(domain), owner_(owner != nullptr ? owner : this) {
        global_lock_.describe = &describe_lock;
        global_lock_.kind = wait_kind::global_lock;
        global_lock_.owner = owner_;
    }
    lock_protocol(const lock_protocol&) = delete;
    lock_protocol& operator=(const lock_protocol&) = delete;
    ~lock_protocol() {
        while (live_ != nullptr) {
            module_lock* next = live_->next;
            delete live_;
            live_ = next;
        }
        while (free_ != nullptr) {
            module_lock* next = free_->next;
            delete free_;
            free_ = next;
        }
    }

    // Takes `e`'s module lock for this thread, waiting while another thread
    // holds it, unless waiting would close a cycle, `limit` runs out
    // (import_timeout_error / import_cancelled_error), or, with
    // `share_failures`, an import of the key fails while this thread waits.
    // `before_wait(holder)` runs once, with `state` unlocked, before the
    // first wait (the observer's on_wait). `state` is held on entry and exit.
    template <class BeforeWait>
    acquisition acquire(Entry& e, state_lock& state, const wait_limit& limit, bool share_failures,
                        BeforeWait&& before_wait) {
        module_lock& lock = lock_of(e);
        const auto self = std::this_thread::get_id();
        const std::uint64_t failures_before = lock.failures;
        bool notified_wait = false;
        for (;;) {
            if (try_take(lock, self)) return {&lock, {}, {}};
            if constexpr (single_threaded<Policy>) {
                forget_if_unused(lock);
                throw import_error(
                    name(e.key), "importlock::no_locks: a second thread imported '" + name(e.key) +
                                     "' while thread " +
                                     import_timeout_error::describe(lock.holder_id()) +
                                     " was importing " + held_by(lock.holder_id(), lock) +
                                     "; no_locks allows one importing thread: use "
                                     "per_key_locks");
            } else {
                std::vector<std::string> cycle;
                try {
                    std::lock_guard graph(domain_.mutex_);
                    const auto chain = domain_.graph_.find_cycle(self, &lock);
                    if (!chain.empty()) {
                        cycle = cycle_chain(self, chain);
                    } else {
                        if (limit.cancelled()) {
                            throw import_cancelled_error(name(e.key), lock.holder_id(),
                                                         held_by(lock.holder_id(), lock));
                        }
                        if (limit.deadline && std::chrono::steady_clock::now() >= *limit.deadline) {
                            throw import_timeout_error(name(e.key), lock.holder_id(),
                                                       held_by(lock.holder_id(), lock));
                        }
                        domain_.graph_.add_wait(self, &lock);
                    }
                } catch (...) {
                    forget_if_unused(lock);
                    throw;
                }
                if (!cycle.empty()) {
                    forget_if_unused(lock);
                    return {nullptr, std::move(cycle), {}};
                }
                try {
                    ++lock.waiters;
                    scope_exit unwait([&]() noexcept {
                        if (!state.owns_lock()) state.lock();
                        --lock.waiters;
                        std::lock_guard graph(domain_.mutex_);
                        domain_.graph_.remove_wait(self);
                    });
                    if (!notified_wait) {
                        notified_wait = true;
                        const std::thread::id holder = lock.holder_id();
                        state.unlock();
                        before_wait(holder);  // outside every internal lock
                        state.lock();
                        // While `state` was unlocked the holder may have released,
                        // a failure been shared or a stop been requested, and
                        // their wake-ups found nobody waiting: each is checked
                        // below with `state` held up to the wait, so none is lost.
                        // The wait stays in the graph meanwhile, so a thread that
                        // closes a cycle through this one in that window finds it
                        // (ending the round here would drop the edge for a while).
                        // A round that ends after a wake-up (a release taken by
                        // another waiter, a spurious one) still drops it until the
                        // next round registers again: a cycle closed in that
                        // moment is then found by this thread, not the closer.
                    }
                    // Every wake-up (release, shared failure, stop request) is
                    // made under `state`: checked here, none is missed.
                    if (lock.depth != 0 && lock.holder_id() != self &&
                        (!share_failures || lock.failures == failures_before) &&
                        !limit.cancelled()) {
                        wait(lock, state, limit);
                    }
                } catch (...) {
                    forget_if_unused(lock);
                    throw;
                }
            }
            if (share_failures && lock.failures != failures_before && lock.failure) {
                std::exception_ptr failure = lock.failure;
                forget_if_unused(lock);  // the last waiter out drops the exception
                return {nullptr, {}, std::move(failure)};
            }
        }
    }

    // Drops one acquisition of `lock`; wakes its waiters when it becomes free.
    void release(module_lock& lock) noexcept {
        if (--lock.depth == 0) {
            lock.holder.store(std::thread::id{}, std::memory_order_release);
            if (lock.waiters != 0) lock.released.notify_all();
        }
        forget_if_unused(lock);
    }

    // Hands `error` to the threads now waiting on `lock` (singleflight).
    static void share_failure(module_lock& lock, std::exception_ptr error) noexcept {
        if (lock.waiters == 0) return;
        ++lock.failures;
        lock.failure = std::move(error);
    }

    // One frame of a thread's import stack (see the header comment).
    struct frame : frame_link {
        Entry* entry = nullptr;
        std::thread::id thread{};
        std::size_t depth = 0;  // thread_import_depth() when the import began
        frame* prev = nullptr;  // this protocol's list
        frame* next = nullptr;
        frame* outer = nullptr;  // the thread's frame below, same system
        frame* inner = nullptr;  // the thread's frame above, same system
        bool listed = false;     // in this protocol's list (held through a record)
    };

    // Links `f` (for `e`, on this thread) into this thread's import stack,
    // and with `listed` into this protocol's list of frames: O(1) plus the
    // thread's frames of other systems above its last one of this system; no
    // allocation. Frames are pushed and popped in LIFO order.
    void push(frame& f, Entry& e, bool listed) noexcept {
        f.entry = &e;
        f.thread = std::this_thread::get_id();
        f.depth = thread_import_depth();
        f.owner = owner_;
        frame_link*& top = thread_top_frame();
        f.thread_outer = top;
        f.outer = innermost(top);
        f.inner = nullptr;
        if (f.outer != nullptr) f.outer->inner = &f;
        top = &f;
        if (listed) list(f);
    }

    // Unlinks `f`, the thread's innermost frame, from the thread's stack
    // (not from the protocol's list: unlist). O(1), no lock.
    void pop(frame& f) noexcept {
        thread_top_frame() = f.thread_outer;
        if (f.outer != nullptr) f.outer->inner = nullptr;
        f.outer = f.inner = nullptr;
    }

    // Links `f` into (unlist: out of) the protocol's list of frames. O(1).
    void list(frame& f) noexcept {
        f.listed = true;
        f.prev = nullptr;
        f.next = frames_;
        if (frames_ != nullptr) frames_->prev = &f;
        frames_ = &f;
    }
    void unlist(frame& f) noexcept {
        if (!f.listed) return;
        f.listed = false;
        if (f.prev != nullptr) f.prev->next = f.next;
        if (f.next != nullptr) f.next->prev = f.prev;
        if (frames_ == &f) frames_ = f.next;
        f.prev = f.next = nullptr;
    }

    // --- Uncontended claims (see the header comment) ----------------------------------

    // Returns whether this thread may claim `e` with claim_uncontended (a
    // claim's uncontended constructor): per-key locks, no record, nobody
    // holds it. The claim word is read with acquire: what the last holder
    // published before its release is visible.
    bool can_claim_uncontended(const Entry& e) const noexcept {
        if constexpr (global) {
            (void)e;
            return false;
        } else {
            return e.claim_word.load(std::memory_order_acquire) == 0;  // no record, no holder
        }
    }

    // Returns whether `e`'s import is held (claimed) by any thread. State
    // mutex held.
    bool claimed(const Entry& e) const noexcept {
        if constexpr (global) {
            // The claim's frame, stored and cleared under the mutex (claim).
            return e.claim_word.load(std::memory_order_relaxed) != 0;
        } else {
            const std::uintptr_t w = e.claim_word.load(std::memory_order_acquire);
            if ((w & contended_bit) == 0) return w != 0;  // a frame, pinned or not
            return record_in(w)->depth != 0;
        }
    }

    // Returns whether this thread holds `e`'s import (§1.3 re-entry). State
    // mutex held. O(1): a record says its holder; an uncontended claim's
    // frame does, read while the claim is pinned (its holder, if another
    // thread, may be releasing it meanwhile).
    bool claimed_by_this_thread(const Entry& e) const noexcept {
        const auto self = std::this_thread::get_id();
        const std::uintptr_t w = e.claim_word.load(std::memory_order_acquire);
        if (w == 0) return false;
        if constexpr (global) {
            return reinterpret_cast<const frame*>(w)->thread == self;  // mutex: it stays
        } else {
            if ((w & contended_bit) != 0) {
                const module_lock* lock = record_in(w);
                return lock->depth != 0 && lock->holder_id() == self;
            }
            bool mine = false;
            visit_uncontended_claim(e, [&](const frame& f) { mine = f.thread == self; });
            return mine;
        }
    }

    // Calls f(frame) with the frame of `e`'s uncontended claim, if it has
    // one, pinned meanwhile: its holder's release waits for the state mutex,
    // which the caller holds (every shard's, for snapshots).
    template <class F>
    void visit_uncontended_claim(const Entry& e, F&& f) const {
        if constexpr (!global) {
            std::uintptr_t w = e.claim_word.load(std::memory_order_acquire);
            if (w == 0 || (w & (contended_bit | pinned_bit)) != 0) return;
            if (!e.claim_word.compare_exchange_strong(w, w | pinned_bit,
                                                      std::memory_order_acquire)) {
                return;  // released meanwhile
            }
            scope_exit unpin([&]() noexcept { e.claim_word.store(w, std::memory_order_release); });
            f(*reinterpret_cast<const frame*>(w & ~tag_bits));
        }
    }

    // Returns the entries `thread` imports in this system, outermost first.
    // (Sorted as (depth, position) pairs: that std::vector type and its sort are
    // compiled for dependency_recorder anyway, a vector of frames would be one
    // type more in every unit that uses a system; benchmarks/README.md.)
    std::vector<Entry*> stack_of(std::thread::id thread) const {
        std::vector<Entry*> found;
        std::vector<std::pair<std::size_t, std::size_t>> order;
        for (const frame* f = frames_; f != nullptr; f = f->next) {
            if (f->thread != thread) continue;
            order.push_back({f->depth, found.size()});
            found.push_back(f->entry);
        }
        detail::sort(order.begin(), order.end(), pair_less{});
        std::vector<Entry*> stack;
        stack.reserve(order.size());
        for (const auto& [depth, i] : order) stack.push_back(found[i]);
        return stack;
    }

    // Returns the keys this thread imports from `e` (outermost) to its
    // innermost import, then `e` again: a same-thread cycle "a -> b -> a".
    // Walks this thread's own frames of the system, also those of other shards:
    // once to find how many frames, innermost first, reach `e`'s outermost one,
    // once to name them.
    std::vector<std::string> reentry_chain(const Entry& e) const {
        std::size_t count = 0;  // frames from the innermost to e's outermost
        std::size_t walked = 0;
        for (const frame* f = innermost(thread_top_frame()); f != nullptr; f = f->outer) {
            ++walked;
            if (f->entry == &e) count = walked;
        }
        std::vector<std::string> chain;
        chain.reserve(count + 2);
        for (const frame* f = innermost(thread_top_frame()); chain.size() < count; f = f->outer) {
            chain.push_back(name(f->entry->key));
        }
        for (std::size_t i = 0, j = chain.size(); i + 1 < j; ++i, --j) {  // outermost first
            std::swap(chain[i], chain[j - 1]);
        }
        if (chain.empty()) chain.push_back(name(e.key));
        chain.push_back(name(e.key));
        return chain;
    }

    // Returns the live module locks. With lock_scope::per_key it reads one
    // atomic and needs no lock; with lock_scope::global the state mutex.
    std::size_t lock_count() const noexcept {
        if constexpr (global) {
            return global_lock_.depth != 0 || global_lock_.waiters != 0 ? 1 : 0;
        } else {
            // Releases first: each was preceded by its claim.
            const std::size_t released = uncontended_released_.load(std::memory_order_acquire);
            const std::size_t claims = uncontended_claims_.load(std::memory_order_acquire);
            return live_count_.load(std::memory_order_relaxed) + claims -
                   (released < claims ? released : claims);
        }
    }

    // Makes the release of `e`'s uncontended claim take the state mutex (its
    // compare-and-swap then fails), so that the releasing thread can remove
    // an entry that holds nothing else: an erase during the end of the key's
    // load (the module is ready, its loader still holds the claim). Returns
    // whether a claim is still held (a record's release takes the mutex
    // anyway); false when there is none or it was released meanwhile. State
    // mutex held (so no snapshot pins the claim meanwhile).
    bool mark_release_for_sweep(Entry& e) noexcept {
        if constexpr (global) {
            return claimed(e);  // released under the mutex
        } else {
            std::uintptr_t w = e.claim_word.load(std::memory_order_acquire);
            while (w != 0 && (w & (contended_bit | sweep_bit)) == 0) {
                if (e.claim_word.compare_exchange_weak(w, w | sweep_bit, std::memory_order_acq_rel,
                                                       std::memory_order_acquire)) {
                    return true;
                }
            }
            return w != 0;
        }
    }

    // Returns `e`'s record (linked from its claim word), or null. State mutex
    // held, or any time for a caller that only compares the address.
    static module_lock* record_of(const Entry& e) noexcept {
        const std::uintptr_t w = e.claim_word.load(std::memory_order_acquire);
        return (w & contended_bit) != 0 ? record_in(w) : nullptr;
    }

    // Returns the number of threads waiting on `e`'s lock (any key's, for
    // the global lock).
    std::size_t waiters_of(const Entry* e) const noexcept {
        if constexpr (global) {
            (void)e;
            return global_lock_.waiters;
        } else {
            const module_lock* lock = e != nullptr ? record_of(*e) : nullptr;
            return lock != nullptr ? lock->waiters : 0;
        }
    }

    // Calls f(lock) for every live lock.
    template <class F>
    void for_each_lock(F&& f) const {
        if (global_lock_.depth != 0 || global_lock_.waiters != 0) f(global_lock_);
        for (const module_lock* l = live_; l != nullptr; l = l->next) f(*l);
    }
    // Wakes every waiter, e.g. to let it see a stop request.
    void notify_all_waiters() noexcept {
        global_lock_.released.notify_all();
        for (module_lock* l = live_; l != nullptr; l = l->next) l->released.notify_all();
    }

    // Calls f(thread, entries) for every thread's import stack (outermost first).
    template <class F>
    void for_each_stack(F&& f) const {
        std::vector<std::thread::id> threads;
        for (const frame* fr = frames_; fr != nullptr; fr = fr->next) {
            if (detail::find_if(threads.begin(), threads.end(), [&](std::thread::id t) {
                    return t == fr->thread;
                }) == threads.end()) {
                threads.push_back(fr->thread);
            }
        }
        for (std::thread::id thread : threads) f(thread, stack_of(thread));
    }

    // Calls f(thread, lock) for every thread of the domain waiting on a lock
    // of this protocol. Takes the domain's mutex.
    template <class F>
    void for_each_waiter(F&& f) const {
        for_each_domain_wait([&](std::thread::id thread, const wait_node& node) {
            for_each_lock([&](const module_lock& l) {
                if (&node == &l) f(thread, l);
            });
        });
    }

    // Calls f(frame) for every frame of this protocol, in no order.
    template <class F>
    void for_each_frame(F&& f) const {
        for (const frame* fr = frames_; fr != nullptr; fr = fr->next) f(*fr);
    }

    // Calls f(thread, node) for every wait of the domain: on any system's
    // module locks, tracked mutexes and thread ends. Takes the domain's mutex.
    template <class F>
    void for_each_domain_wait(F&& f) const {
        std::lock_guard graph(domain_.mutex_);
        domain_.graph_.for_each(
            [&](std::thread::id thread, const wait_node* node) { f(thread, *node); });
    }

    // Names what `lock` guards: "'db'", or the global lock.
    static std::string describe(const module_lock& lock) { return describe_lock(lock); }

    // Returns the key `holder` imports at the top of its stack, quoted, when
    // it holds the global lock ("'slow'"); else `lock`'s key.
    std::string held_by(std::thread::id holder, const module_lock& lock) const {
        if (lock.entry != nullptr) return "it";
        const std::vector<Entry*> stack = stack_of(holder);
        if (stack.empty()) return "under the global import lock";
        return "'" + name(stack.back()->key) + "' under the global import lock";
    }

    static std::string name(const Key& key) { return key_traits<Key>::to_string(key); }

    // Selects the claim constructor that takes a free key without a record.
    struct uncontended_t {
        explicit uncontended_t() = default;
    };
    static constexpr uncontended_t uncontended{};

    // This thread's hold on a key's import, to the end of the load: the lock
    // (a record from acquire(), or the entry's claim word), the import-stack
    // frame, the thread's depth count (and, under the global lock, the entry's
    // claim word, naming the claim's frame). All are
    // given back on destruction, also when the load throws: a record's under
    // `state` (relocked if needed), an uncontended claim's by one
    // compare-and-swap, without the mutex unless another thread converted it
    // meanwhile.
    class claim {
    public:
        // Holds `lock`, which acquire() returned. `state` held.
        claim(lock_protocol& protocol, Entry& e, module_lock& lock, state_lock& state) noexcept
            : protocol_(protocol), entry_(e), lock_(&lock), state_(state) {
            protocol_.push(frame_, e, true);
            if (lock.entry != nullptr) lock.claimed_by = &frame_;
            if constexpr (global) {
                // The global lock is not the key's: the entry names its claim.
                e.claim_word.store(reinterpret_cast<std::uintptr_t>(&frame_),
                                   std::memory_order_relaxed);
            }
            ++thread_import_depth();
        }
        // Claims the free `e` without a record. `state` held; precondition:
        // protocol.can_claim_uncontended(e).
        claim(lock_protocol& protocol, Entry& e, state_lock& state, uncontended_t) noexcept
            : protocol_(protocol), entry_(e), lock_(nullptr), state_(state) {
            protocol_.push(frame_, e, false);
            protocol_.count_uncontended_claim();
            e.claim_word.store(reinterpret_cast<std::uintptr_t>(&frame_),
                               std::memory_order_release);
            ++thread_import_depth();
        }
        claim(const claim&) = delete;
        claim& operator=(const claim&) = delete;
        ~claim() {
            --thread_import_depth();
            protocol_.pop(frame_);
            if (lock_ == nullptr) {
                if (!state_.owns_lock()) yield_point<Policy>();  // the release races a conversion
                std::uintptr_t mine = reinterpret_cast<std::uintptr_t>(&frame_);
                // acq_rel: a snapshot that pinned and unpinned the claim read this
                // frame; acquiring its unpin orders those reads before the frame's
                // memory is reused (release: the load's publication before).
                if (entry_.claim_word.compare_exchange_strong(mine, 0, std::memory_order_acq_rel,
                                                              std::memory_order_relaxed)) {
                    protocol_.count_uncontended_release();
                    return;
                }
            }
            if (!state_.owns_lock()) state_.lock();
            if (lock_ == nullptr) {
                protocol_.release_converted(entry_, frame_);
                return;
            }
            if constexpr (global) {
                if (entry_.claim_word.load(std::memory_order_relaxed) ==
                    reinterpret_cast<std::uintptr_t>(&frame_)) {
                    entry_.claim_word.store(0, std::memory_order_relaxed);
                }
            }
            if (lock_->claimed_by == &frame_) lock_->claimed_by = nullptr;
            protocol_.unlist(frame_);
            protocol_.release(*lock_);
        }

        // Returns whether the claim holds a record (acquire()'s), not the
        // claim word.
        bool has_record() const noexcept { return lock_ != nullptr; }
        // Returns the record held. Precondition: has_record().
        module_lock& lock() const noexcept { return *lock_; }
        // Returns the system's state lock this claim relocks on destruction.
        state_lock& state() const noexcept { return state_; }

        // Hands `error` to the threads now waiting for the key (singleflight).
        // An uncontended claim that nobody converted has no waiter: nothing
        // to do and no lock taken. Leaves `state` locked otherwise.
        void share_failure(std::exception_ptr error) {
            module_lock* lock = lock_;
            if (lock == nullptr) {
                if ((entry_.claim_word.load(std::memory_order_acquire) & contended_bit) == 0) {
                    return;
                }
                if (!state_.owns_lock()) state_.lock();
                lock = record_of(entry_);
                if (lock == nullptr) return;
            } else if (!state_.owns_lock()) {
                state_.lock();
            }
            protocol_.share_failure(*lock, std::move(error));
        }

    private:
        lock_protocol& protocol_;
        Entry& entry_;
        module_lock* lock_;  // null: an uncontended claim (the entry's claim word)
        state_lock& state_;
        frame frame_;
    };

private:
    // Returns the innermost frame of this system at or below `link`, or null.
    frame* innermost(frame_link* link) const noexcept {
        while (link != nullptr && link->owner != owner_) link = link->thread_outer;
        return static_cast<frame*>(link);
    }

    static std::string describe_lock(const wait_node& node) {
        const auto& lock = static_cast<const module_lock&>(node);
        return lock.entry != nullptr ? name(lock.entry->key) : std::string("<global import lock>");
    }

    // Returns `e`'s lock record, creating it if needed (strong guarantee).
    module_lock& lock_of(Entry& e) {
        if constexpr (global) {
            (void)e;
            return global_lock_;
        } else {
            if (module_lock* linked = record_of(e)) return *linked;
            module_lock* lock = free_;
            if (lock != nullptr) {
                free_ = lock->next;
            } else {
                lock = new module_lock;
            }
            lock->entry = &e;
            lock->describe = &describe_lock;
            lock->owner = owner_;
            lock->next = live_;
            if (live_ != nullptr) live_->prev = lock;
            live_ = lock;
            live_count_.store(live_count_.load(std::memory_order_relaxed) + 1,
                              std::memory_order_relaxed);
            convert(e, *lock);
            return *lock;
        }
    }

    static bool try_take(module_lock& lock, std::thread::id self) noexcept {
        if (lock.depth != 0 && lock.holder_id() != self) return false;
        lock.holder.store(self, std::memory_order_release);
        ++lock.depth;
        return true;
    }

    void wait(module_lock& lock, state_lock& state, const wait_limit& limit) {
        if constexpr (requires { lock.released.wait_until(state, *limit.deadline); }) {
            if (limit.deadline) {
                lock.released.wait_until(state, *limit.deadline);
                return;
            }
        }
        lock.released.wait(state);
    }

    void forget_if_unused(module_lock& lock) noexcept {
        if (lock.depth != 0 || lock.waiters != 0) return;
        lock.failure = nullptr;
        if constexpr (!global) {
            lock.entry->claim_word.store(0, std::memory_order_release);  // unlinks the record
            unlink_and_delete(lock);
        }
    }

    // Links `lock` (new) from the claim word of `e`: an uncontended claim
    // becomes the record's, held by its claimer through its frame (if the
    // claimer released meanwhile, the record starts free). State mutex held,
    // so no snapshot pins the claim meanwhile.
    void convert(Entry& e, module_lock& lock) noexcept {
        const std::uintptr_t linked = reinterpret_cast<std::uintptr_t>(&lock) | contended_bit;
        std::uintptr_t w = e.claim_word.load(std::memory_order_acquire);
        if (w != 0 && e.claim_word.compare_exchange_strong(w, linked, std::memory_order_acq_rel,
                                                           std::memory_order_acquire)) {
            // The claimer's frame: alive, since its release now fails its
            // compare-and-swap and waits for the mutex this thread holds.
            auto* f = reinterpret_cast<frame*>(w & ~tag_bits);  // a sweep mark is dropped
            lock.holder.store(f->thread, std::memory_order_release);
            lock.depth = 1;
            lock.claimed_by = f;
            list(*f);
            count_uncontended_release();  // now counted as the record
            return;
        }
        // Free (w == 0, or the claimer released it before the exchange).
        e.claim_word.store(linked, std::memory_order_release);
    }

    // Releases, under the state mutex, the uncontended claim `f` of `e` whose
    // compare-and-swap failed: a record took it over (convert), a snapshot
    // pinned it and has unpinned it since, or mark_release_for_sweep marked it.
    void release_converted(Entry& e, frame& f) noexcept {
        const std::uintptr_t w = e.claim_word.load(std::memory_order_acquire);
        if ((w & contended_bit) == 0) {  // pinned and unpinned: still ours
            e.claim_word.store(0, std::memory_order_release);
            count_uncontended_release();
            return;
        }
        module_lock& lock = *record_in(w);
        if (lock.claimed_by == &f) lock.claimed_by = nullptr;
        unlist(f);
        release(lock);
    }

    void count_uncontended_claim() noexcept {
        uncontended_claims_.store(uncontended_claims_.load(std::memory_order_relaxed) + 1,
                                  std::memory_order_release);
    }
    void count_uncontended_release() noexcept {
        uncontended_released_.fetch_add(1, std::memory_order_release);
    }

    // Unlinks an unused record and keeps it for the next lock_of.
    void unlink_and_delete(module_lock& lock) noexcept {
        if (lock.prev != nullptr) lock.prev->next = lock.next;
        if (lock.next != nullptr) lock.next->prev = lock.prev;
        if (live_ == &lock) live_ = lock.next;
        live_count_.store(live_count_.load(std::memory_order_relaxed) - 1,
                          std::memory_order_relaxed);
        lock.entry = nullptr;
        lock.failures = 0;
        lock.prev = nullptr;
        lock.next = free_;
        free_ = &lock;
    }

    // Returns the imports of a cross-thread cycle, "a -> c -> b -> d -> a":
    // from the lock this thread holds, each lock's key followed by the keys
    // its holder imported on top of it in this system (a lock of another
    // system contributes its key only). `locks` runs from the lock wanted to
    // the one this thread holds; every holder but this thread waits, so its
    // frames stay as they are. Domain mutex held.
    std::vector<std::string> cycle_chain(std::thread::id self,
                                         const std::vector<const wait_node*>& locks) const {
        std::vector<std::string> chain;
        // A lock's key, then the keys its holder imported on top of it; for
        // this system's global lock (one protocol per system), every key its
        // holder is importing.
        const auto append = [&](std::thread::id thread, const wait_node* node) {
            if (node == &global_lock_) {
                const std::vector<Entry*> stack = stack_of(thread);
                if (!stack.empty()) {
                    for (const Entry* e : stack) chain.push_back(name(e->key));
                    return;
                }
            }
            chain.push_back(node->describe(*node));
            if (node->owner != owner_ || node->kind != wait_kind::module_lock) return;
            const frame* f = static_cast<const module_lock*>(node)->claimed_by;
            for (f = f != nullptr ? f->inner : nullptr; f != nullptr; f = f->inner) {
                chain.push_back(name(f->entry->key));
            }
        };
        append(self, locks.back());
        for (std::size_t i = 0; i + 1 < locks.size(); ++i) {
            append(locks[i]->holder.load(std::memory_order_acquire), locks[i]);
        }
        chain.push_back(chain.front());
        return chain;
    }

    wait_graph_domain& domain_;
    const void* owner_;                       // the system (shared by its shards' protocols)
    module_lock global_lock_;                 // lock_scope::global only
    module_lock* live_ = nullptr;             // per-key records held or awaited
    module_lock* free_ = nullptr;             // unused records, linked by `next`
    std::atomic<std::size_t> live_count_{0};  // written under the state mutex
    frame* frames_ = nullptr;                 // the frames held through records, in no order
    // Uncontended claims made (under the state mutex) and released (without
    // it, or converted to records): their difference is in lock_count().
    std::atomic<std::size_t> uncontended_claims_{0};
    std::atomic<std::size_t> uncontended_released_{0};
    // The claim word's tag bits (see the header comment): a record is linked
    // (the rest is its address), or a snapshot pins an uncontended claim (the
    // rest is the holder's frame). Records and frames are 4-aligned at least.
    static constexpr std::uintptr_t contended_bit = 1;
    static constexpr std::uintptr_t pinned_bit = 2;
    // The holder's release must take the state mutex, so that the entry,
    // erased during the end of its load, is removed then (mark_release_for_sweep).
    static constexpr std::uintptr_t sweep_bit = 4;
    static constexpr std::uintptr_t tag_bits = contended_bit | pinned_bit | sweep_bit;
    static_assert(alignof(module_lock) > tag_bits && alignof(frame) > tag_bits);

    // The record a claim word with contended_bit links.
    static module_lock* record_in(std::uintptr_t w) noexcept {
        return reinterpret_cast<module_lock*>(w & ~tag_bits);
    }
};

}  // namespace importlock::detail
