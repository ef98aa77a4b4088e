// SPDX-License-Identifier: BSL-1.0
// importlock/detail/registry.hpp: the registry (CPython's sys.modules) with
// lock-free reads.
//
// An open-addressing table of atomic pointers to entries (registry_entry.hpp).
// An entry is created the first time a key is imported or blocked and lives
// as long as the registry: erase() and failed imports set its state to
// `absent` and drop the module, but keep the entry, so a reader can never
// touch freed memory. Entries are stored in chunks of 4, 8 and then 16
// entries (one allocation per chunk). A table that grows is replaced, and the
// old one kept until destruction for readers still probing it (all tables
// together take less than twice the current one). Memory therefore follows
// the number of distinct keys that ever held a module, not the number of
// lookups.
//
// Thread-safety: find() may run on any thread at any time, concurrently with
// everything; it takes no lock and writes nothing. Every other member, and
// every write to an entry, needs the owner's writer lock (the state mutex of
// the system's shard that holds this registry). Cost: find O(1) expected,
// with the stored hash compared before the key; insert O(1) amortised.
// Layout: the word every find reads first (head_) has a cache line of its
// own, so that inserts on one thread do not make finds on others miss it.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

#include "algorithm.hpp"
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
public:
    using entry_type = Entry;
    using key_type = std::remove_const_t<decltype(Entry::key)>;

    registry() { grow(initial_capacity); }

    registry(const registry&) = delete;
    registry& operator=(const registry&) = delete;
    ~registry() {
        for (chunk* ch = first_; ch != nullptr;) {
            chunk* next = ch->next;
            entry_type* entries = entries_of(ch);
            for (std::size_t i = ch->size; i-- > 0;) std::destroy_at(entries + i);
            free_chunk(ch);
            ch = next;
        }
        delete table_;
    }

    // Returns the entry of `key` (hash `hash`), or null. Lock-free, wait-free
    // for a table without long probe runs; safe on any thread.
    // One load gives the current table's slots and its shift (head_).
    entry_type* find(const key_type& key, std::size_t hash) const {
        const std::uintptr_t head = head_.load(std::memory_order_acquire);
        const unsigned shift = static_cast<unsigned>(head & head_tag_mask);
        const auto* slots = reinterpret_cast<const slot*>(head & ~head_tag_mask);
        const std::size_t mask = ~std::size_t{0} >> shift;
        for (std::size_t i = index(hash, shift);; i = (i + 1) & mask) {
            entry_type* e = slots[i].load(std::memory_order_acquire);
            if (e == nullptr) return nullptr;
            if (e->hash == hash && equal_(e->key, key)) return e;
        }
    }

    // Returns the entry of `key`, inserting an absent one, built from `args`
    // after the key and hash, if needed. Writer lock required. Strong
    // guarantee: if an allocation throws, nothing changed.
    template <class... Args>
    entry_type& find_or_insert(const key_type& key, std::size_t hash, Args&&... args) {
        if (entry_type* e = find(key, hash)) return *e;
        if (2 * (count_ + 1) > capacity()) grow(2 * capacity());
        entry_type& e = emplace(key, hash, std::forward<Args>(args)...);
        place(*table_, &e);
        ++count_;
        return e;
    }

    // Returns the number of entries (keys that ever held a module or a block).
    std::size_t entry_count() const noexcept { return count_; }

    // Calls f(entry) for every entry. Writer lock required.
    // Entries come in the order they were inserted.
    template <class F>
    void for_each(F&& f) const {
        for (const chunk* ch = first_; ch != nullptr; ch = ch->next) {
            const entry_type* entries = entries_of(ch);
            for (std::size_t i = 0; i < ch->size; ++i) f(entries[i]);
        }
    }
    template <class F>
    void for_each(F&& f) {
        for (chunk* ch = first_; ch != nullptr; ch = ch->next) {
            entry_type* entries = entries_of(ch);
            for (std::size_t i = 0; i < ch->size; ++i) f(entries[i]);
        }
    }

