// SPDX-License-Identifier: BSL-1.0
// importlock/detail/registry_entry.hpp: one key's registration, a state machine.
//
// Purpose: everything the registry knows about one key (CPython's
// sys.modules[k] plus the module's __spec__._initializing), with every change
// a named transition, so that a reader learns "ready, and this is the module"
// from one consistent read and can never pair the state of one load with the
// module object of another.
//
// States and transitions. The entry's `guard` is held across every change
// of `state` and `module`, so that guarded readers see both change together.
// The transitions of a load (begin_load, finish_load, abandon_load,
// publish_built) are made by the thread that holds the key's import (its
// claim: lock_protocol.hpp), without the shard's state mutex: nobody else
// changes the state of a claimed entry but block(), which refuses a load in
// flight and which begin_load and publish_built refuse in turn, both under
// the guard. Every other transition is made under the shard's state mutex.
//
//   from           to             transition      made by
//   absent         initializing   begin_load      the thread holding the key's import (§1.5)
//   initializing   ready          finish_load     that thread, after loader and bind_child
//   initializing   absent         abandon_load    that thread, when the loader threw (§1.6)
//   absent         ready          publish_built   that thread, single-phase builders
//   ready          reloading      begin_reload    the thread holding the key's import (§1.9)
//   reloading      ready          finish_reload   that thread, loader returned or threw
//   ready          absent         drop            erase / clear / block (never in flight)
//   blocked        absent         drop            erase / clear
//   absent|ready   blocked        block           block (refused in flight)
//
// Readers:
//   - published():   the module while `ready`, else null. Takes `guard` (a
//                    spin lock held for one reference-count increment).
//   - registered():  the module while initializing, ready or reloading.
//   - ready_module():the raw pointer of the module while `ready`, else null:
//                    one acquire load, no lock, no write (import_ref and
//                    module_handle). The pointer is stored only after the
//                    loader returned, so it never names a module that is
//                    still initialising.
//   - current_state(): one acquire load.
//
// Fields: `dependencies` and `ready_order` are written by the loading thread
// before the state becomes ready, so a reader under the state mutex reads
// them only when an acquire load of the state gave ready or reloading (an
// initialising entry has none). The thread holding the key's import is found
// through the claim word (lock_protocol.hpp). `extra` is the owning
// system's (an import system's: the address of the importer of the module
// the entry holds, entry_importer.hpp; the importer lives with the module,
// not here, so that an entry holds no importer once it holds no module); the
// system says who reads and writes it. `pins` counts the handles (and waits
// with the mutex released) that keep the entry's address. unused() says when
// nothing refers to the entry any more: the registry may then free it
// (registry.hpp), after the lock-free readers that may hold it are done.
//
// Thread-safety: the readers above may run on any thread at any time; the
// other members as the paragraphs above say. Cost: every transition and
// reader is O(1), no allocation.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "key_list.hpp"

namespace importlock::detail {

// The life cycle of one key's registration.
enum class entry_state : unsigned char {
    absent,        // no module: never imported, erased, or its import failed
    initializing,  // registered, a loader running (the claim's thread)
    ready,         // fully initialised: the hit path returns it
    reloading,     // ready before, its loader running again
    blocked,       // tombstone: importing throws import_halted_error
};

// Returns whether the state holds a module object.
constexpr bool holds_module(entry_state s) noexcept {
    return s == entry_state::initializing || s == entry_state::ready || s == entry_state::reloading;
}

// Returns whether a load or reload of the key is running.
constexpr bool in_flight(entry_state s) noexcept {
    return s == entry_state::initializing || s == entry_state::reloading;
}

// Returns whether the state holds a module no load is initialising: its
// dependencies may be read (under the state mutex).
constexpr bool settled_with_module(entry_state s) noexcept {
    return s == entry_state::ready || s == entry_state::reloading;
}

// A guard that guards nothing: for single-threaded lock policies.
struct null_guard {
    void lock() noexcept {}
    void unlock() noexcept {}
};

// Whether the entries of `Key` under `Hash` and `KeyEqual` store their hash:
// not for scalar keys under std::hash and std::equal_to (an integer's hash is
// the integer; recomputing it costs less than 8 bytes per entry, and lookups
// compare such keys directly: registry.hpp).
template <class Key, class Hash, class KeyEqual>
inline constexpr bool stores_hash =
    !(std::is_scalar_v<Key> && std::is_same_v<Hash, std::hash<Key>> &&
      (std::is_same_v<KeyEqual, std::equal_to<Key>> || std::is_same_v<KeyEqual, std::equal_to<>>));

// The hash field of an entry that does not store it: no bytes.
struct unstored_hash {
    constexpr explicit unstored_hash(std::size_t) noexcept {}
};

// One key's registration. `Guard` is a Lockable held for a few instructions
// (spin_lock, or null_guard for no_locks). `Extra` is per-entry data of the
// owning system (an import system's: its module's importer's address),
// constructed from the entry itself and the constructor's further arguments.
// `StoresHash`: whether `hash` holds the key's hash (else the owner recomputes
// it: stores_hash above).
template <class Key, class Module, class Guard, class Extra, bool StoresHash = true>
class registry_entry {
public:
    static constexpr bool stores_hash = StoresHash;

