// SPDX-License-Identifier: BSL-1.0
// importlock/detail/registry.hpp: the registry (CPython's sys.modules) with
// lock-free reads.
//
// An open-addressing table of atomic pointers to entries (registry_entry.hpp),
// one allocation per entry, linked in insertion order. An entry that no
// longer holds anything (erased, failed, cleared: see the owner's
// reclaimable check) is removed: its slot becomes a tombstone that lookups
// probe past, and the entry goes to the registry's garbage. A table that
// fills up with entries and tombstones is rebuilt (twice as large when the
// entries need it, else the same size), and one that falls below an eighth
// full is rebuilt smaller; the old table goes to the garbage too. Garbage is
// freed once no lock-free reader can still hold it: the owner moves it
// (take_garbage) under its writer lock into a garbage object that, destroyed
// after the lock is released, waits for a grace period (reclamation.hpp) and
// frees it. Memory therefore follows the live entries: after any sequence of
// operations, once the garbage was freed, the registry holds its entries and
// one table of at most max(16, 8 x entries) slots, and nothing else. Tables
// that growth replaced while another thread reads may wait for the next
// grace period, up to deferred_table_bytes (32 KiB): the barrier a grace
// period costs then would dwarf the growth of a small table (take_due_garbage).
//
// Thread-safety: find() may run on any thread at any time, concurrently with
// everything, inside a read_section (or under the writer lock); it takes no
// lock and writes nothing. Every other member, and every write to an entry,
// needs the owner's writer lock (the state mutex of the system's shard that
// holds this registry); a garbage object must be destroyed without it.
// Cost: find O(1) expected, with the stored hash compared before the key
// (scalar keys under std::equal_to: the key alone; under std::hash too, the
// entry keeps no hash and removal and growth recompute it: stores_hash);
// insert O(1) amortised plus one allocation; remove O(1) amortised;
// remove_if O(entries), with at most one rebuild; freeing garbage one grace
// period (no wait when no other thread reads).
// Layout: the word every find reads first (head_) has a cache line of its
// own, so that inserts on one thread do not make finds on others miss it.
// An entry starts its block, its links follow it, so that the fields a hit
// reads first share a cache line (registry_entry.hpp).
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "algorithm.hpp"
#include "reclamation.hpp"
#include "registry_entry.hpp"

namespace importlock::detail {

// Fibonacci hashing: the hash times 2^64 / phi. Its top bits spread even
// identity hashes (std::hash<int>) evenly, consecutive keys perfectly.
constexpr std::uint64_t fibonacci_product(std::size_t hash) noexcept {
    return static_cast<std::uint64_t>(hash) * 0x9E3779B97F4A7C15ull;
}

// `SkipBits`: the low bits of the hash that the owner already used to choose
// this registry among 2^SkipBits (the system's shards); the table is indexed
// by the Fibonacci product of the hash without them, so that the keys of
// one shard spread as evenly over its table as all keys over one table
// (consecutive integers perfectly).
template <class Entry, class Hash, class KeyEqual, unsigned SkipBits = 0>
class registry {
    struct node;
    struct table;

public:
    using entry_type = Entry;
    using key_type = std::remove_const_t<decltype(Entry::key)>;

    // What remove() and rebuilt tables left behind: freed when destroyed,
    // after a grace period (reclamation.hpp), so it must be destroyed
    // without the writer lock (declare it before the lock). Owns what it holds.
    class garbage {
    public:
        garbage() = default;
        garbage(const garbage&) = delete;
        garbage& operator=(const garbage&) = delete;
        // Waits until no read section that could have found this garbage runs
        // (calling the on_wait given to take_garbage between polls), then frees it.
        ~garbage() {
            if (!empty()) [[unlikely]]
                release();
        }

        bool empty() const noexcept { return nodes_ == nullptr && tables_ == nullptr; }

    private:
        friend class registry;
        // Out of line: most garbage objects of a cold import stay empty.
        [[gnu::noinline]] void release() noexcept {
            if (concurrent_readers_) synchronize_readers(on_wait_);
            free();
        }
        void free() noexcept {
            for (node* n = std::exchange(nodes_, nullptr); n != nullptr;) {
                node* next = n->next;
                destroy_node(n);
                n = next;
            }
            delete std::exchange(tables_, nullptr);  // each owns the next (previous)
        }
        node* nodes_ = nullptr;    // linked through node::next
        table* tables_ = nullptr;  // linked through table::previous
        void (*on_wait_)() noexcept = []() noexcept {};
        bool concurrent_readers_ = true;
    };