private:
    static constexpr std::size_t initial_capacity = 16;
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

    // Fibonacci hashing spreads identity hashes (std::hash<int>) over the table.
    static std::size_t index(std::size_t hash, unsigned shift) noexcept {
        return static_cast<std::size_t>(fibonacci_product(hash >> SkipBits) >> shift);
    }

    // Owns its slots and the table it replaced (raw pointers rather than
    // std::unique_ptr: two std::unique_ptr instantiations less for every unit
    // that uses a system to compile; benchmarks/README.md, "Compile time").
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
            delete previous;  // recursion as deep as the number of grows (< 64)
        }

        std::uintptr_t head() const noexcept {
            return reinterpret_cast<std::uintptr_t>(slots) | shift;
        }

        std::size_t mask;
        unsigned shift;
        slot* storage;              // value-initialised: every slot null
        slot* slots = nullptr;      // storage, aligned to slot_alignment
        table* previous = nullptr;  // the table this one replaced, or null
    };

    std::size_t capacity() const noexcept { return table_->mask + 1; }

    static void place(table& t, entry_type* e) noexcept {
        std::size_t i = index(e->hash, t.shift);
        while (t.slots[i].load(std::memory_order_relaxed) != nullptr) i = (i + 1) & t.mask;
        t.slots[i].store(e, std::memory_order_release);
    }

    // Replaces the table by one of `capacity` slots; keeps the old one alive.
    void grow(std::size_t capacity) {
        table* next = new table(capacity);  // the only step that may throw
        for_each([&](entry_type& e) { place(*next, &e); });
        head_.store(next->head(), std::memory_order_release);
        next->previous = table_;
        table_ = next;
    }

    [[no_unique_address]] KeyEqual equal_{};
    // Read by every lookup and written only when the table grows: alone on its
    // cache line. Next to the fields every insert writes (below), or to the
    // owner's mutex before this registry, each import on one thread made the
    // lookups of the others miss this line, and their reads made the
    // importer's next write miss in turn (benchmarks/README.md, "Hits beside
    // cold imports").
    alignas(cache_line) std::atomic<std::uintptr_t> head_{0};
    // The current table; it owns the one it replaced, and so on: lock-free readers
    // may still be in an old one. (A list, not a std::vector of them: one
    // std::vector type less for every unit that uses a system to compile.)
    // Written only when the table grows; read by inserts.
    table* table_ = nullptr;
    // Entries never move: they live in chunks of 4, 8, then 16 entries, one
    // allocation per chunk (this header, then the entries), linked oldest
    // first, the last one filling up (at most 15 unused slots).
    struct chunk {
        chunk* next = nullptr;
        std::uint32_t size = 0;
        std::uint32_t capacity = 0;
    };
    static constexpr std::size_t first_chunk = 4;
    static constexpr std::size_t largest_chunk = 16;
    static constexpr std::size_t chunk_alignment = alignof(entry_type) > alignof(chunk)
                                                       ? alignof(entry_type)
                                                       : alignof(chunk);
    static constexpr std::size_t entries_offset =
        (sizeof(chunk) + alignof(entry_type) - 1) / alignof(entry_type) * alignof(entry_type);

    // Over-aligned entries (an over-aligned key) need the aligned operator new;
    // the others use the plain one, which replaced global allocators count.
    static constexpr bool over_aligned = chunk_alignment > __STDCPP_DEFAULT_NEW_ALIGNMENT__;
    static void* allocate_chunk(std::size_t bytes) {
        if constexpr (over_aligned) {
            return ::operator new(bytes, std::align_val_t{chunk_alignment});
        } else {
            return ::operator new(bytes);
        }
    }
    static void free_chunk(chunk* ch) noexcept {
        if constexpr (over_aligned) {
            ::operator delete(static_cast<void*>(ch), std::align_val_t{chunk_alignment});
        } else {
            ::operator delete(static_cast<void*>(ch));
        }
    }

    // The storage of a chunk's entries (entries_of: the constructed ones).
    static void* storage_of(chunk* ch) noexcept {
        return reinterpret_cast<unsigned char*>(ch) + entries_offset;
    }
    static entry_type* entries_of(chunk* ch) noexcept {
        return std::launder(static_cast<entry_type*>(storage_of(ch)));
    }
    static const entry_type* entries_of(const chunk* ch) noexcept {
        return entries_of(const_cast<chunk*>(ch));
    }

    // Constructs an entry at the end of the last chunk (a new chunk when it
    // is full). Strong guarantee: if the allocation or the construction
    // throws, no entry was added (a new, empty chunk stays for the next).
    template <class... Args>
    entry_type& emplace(Args&&... args) {
        if (last_ == nullptr || last_->size == last_->capacity) {
            const std::size_t capacity = last_ == nullptr
                                             ? first_chunk
                                             : (2 * std::size_t{last_->capacity} < largest_chunk
                                                    ? 2 * std::size_t{last_->capacity}
                                                    : largest_chunk);
            void* raw = allocate_chunk(entries_offset + capacity * sizeof(entry_type));
            chunk* ch = ::new (raw) chunk{nullptr, 0, static_cast<std::uint32_t>(capacity)};
            (last_ != nullptr ? last_->next : first_) = ch;
            last_ = ch;
        }
        chunk& ch = *last_;
        entry_type* e = std::construct_at(static_cast<entry_type*>(storage_of(&ch)) + ch.size,
                                          std::forward<Args>(args)...);
        ++ch.size;
        return *e;
    }

    // Written by every insert, on the cache line after head_'s.
    alignas(cache_line) chunk* first_ = nullptr;
    chunk* last_ = nullptr;
    std::size_t count_ = 0;
};

}  // namespace importlock::detail
