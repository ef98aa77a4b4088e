// SPDX-License-Identifier: BSL-1.0
// importlock/detail/registry.hpp: the registry (CPython's sys.modules) with
// lock-free reads.
//
// An open-addressing table of atomic pointers to entries. An entry is created
// the first time a key gets a module (or is blocked) and lives as long as the
// registry: erase() and failed imports set its state to `absent` and drop the
// module, but keep the entry, so a reader can never touch freed memory. A
// table that grows is replaced, and the old one kept until destruction for
// readers still probing it (all tables together take less than twice the
// current one). Memory therefore follows the number of distinct keys that
// ever held a module, not the number of lookups.
//
// Thread-safety: find() may run on any thread at any time, concurrently with
// everything; it takes no lock and writes nothing. Every other member, and
// every write to an entry, needs the owner's writer lock (the system's state
// mutex). Cost: find O(1) expected, with the stored hash compared before the
// key; insert O(1) amortised.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "spin_lock.hpp"

namespace importlock::detail {

// The life cycle of one key's registration.
enum class entry_state : unsigned char {
    absent,        // no module: never imported, erased, or its import failed
    initializing,  // inserted, loader running on `initializer`
    ready,         // fully initialised: the hit path returns it
    reloading,     // ready before, loader re-running on `initializer`
    blocked,       // tombstone: importing throws import_halted_error
};

template <class Key, class Module>
struct registry_entry {
    registry_entry(const Key& k, std::size_t h) : key(k), hash(h) {}

    // Returns a copy of the registry's reference (null when none). Lock-free
    // readers may call it while a writer swaps it.
    std::shared_ptr<Module> load_owner() const noexcept {
        std::lock_guard guard(owner_lock);
        return owner;
    }

    // Replaces the registry's reference; returns the previous one.
    std::shared_ptr<Module> exchange_owner(std::shared_ptr<Module> next) noexcept {
        std::lock_guard guard(owner_lock);
        owner.swap(next);
        return next;
    }

    // Members are ordered so that the small ones share one word: an entry is
    // 120 bytes with a std::string key.
    const Key key;
    const std::size_t hash;
    // Published with release by writers; readers acquire it.
    std::atomic<entry_state> state{entry_state::absent};
    // Guards `owner`; use load_owner and exchange_owner.
    mutable spin_lock owner_lock;
    // Failed imports so far (wrapping), and the last one's exception while
    // the key is not ready, for failure_mode::waiters_share_failure.
    std::uint32_t failures = 0;
    // owner.get() while state == ready, else null: the whole hit path is one
    // acquire load of it. Stored with release after the loader returned.
    std::atomic<Module*> ready{nullptr};
    // The registry's reference to the module.
    std::shared_ptr<Module> owner;
    // The thread running the loader while initializing or reloading.
    std::thread::id initializer{};
    std::exception_ptr last_failure;
    // The keys the last successful load imported through its importer, and
    // the order in which it became ready (for teardown, dependents first).
    std::vector<Key> dependencies;
    std::uint64_t ready_order = 0;
};

template <class Key, class Module, class Hash, class KeyEqual>
class registry {
public:
    using entry_type = registry_entry<Key, Module>;

    registry() { grow(initial_capacity); }

    registry(const registry&) = delete;
    registry& operator=(const registry&) = delete;

    // Returns the entry of `key` (hash `hash`), or null. Lock-free, wait-free
    // for a table without long probe runs; safe on any thread.
    entry_type* find(const Key& key, std::size_t hash) const {
        const table* t = current_.load(std::memory_order_acquire);
        for (std::size_t i = t->index(hash);; i = (i + 1) & t->mask) {
            entry_type* e = t->slots[i].load(std::memory_order_acquire);
            if (e == nullptr) return nullptr;
            if (e->hash == hash && equal_(e->key, key)) return e;
        }
    }

    // Returns the entry of `key`, inserting an absent one if needed. Writer
    // lock required. Strong guarantee: on bad_alloc nothing changed.
    entry_type& find_or_insert(const Key& key, std::size_t hash) {
        if (entry_type* e = find(key, hash)) return *e;
        if (2 * (count_ + 1) > capacity()) grow(2 * capacity());
        entry_type& e = entries_.emplace_back(key, hash);
        place(*tables_.back(), &e);
        ++count_;
        return e;
    }

    // Returns the number of entries (keys that ever held a module or a block).
    std::size_t entry_count() const noexcept { return count_; }

    // Calls f(entry) for every entry. Writer lock required.
    template <class F>
    void for_each(F&& f) const {
        for (const entry_type& e : entries_) f(e);
    }
    template <class F>
    void for_each(F&& f) {
        for (entry_type& e : entries_) f(e);
    }

private:
    static constexpr std::size_t initial_capacity = 16;

    struct table {
        explicit table(std::size_t capacity)
            : mask(capacity - 1),
              shift(static_cast<unsigned>(64 - std::countr_zero(capacity))),
              slots(new std::atomic<entry_type*>[capacity]) {}

        // Fibonacci hashing spreads identity hashes (std::hash<int>) over the table.
        std::size_t index(std::size_t hash) const noexcept {
            return static_cast<std::size_t>(
                (static_cast<std::uint64_t>(hash) * 0x9E3779B97F4A7C15ull) >> shift);
        }

        std::size_t mask;
        unsigned shift;
        std::unique_ptr<std::atomic<entry_type*>[]> slots;
    };

    std::size_t capacity() const noexcept {
        return current_.load(std::memory_order_relaxed)->mask + 1;
    }

    static void place(table& t, entry_type* e) noexcept {
        std::size_t i = t.index(e->hash);
        while (t.slots[i].load(std::memory_order_relaxed) != nullptr) i = (i + 1) & t.mask;
        t.slots[i].store(e, std::memory_order_release);
    }

    // Replaces the table by one of `capacity` slots; keeps the old one alive.
    void grow(std::size_t capacity) {
        tables_.reserve(tables_.size() + 1);
        auto next = std::make_unique<table>(capacity);
        for (entry_type& e : entries_) place(*next, &e);
        current_.store(next.get(), std::memory_order_release);
        tables_.push_back(std::move(next));
    }

    [[no_unique_address]] KeyEqual equal_{};
    std::atomic<const table*> current_{nullptr};
    std::vector<std::unique_ptr<table>> tables_;  // every table; back() is current
    std::deque<entry_type> entries_;              // stable addresses
    std::size_t count_ = 0;
};

}  // namespace importlock::detail