    registry() : table_(new table(initial_capacity)) {
        head_.store(table_->head(), std::memory_order_release);
    }

    registry(const registry&) = delete;
    registry& operator=(const registry&) = delete;
    ~registry() {
        for (node* n = first_; n != nullptr;) {
            node* next = n->next;
            destroy_node(n);
            n = next;
        }
        delete table_;
        garbage_.free();  // no reader outlives the registry: no grace period
    }

    // Returns the entry of `key` (hash `hash`), or null. Lock-free, wait-free
    // for a table without long probe runs; inside a read_section (or with the
    // writer lock). One load gives the current table's slots and its shift.
    entry_type* find(const key_type& key, std::size_t hash) const {
        const std::uintptr_t head = head_.load(std::memory_order_acquire);
        const unsigned shift = static_cast<unsigned>(head & head_tag_mask);
        const auto* slots = reinterpret_cast<const slot*>(head & ~head_tag_mask);
        const std::size_t mask = ~std::size_t{0} >> shift;
        for (std::size_t i = index(hash, shift);; i = (i + 1) & mask) {
            entry_type* e = slots[i].load(std::memory_order_acquire);
            if (e == nullptr) return nullptr;
            if (e == tombstone()) continue;
            if (matches(*e, key, hash)) return e;
        }
    }

    // Returns the entry of `key`, inserting an absent one, built from `args`
    // after the key and hash, if needed. Writer lock required. Strong
    // guarantee: if an allocation throws, no entry was added (a table rebuilt
    // before it stays, holding the same entries).
    template <class... Args>
    entry_type& find_or_insert(const key_type& key, std::size_t hash, Args&&... args) {
        // One probe run finds the key or the first free slot of its run (a
        // tombstone or null), where the entry goes unless the table grows.
        table& t = *table_;
        std::size_t free_slot = t.mask + 1;  // none yet
        for (std::size_t i = index(hash, t.shift);; i = (i + 1) & t.mask) {
            entry_type* const e = t.slots[i].load(std::memory_order_relaxed);
            if (e == nullptr || e == tombstone()) {
                if (free_slot > t.mask) free_slot = i;
                if (e == nullptr) break;
                continue;
            }
            if (matches(*e, key, hash)) return *e;
        }
        const bool grows = 2 * (count_ + tombstones_ + 1) > capacity();
        if (grows) rebuild(4 * (count_ + 1) > capacity() ? 2 * capacity() : capacity());
        node* n = make_node(key, hash, std::forward<Args>(args)...);
        n->previous = last_;
        (last_ != nullptr ? last_->next : first_) = n;
        last_ = n;
        if (grows) {
            place(*table_, &n->entry());
        } else {
            if (t.slots[free_slot].load(std::memory_order_relaxed) == tombstone()) --tombstones_;
            t.slots[free_slot].store(&n->entry(), std::memory_order_release);
        }
        ++count_;
        return n->entry();
    }

    // Removes `e` (an entry of this registry) from lookups and iteration and
    // moves it to the garbage; rebuilds a table that became an eighth full
    // into a smaller one (kept as it is if that allocation fails). Writer
    // lock required; the caller must not use `e` afterwards.
    void remove(entry_type& e) noexcept {
        leave_tombstone(e);
        node* n = node_of(e);
        unlink(n);
        --count_;
        n->next = garbage_.nodes_;
        garbage_.nodes_ = n;
        if (capacity() > initial_capacity && 8 * count_ < capacity()) {
            try {
                rebuild(std::max(initial_capacity, std::bit_ceil(4 * count_)));
            } catch (...) {  // std::bad_alloc: the larger table stays
            }
        }
    }