    template <class... Args>
    registry_entry(const Key& k, std::size_t h, Args&&... args)
        : key(k), hash(h), extra(*this, std::forward<Args>(args)...) {}

    registry_entry(const registry_entry&) = delete;
    registry_entry& operator=(const registry_entry&) = delete;

    // --- Readers: any thread, any time. ---------------------------------------------------

    // Returns the state; one acquire load.
    entry_state current_state() const noexcept { return state_.load(std::memory_order_acquire); }

    // Returns the module while ready, else null; state and module are read
    // together under the guard (a hit of import_module: no load before it).
    std::shared_ptr<Module> published() const noexcept {
        std::lock_guard lock(guard_);
        if (state_.load(std::memory_order_acquire) != entry_state::ready) return nullptr;
        return module_;
    }

    // Returns the module while initializing, ready or reloading, else null;
    // without the guard when an acquire load shows the state holds none (the
    // answer of that moment, as if read just before the state changed).
    std::shared_ptr<Module> registered() const noexcept {
        if (!holds_module(state_.load(std::memory_order_acquire))) return nullptr;
        std::lock_guard lock(guard_);
        if (!holds_module(state_.load(std::memory_order_acquire))) return nullptr;
        return module_;
    }

    // Returns the module's address while ready, else null; no lock, no write.
    Module* ready_module() const noexcept { return ready_.load(std::memory_order_acquire); }

    // Returns whether nothing refers to the entry any more: no module, no
    // block, no claim or lock record (so no load, reload, waiter or snapshot
    // pin), no handle. The registry may then remove it. State mutex held.
    bool unused() const noexcept {
        return state_.load(std::memory_order_acquire) == entry_state::absent &&
               claim_word.load(std::memory_order_acquire) == 0 &&
               pins.load(std::memory_order_acquire) == 0;
    }

    // --- Transitions: the shard's state mutex held (see the table above). ----------------

    // Registers `module` as initialising, moving it in; returns false (and
    // changes nothing, `module` included) when the key was blocked since it
    // was claimed.
    bool begin_load(std::shared_ptr<Module>& module) noexcept {
        std::lock_guard lock(guard_);
        if (state_.load(std::memory_order_acquire) == entry_state::blocked) return false;
        module_ = std::move(module);
        state_.store(entry_state::initializing, std::memory_order_release);
        return true;
    }

    // Returns the module so that the caller destroys it outside the mutex.
    std::shared_ptr<Module> abandon_load() noexcept {
        std::lock_guard lock(guard_);
        state_.store(entry_state::absent, std::memory_order_release);
        return std::exchange(module_, nullptr);
    }

    void finish_load(key_list<Key>&& deps, std::uint64_t order) noexcept {
        dependencies.swap(deps);
        ready_order = order;
        mark_ready();
    }

    // Publishes a single-phase builder's module; returns false (and changes
    // nothing) when the key was blocked since it was claimed.
    bool publish_built(const std::shared_ptr<Module>& module, key_list<Key>&& deps,
                       std::uint64_t order) noexcept {
        Module* raw = module.get();
        {
            std::lock_guard lock(guard_);
            if (state_.load(std::memory_order_acquire) == entry_state::blocked) return false;
            dependencies.swap(deps);
            ready_order = order;
            module_ = module;
            state_.store(entry_state::ready, std::memory_order_release);
        }
        ready_.store(raw, std::memory_order_release);
        return true;
    }