    // Removes every entry for which `pred(entry)` is true. Writer lock
    // required. One pass unlinks them; then, when the table would shrink
    // (8 x entries < capacity, as remove() decides), one rebuild of the
    // smaller table from the remaining entries replaces their tombstones, so
    // a teardown that removes every entry probes no slot and rebuilds once
    // (remove() one by one: a probe each and a rebuild at every eighth).
    template <class Pred>
    void remove_if(Pred&& pred) noexcept {
        node* removed = nullptr;  // linked through next
        node* removed_last = nullptr;
        std::size_t removed_count = 0;
        for (node* n = first_; n != nullptr;) {
            node* const next = n->next;
            if (pred(std::as_const(n->entry()))) {
                unlink(n);
                n->next = removed;
                removed = n;
                if (removed_last == nullptr) removed_last = n;
                ++removed_count;
            }
            n = next;
        }
        if (removed == nullptr) return;
        count_ -= removed_count;
        bool rebuilt = false;
        if (capacity() > initial_capacity && 8 * count_ < capacity()) {
            try {
                rebuild(std::max(initial_capacity, std::bit_ceil(4 * count_)));
                rebuilt = true;
            } catch (...) {  // std::bad_alloc: the larger table stays, with tombstones
            }
        }
        if (!rebuilt) {
            for (node* n = removed; n != nullptr; n = n->next) leave_tombstone(n->entry());
        }
        removed_last->next = garbage_.nodes_;
        garbage_.nodes_ = removed;
    }

    // Moves what remove() and rebuilds left into `into`, which frees it when
    // destroyed, calling `on_wait` while it waits for readers (a test
    // scheduler's yield point); without `concurrent_readers` (a single-threaded
    // owner, whose lookups never overlap a removal) it frees without waiting.
    // Writer lock required.
    void take_garbage(garbage& into, void (*on_wait)() noexcept,
                      bool concurrent_readers = true) noexcept {
        into.on_wait_ = on_wait;
        into.concurrent_readers_ = concurrent_readers;
        while (node* n = garbage_.nodes_) {
            garbage_.nodes_ = n->next;
            n->next = into.nodes_;
            into.nodes_ = n;
        }
        while (table* t = garbage_.tables_) {
            garbage_.tables_ = t->previous;
            t->previous = into.tables_;
            into.tables_ = t;
        }
        garbage_table_bytes_ = 0;
    }

    // Replaced tables that may wait in the registry for a later grace period,
    // in bytes of slots (see take_due_garbage): every table of up to 2048
    // slots that growth replaces (16 + 32 + ... + 2048 slots: 32,640 bytes).
    static constexpr std::size_t deferred_table_bytes = 32 * 1024;

    // Moves the garbage into `into` as take_garbage() does, unless it is only
    // tables that growth (or a same-size rebuild) replaced, of at most
    // deferred_table_bytes in all, while another thread may read: those wait
    // in the registry for the next garbage that has to be freed anyway (a
    // removed entry, more tables) or for its destruction. A grace period with
    // another thread running costs one process-wide barrier (about 11 µs on the
    // 2-core VM, most of it interrupting that thread), while growing a table of
    // 2048 slots rehashes at most 1024 entries: deferring makes growth as cheap
    // as the rehash. Writer lock required.
    void take_due_garbage(garbage& into, void (*on_wait)() noexcept,
                          bool concurrent_readers = true) noexcept {
        if (garbage_.empty()) return;
        if (concurrent_readers && garbage_.nodes_ == nullptr &&
            garbage_table_bytes_ <= deferred_table_bytes && other_readers_now()) {
            return;
        }
        take_garbage(into, on_wait, concurrent_readers);
    }

    // Returns whether take_garbage() would move anything. Writer lock required.
    bool has_garbage() const noexcept { return !garbage_.empty(); }

    // Returns the bytes of slots of the replaced tables in the garbage. Writer
    // lock required.
    std::size_t garbage_table_bytes() const noexcept { return garbage_table_bytes_; }

    // Returns the number of entries.
    std::size_t entry_count() const noexcept { return count_; }

    // Returns the number of slots of the current table.
    std::size_t capacity() const noexcept { return table_->mask + 1; }

    // Calls f(entry) for every entry, in the order they were inserted. Writer
    // lock required; `f` must not insert or remove.
    template <class F>
    void for_each(F&& f) const {
        for (const node* n = first_; n != nullptr; n = n->next)
            f(std::as_const(const_cast<node*>(n)->entry()));
    }
    template <class F>
    void for_each(F&& f) {
        for (node* n = first_; n != nullptr; n = n->next) f(n->entry());
    }

private:
    static constexpr std::size_t initial_capacity = 16;
    // Scalar keys (integers, enums, pointers) under std::equal_to compare in
    // one instruction: find() compares them directly, not the stored hash first.
    static constexpr bool compares_keys_directly =
        std::is_scalar_v<key_type> && (std::is_same_v<KeyEqual, std::equal_to<key_type>> ||
                                       std::is_same_v<KeyEqual, std::equal_to<>>);
    // The cache line size assumed for layout (std::hardware_destructive_interference_size
    // is 64 on the targets built here; GCC warns that using it makes the ABI depend
    // on tuning flags).
    static constexpr std::size_t cache_line = 64;

    using slot = std::atomic<entry_type*>;
    // head_ is the current table's first slot, 64-byte aligned, with the
    // table's shift (64 - log2 capacity, at most 60) in its low 6 bits, so
    // that a lookup's first load gives both.
    static constexpr std::uintptr_t head_tag_mask = 63;
    static constexpr std::size_t slot_alignment = 64;

    // A removed entry's slot: never dereferenced, never equal to an entry.
    static entry_type* tombstone() noexcept {
        return reinterpret_cast<entry_type*>(std::uintptr_t{alignof(entry_type)});
    }

    // Returns the hash of `e`'s key: stored, or recomputed (registry_entry.hpp's
    // stores_hash: scalar keys under std::hash).
    static std::size_t hash_of(const entry_type& e) noexcept {
        if constexpr (entry_type::stores_hash) {
            return e.hash;
        } else {
            return Hash{}(e.key);
        }
    }

    // Returns whether `e` is the entry of `key` (hash `hash`).
    bool matches(const entry_type& e, const key_type& key, std::size_t hash) const {
        static_assert(entry_type::stores_hash ||
                          (compares_keys_directly && std::is_same_v<Hash, std::hash<key_type>>),
                      "an entry without its hash needs keys compared directly and std::hash "
                      "(hash_of recomputes it with a default-constructed Hash)");
        if constexpr (compares_keys_directly) {
            (void)hash;
            return e.key == key;
        } else {
            return e.hash == hash && equal_(e.key, key);
        }
    }

    // Fibonacci hashing spreads identity hashes (std::hash<int>) over the table.
    static std::size_t index(std::size_t hash, unsigned shift) noexcept {
        return static_cast<std::size_t>(fibonacci_product(hash >> SkipBits) >> shift);
    }

    // Owns its slots and the table linked after it in the garbage (raw
    // pointers rather than std::unique_ptr: two std::unique_ptr instantiations
    // less for every unit that uses a system to compile; benchmarks/README.md,
    // "Compile time").
    struct table {
        explicit table(std::size_t capacity)
            : mask(capacity - 1),
              shift(static_cast<unsigned>(64 - std::countr_zero(capacity))),
              storage(new slot[capacity + slot_alignment / sizeof(slot)]()) {
            void* p = storage;
            std::size_t space = (capacity + slot_alignment / sizeof(slot)) * sizeof(slot);
            slots =
                static_cast<slot*>(std::align(slot_alignment, capacity * sizeof(slot), p, space));
        }
        table(const table&) = delete;
        table& operator=(const table&) = delete;
        ~table() {
            delete[] storage;
            delete previous;  // recursion as deep as the tables in one garbage list
        }

        std::uintptr_t head() const noexcept {
            return reinterpret_cast<std::uintptr_t>(slots) | shift;
        }

        std::size_t mask;
        unsigned shift;
        slot* storage;              // value-initialised: every slot null
        slot* slots = nullptr;      // storage, aligned to slot_alignment
        table* previous = nullptr;  // the next table of the garbage, or null
    };

    // Stores `e` in the first free slot (null or tombstone) of its probe run.
    void place(table& t, entry_type* e) noexcept {
        std::size_t i = index(hash_of(*e), t.shift);
        for (;; i = (i + 1) & t.mask) {
            entry_type* const in = t.slots[i].load(std::memory_order_relaxed);
            if (in == nullptr) break;
            if (in == tombstone() && &t == table_) {
                --tombstones_;
                break;
            }
        }
        t.slots[i].store(e, std::memory_order_release);
    }