    void begin_reload() noexcept {
        ready_.store(nullptr, std::memory_order_relaxed);
        std::lock_guard lock(guard_);
        state_.store(entry_state::reloading, std::memory_order_release);
    }

    // Ends a reload; `deps` replaces the dependencies when the loader
    // succeeded (null: keep the previous ones). The place in teardown order
    // is kept (§1.11).
    void finish_reload(key_list<Key>* deps) noexcept {
        if (deps != nullptr) dependencies.swap(*deps);
        mark_ready();
    }

    // Drops the module (or the block) of a settled key; returns the module
    // for destruction outside the mutex (teardown). Changes nothing while a
    // load is in flight. State mutex held.
    std::shared_ptr<Module> drop() noexcept {
        std::shared_ptr<Module> dropped;
        drop_settled(dropped);
        return dropped;
    }

    // erase(): drops the module or the block of a settled key and returns the
    // state it found, one read under the guard: a claimed key's load begins,
    // fails and finishes without the state mutex, so a state read before is
    // stale. Changes nothing when that state is absent or in flight. The
    // dependencies are cleared under the guard too: publish_built of a
    // blocked key reads the state under it. State mutex held.
    entry_state drop_settled(std::shared_ptr<Module>& dropped) noexcept {
        std::lock_guard lock(guard_);
        const entry_state s = state_.load(std::memory_order_acquire);
        if (s == entry_state::absent || in_flight(s)) return s;
        ready_.store(nullptr, std::memory_order_relaxed);
        dependencies.clear();
        state_.store(entry_state::absent, std::memory_order_release);
        dropped = std::exchange(module_, nullptr);
        return s;
    }

    // Blocks the key; moves the dropped module, if any, to `dropped`; `seen`
    // (when given) receives the state it found. Returns false (and changes
    // nothing) while a load or reload is in flight: checked under the guard,
    // against begin_load and publish_built of a claimed key. State mutex held.
    bool block(std::shared_ptr<Module>& dropped, entry_state* seen = nullptr) noexcept {
        std::lock_guard lock(guard_);
        const entry_state s = state_.load(std::memory_order_acquire);
        if (seen != nullptr) *seen = s;
        if (in_flight(s)) return false;
        ready_.store(nullptr, std::memory_order_relaxed);
        dependencies.clear();
        dropped = std::exchange(module_, nullptr);
        state_.store(entry_state::blocked, std::memory_order_release);
        return true;
    }

    // --- Fields ----------------------------------------------------------------------------
    // The fields a hit reads come first (the key, the published address and,
    // for keys not compared directly, the stored hash), so that they share a
    // cache line: the entry starts its block (registry.hpp).

    const Key key;

private:
    std::atomic<Module*> ready_{nullptr};  // module_.get() while ready, else null

public:
    // The key's hash, when StoresHash (else an empty member).
    [[no_unique_address]] const std::conditional_t<StoresHash, std::size_t, unstored_hash> hash;
    // The handles that keep this entry's address (module_handle.hpp): raised
    // under the state mutex, or by a handle that already holds one. It shares
    // a word with state_ and guard_.
    mutable std::atomic<std::uint32_t> pins{0};

private:
    std::atomic<entry_state> state_{entry_state::absent};
    mutable Guard guard_;

public:
    // The key's claim: 0, a claiming frame's address, or a record's mark
    // (lock_protocol.hpp). Mutable: a snapshot pins a claim.
    mutable std::atomic<std::uintptr_t> claim_word{0};
    // The keys the last successful load imported through its importer, each
    // once, in first-import order (one pointer; most modules import nothing).
    // State mutex.
    key_list<Key> dependencies;
    // When this registration first became ready (teardown order). State mutex.
    std::uint64_t ready_order = 0;
    Extra extra;

private:
    // Initialising or reloading -> ready. The module does not change, so no
    // guard: a guarded reader sees the old state (null) or ready with the
    // module begin_load stored under the guard before. Nobody writes module_
    // meanwhile (the entry is in flight), so reading it here is safe. Every
    // reader loads the state with acquire: seeing ready, it sees what the
    // loader wrote (the module's fields, the dependencies).
    void mark_ready() noexcept {
        Module* raw = module_.get();
        state_.store(entry_state::ready, std::memory_order_release);
        ready_.store(raw, std::memory_order_release);
    }

    std::shared_ptr<Module> module_;  // guard_
};

}  // namespace importlock::detail