    // Replaces `e`'s slot in the current table with a tombstone.
    void leave_tombstone(entry_type& e) noexcept {
        const std::size_t mask = table_->mask;
        for (std::size_t i = index(hash_of(e), table_->shift);; i = (i + 1) & mask) {
            if (table_->slots[i].load(std::memory_order_relaxed) == &e) {
                table_->slots[i].store(tombstone(), std::memory_order_release);
                break;
            }
        }
        ++tombstones_;
    }
    // Takes `n` out of the insertion-order list.
    void unlink(node* n) noexcept {
        (n->previous != nullptr ? n->previous->next : first_) = n->next;
        (n->next != nullptr ? n->next->previous : last_) = n->previous;
    }

    // Replaces the table by one of `capacity` slots holding every entry; the
    // old one goes to the garbage. Throws only before changing anything.
    void rebuild(std::size_t capacity) {
        table* next = new table(capacity);  // the only step that may throw
        for (node* n = first_; n != nullptr; n = n->next) place(*next, &n->entry());
        head_.store(next->head(), std::memory_order_release);
        table_->previous = garbage_.tables_;
        garbage_.tables_ = table_;
        garbage_table_bytes_ += (table_->mask + 1) * sizeof(slot);
        table_ = next;
        tombstones_ = 0;
    }

    // An entry with its links, one allocation: the entry at the block's start
    // (a hit reads its first bytes: registry_entry.hpp), then the links at
    // links_offset (the node is not standard-layout, so no offsetof).
    struct node {
        node* previous = nullptr;  // insertion order
        node* next = nullptr;      // insertion order; then the garbage list
        entry_type& entry() noexcept {
            return *std::launder(reinterpret_cast<entry_type*>(
                reinterpret_cast<unsigned char*>(this) - links_offset));
        }
    };
    static constexpr std::size_t links_offset =
        (sizeof(entry_type) + alignof(node) - 1) / alignof(node) * alignof(node);
    static constexpr std::size_t node_alignment = alignof(entry_type) > alignof(node)
                                                      ? alignof(entry_type)
                                                      : alignof(node);
    static constexpr std::size_t node_bytes = links_offset + sizeof(node);
    static node* node_of(entry_type& e) noexcept {
        return std::launder(
            reinterpret_cast<node*>(reinterpret_cast<unsigned char*>(&e) + links_offset));
    }

    // Over-aligned entries (an over-aligned key) need the aligned operator new;
    // the others use the plain one, which replaced global allocators count.
    static constexpr bool over_aligned = node_alignment > __STDCPP_DEFAULT_NEW_ALIGNMENT__;
    template <class... Args>
    static node* make_node(Args&&... args) {
        void* raw;
        if constexpr (over_aligned) {
            raw = ::operator new(node_bytes, std::align_val_t{node_alignment});
        } else {
            raw = ::operator new(node_bytes);
        }
        try {
            std::construct_at(static_cast<entry_type*>(raw), std::forward<Args>(args)...);
        } catch (...) {
            free_storage(raw);
            throw;
        }
        return ::new (static_cast<void*>(static_cast<unsigned char*>(raw) + links_offset)) node;
    }
    static void destroy_node(node* n) noexcept {
        entry_type& e = n->entry();
        std::destroy_at(&e);
        free_storage(&e);
    }
    static void free_storage(void* p) noexcept {
        if constexpr (over_aligned) {
            ::operator delete(p, std::align_val_t{node_alignment});
        } else {
            ::operator delete(p);
        }
    }

    [[no_unique_address]] KeyEqual equal_{};
    // Read by every lookup and written only when the table is rebuilt: alone
    // on its cache line. Next to the fields every insert writes (below), or to
    // the owner's mutex before this registry, each import on one thread made
    // the lookups of the others miss this line, and their reads made the
    // importer's next write miss in turn (benchmarks/README.md, "Hits beside
    // cold imports").
    alignas(cache_line) std::atomic<std::uintptr_t> head_{0};
    // The current table; written only when it is rebuilt.
    table* table_ = nullptr;

    // Written by every insert and remove, on the cache line after head_'s.
    alignas(cache_line) node* first_ = nullptr;
    node* last_ = nullptr;
    std::size_t count_ = 0;       // entries
    std::size_t tombstones_ = 0;  // slots of table_ that held a removed entry
    garbage garbage_;
    std::size_t garbage_table_bytes_ = 0;  // slots of garbage_'s tables, in bytes
};

}  // namespace importlock::detail
