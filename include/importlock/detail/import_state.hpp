// SPDX-License-Identifier: BSL-1.0
// importlock/detail/import_state.hpp: what one import system knows, and the
// queries that only read it.
//
// Purpose: owns the registry, the lock protocol, the observer slot and the
// counters of a basic_import_system, and answers the public queries that read
// them without importing (contains, size, dependencies, snapshot,
// lock_count, ...). basic_import_system derives from it and adds the
// algorithm of DESIGN §1, which decides every change of this state, so that
// the algorithm reads in one place (import_system.hpp) and the queries, the
// transitions' bookkeeping and the refusals live here.
//
// Shards: the state is split into `shard_count` shards by key hash (the
// LockPolicy's optional `shards`, default 1; sharded_per_key_locks: 8), each
// with its own state mutex (the LockPolicy's mutex_type), registry table and
// lock protocol. A key's entry, its module lock and the frames of its claims live
// in its shard. Claims, waits, erase, block and teardown are made under that
// shard's mutex; the load that holds a claim registers, publishes or
// unregisters its module under the entry's guard only, and an uncontended
// claim is released without the mutex (lock_protocol.hpp). Imports of keys in
// different shards share no lock and no counter but ready_count_ (one
// relaxed atomic increment per first load). What
// spans keys (teardown, dependents, the DOT graph, snapshots, close) holds
// every shard's mutex, taken in shard order: the only order in which a
// thread ever holds more than one. global_lock and no_locks have one shard.
//
// Freeing: an entry nothing refers to (see registry_entry::unused: no module,
// block, claim, waiter or handle pin) is removed from its shard's registry by
// the operation that made it so (erase, a failed import's sweep, a teardown
// round, a handle's last unpin), under the shard's mutex, and freed after the
// mutex is released once the lock-free readers that might hold it are done
// (registry.hpp's garbage, reclamation.hpp). An entry that only a load's
// claim still holds (an erase during the end of the load) is removed by the
// claim's release instead (remove_when_unused, sweep_after_release). A thread
// that waits for a key's lock with the mutex released pins the entry
// meanwhile (waiting_pin).
//
// Thread-safety: every query may run on any thread, also from loaders, hooks
// and module destructors. contains, is_initializing, is_blocked, size and,
// with per-key locks, lock_count are lock-free (a probe and one acquire
// load in a read section, or a sum of relaxed loads); dependencies,
// waiter_count and, per shard, entry_count take one shard's mutex; dependents, write_dependency_dot
// and snapshot take every shard's, and snapshot also the wait_graph_domain's. Cost: see
// basic_import_system.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "../errors.hpp"
#include "../key_traits.hpp"
#include "../observer.hpp"
#include "../snapshot.hpp"
#include "../wait_graph_domain.hpp"
#include "algorithm.hpp"
#include "dependency_graph.hpp"
#include "dependency_recorder.hpp"
#include "entry_importer.hpp"
#include "lock_protocol.hpp"
#include "observer_slot.hpp"
#include "policy_check.hpp"
#include "registry.hpp"
#include "registry_entry.hpp"
#include "snapshot_builder.hpp"
#include "spin_lock.hpp"
#include "teardown_order.hpp"

namespace importlock::detail {

// The shards a lock policy asks for (its optional `shards`), else 1.
template <class Policy>
constexpr std::size_t policy_shards() noexcept {
    if constexpr (requires { Policy::shards; }) {
        return static_cast<std::size_t>(Policy::shards);
    } else {
        return 1;
    }
}

template <class Key, class Module, class Policy, class System>
class import_state {
protected:
    using hasher = typename key_functions<Key>::hasher;
    using key_equal = typename key_functions<Key>::key_equal;
    using frame_type = load_frame<Key, hasher, key_equal>;
    using guard_type = std::conditional_t<single_threaded<Policy>, null_guard, spin_lock>;
    // The importer a key's loader receives; it lives with the module object
    // (module_factory.hpp), the entry keeps its address (entry_importer.hpp).
    using module_importer = entry_importer<Key, Module, System, frame_type, guard_type>;
    using entry_type = registry_entry<Key, Module, guard_type, entry_extra<module_importer>,
                                      stores_hash<Key, hasher, key_equal>>;
    using protocol_type = lock_protocol<Key, Policy, entry_type>;
    using state_lock = std::unique_lock<typename Policy::mutex_type>;

    // One shard of the state (see the header comment). Aligned to 512 bytes
    // (more than its size with std::mutex): two shards never share a cache
    // line, and a hit finds its shard's table at base + (hash & 7) * 512, a
    // shift, not a multiplication, on its dependent chain of loads.
    static constexpr std::size_t shard_count =
        single_threaded<Policy> || Policy::scope == lock_scope::global ? 1
                                                                       : policy_shards<Policy>();
    static constexpr unsigned shard_bits = static_cast<unsigned>(std::countr_zero(shard_count));
    struct alignas(512) shard {
        shard(wait_graph_domain& domain, const void* owner) : protocol(domain, owner) {}
        mutable typename Policy::mutex_type mutex;  // guards all below but the registry's reads
        registry<entry_type, hasher, key_equal, shard_bits> entries;
        protocol_type protocol;
        std::atomic<std::size_t> size{0};  // modules registered here (add_size)
    };
    using shard_array = std::array<shard, shard_count>;
    using garbage_type = typename registry<entry_type, hasher, key_equal, shard_bits>::garbage;

    // Every shard's entries, as one registry for dependency_graph.hpp and
    // teardown_order.hpp. Every shard's mutex held.
    template <class Shards>
    struct entries_of {
        using entry_type = typename import_state::entry_type;
        Shards& shards;
        template <class F>
        void for_each(F&& f) const {
            for (auto& sh : shards) sh.entries.for_each(f);
        }
    };

    // Holds every shard's mutex, taken in shard order.
    class all_shards_lock {
    public:
        explicit all_shards_lock(const import_state& state) : shards_(state.shards_) {
            try {
                for (; locked_ < shard_count; ++locked_) shards_[locked_].mutex.lock();
            } catch (...) {
                unlock();
                throw;
            }
        }
        all_shards_lock(const all_shards_lock&) = delete;
        all_shards_lock& operator=(const all_shards_lock&) = delete;
        ~all_shards_lock() { unlock(); }

    private:
        void unlock() noexcept {
            while (locked_ > 0) shards_[--locked_].mutex.unlock();
        }
        const shard_array& shards_;
        std::size_t locked_ = 0;
    };

public:
    using observer_type = import_observer<Key>;

    // The default of max_import_depth(), CPython's default recursion limit.
    static constexpr std::size_t default_max_import_depth = 1000;

    // Returns whether a module, initialised or not, is registered for `key`.
    bool contains(const Key& key) const { return holds_module(state_of(key)); }
    // Returns whether `key`'s first load is running (not a reload: spec._initializing).
    bool is_initializing(const Key& key) const {
        return state_of(key) == entry_state::initializing;
    }
    // Returns whether `key` is blocked.
    bool is_blocked(const Key& key) const { return state_of(key) == entry_state::blocked; }
    // Returns the number of registered modules.
    std::size_t size() const noexcept {
        std::size_t n = 0;
        for (const shard& sh : shards_) n += sh.size.load(std::memory_order_relaxed);
        return n;
    }
    // Returns the bytes of one registry entry (see entry_count()).
    static constexpr std::size_t entry_bytes() noexcept { return sizeof(entry_type); }
    // Returns the number of registry entries: one per key that holds a module
    // or a block, is being imported or waited for, or is cached by a handle.
    // Erased, failed and cleared keys leave none (their memory is freed after
    // the lock-free readers that might see it are done: reclamation.hpp).
    std::size_t entry_count() const {
        std::size_t n = 0;
        for (const shard& sh : shards_) {
            const state_lock state(sh.mutex);
            n += sh.entries.entry_count();
        }
        return n;
    }

    // Sets how deeply this thread's imports may nest, over every system (§1.12).
    // Each level takes about 1.1-1.3 KB of the importing thread's stack at -O2
    // (2.4 KB at -O0) besides the loader's own frames: the limit must fit the
    // stack of every thread that imports (README, set_max_import_depth).
    void set_max_import_depth(std::size_t depth) noexcept {
        max_depth_.store(depth, std::memory_order_relaxed);
    }
    // Returns the nesting limit (default_max_import_depth unless set).
    std::size_t max_import_depth() const noexcept {
        return max_depth_.load(std::memory_order_relaxed);
    }

    // Returns the keys the last successful load of `key` imported through its
    // importer, successfully, each once in first-import order.
    std::vector<Key> dependencies(const Key& key) const {
        const std::size_t hash = hasher_(key);
        const shard& sh = shard_of(hash);
        state_lock state(sh.mutex);
        const entry_type* e = sh.entries.find(key, hash);
        // An initialising entry has none yet, and its loader may be writing them.
        if (e == nullptr || !settled_with_module(e->current_state())) return {};
        return e->dependencies.to_vector();
    }
    // Returns the registered keys whose loaders imported `key`.
    std::vector<Key> dependents(const Key& key) const {
        all_shards_lock state(*this);
        return dependents_of(entries_of<const shard_array>{shards_}, key, equal_);
    }
    // Writes the dependency graph as Graphviz DOT (initialising modules dashed).
    void write_dependency_dot(std::ostream& out) const {
        all_shards_lock state(*this);
        detail::write_dependency_dot(out, entries_of<const shard_array>{shards_});
    }

    // Installs `observer` (null: none) for the imports that start afterwards;
    // its hooks run outside every internal lock (observer.hpp).
    void set_observer(std::shared_ptr<observer_type> observer) {
        observer_.set(std::move(observer));
    }
    // Returns the installed observer, or null.
    std::shared_ptr<observer_type> observer() const { return observer_.load(); }

    // Returns what the imports in flight are doing: a thread dump for imports,
    // with every tracked_mutex and tracked_thread end that a thread of the
    // domain waits on.
    import_snapshot snapshot() const {
        all_shards_lock state(*this);
        std::vector<const protocol_type*> protocols;
        for (const shard& sh : shards_) protocols.push_back(&sh.protocol);
        // Uncontended claims have no record: found through their entries.
        std::vector<snapshot_builder::claim_row> claims;
        for (const shard& sh : shards_) {
            sh.entries.for_each([&](const entry_type& e) {
                sh.protocol.visit_uncontended_claim(
                    e, [&](const auto& f) { claims.push_back({f.thread, f.depth, name(e.key)}); });
            });
        }
        return snapshot_builder::of(protocols, std::move(claims));
    }
    // Returns the module locks held or awaited: 0 when no import is in flight.
    std::size_t lock_count() const {
        if constexpr (Policy::scope == lock_scope::global) {
            state_lock state(shards_[0].mutex);
            return shards_[0].protocol.lock_count();
        } else {
            std::size_t n = 0;
            for (const shard& sh : shards_) n += sh.protocol.lock_count();
            return n;
        }
    }
    // Returns the threads waiting for `key`'s lock (global_lock: the global lock).
    std::size_t waiter_count(const Key& key) const {
        const std::size_t hash = hasher_(key);
        const shard& sh = shard_of(hash);
        state_lock state(sh.mutex);
        return sh.protocol.waiters_of(sh.entries.find(key, hash));
    }

protected:
    explicit import_state(wait_graph_domain& domain)
        : import_state(domain, std::make_index_sequence<shard_count>{}) {}
    template <std::size_t... I>
    import_state(wait_graph_domain& domain, std::index_sequence<I...>)
        : shards_{{shard((void(I), domain), this)...}} {}
    import_state(const import_state&) = delete;
    import_state& operator=(const import_state&) = delete;
    ~import_state() = default;

    // Every read path finds the key's entry here (§1.1), once per import,
    // inside a read_section (reclamation.hpp) that ends before the entry's
    // address is dropped: the entry may be freed once the section ends, unless
    // it is claimed, pinned, or the shard's mutex is held.
    entry_type* find_entry(const Key& key, std::size_t hash) const {
        yield_point<Policy>();
        return shard_of(hash).entries.find(key, hash);
    }
    // Returns the hash of `e`'s key: stored in the entry, or recomputed for
    // scalar keys under std::hash (registry_entry.hpp's stores_hash).
    std::size_t hash_of(const entry_type& e) const noexcept {
        if constexpr (entry_type::stores_hash) {
            return e.hash;
        } else {
            return hasher_(e.key);
        }
    }
    // Returns the shard of the key with hash `hash`.
    shard& shard_of(std::size_t hash) noexcept {
        if constexpr (shard_count == 1) {
            (void)hash;
            return shards_[0];
        } else {
            // The hash's low bits: two instructions before the hit's first
            // load (shards are 512 bytes apart). The shard's table is
            // indexed by the Fibonacci product of the other bits
            // (registry.hpp), so that keys spread within a shard as over
            // one table.
            return shards_[hash & (shard_count - 1)];
        }
    }
    const shard& shard_of(std::size_t hash) const noexcept {
        return const_cast<import_state*>(this)->shard_of(hash);
    }
    // Wakes every waiter of every shard, e.g. to let it see a stop request.
    void notify_all_waiters() {
        for (shard& sh : shards_) {
            state_lock state(sh.mutex);
            sh.protocol.notify_all_waiters();
        }
    }
    // Returns the entry's module while ready: state and module in one read.
    static std::shared_ptr<Module> published(const entry_type* e) {
        if (e == nullptr) return nullptr;
        yield_point<Policy>();
        return e->published();
    }
    // Returns f() inside a read section (reclamation.hpp); a single-threaded
    // policy's lookups never overlap a removal, so they need none.
    template <class F>
    static decltype(auto) lock_free_read(F&& f) {
        if constexpr (single_threaded<Policy>) {
            return f();
        } else {
            return in_read_section(std::forward<F>(f));
        }
    }
    // §1.1, §1.8 Returns `key`'s module while ready; throws
    // import_halted_error while it is blocked; else null. One read section.
    std::shared_ptr<Module> ready_or_throw_blocked(const Key& key, std::size_t hash) const {
        return lock_free_read([this, &key, hash]() -> std::shared_ptr<Module> {
            const entry_type* e = find_entry(key, hash);
            if (e == nullptr) return nullptr;
            if (auto module = published(e)) return module;
            throw_if_blocked(*e);
            return nullptr;
        });
    }
    // Returns `key`'s module while ready, else null. One read section.
    std::shared_ptr<Module> ready_now(const Key& key, std::size_t hash) const {
        return lock_free_read([this, &key, hash] { return published(find_entry(key, hash)); });
    }
    // Returns the address of `key`'s module while ready, else null: import_ref's
    // hit. One read section, no lock, no shared write.
    Module* ready_address(const Key& key, std::size_t hash) const {
        // Captures by value (a small trivially copyable key too): the section's
        // store to the reader record could alias a key read through a
        // reference, which the compiler would then copy to the stack and reload.
        const auto read = [this, hash](const Key& k) -> Module* {
            const entry_type* e = find_entry(k, hash);
            if (e == nullptr) return nullptr;
            yield_point<Policy>();
            return e->ready_module();
        };
        if constexpr (std::is_trivially_copyable_v<Key> && sizeof(Key) <= 2 * sizeof(void*)) {
            return lock_free_read([read, key] { return read(key); });
        } else {
            return lock_free_read([&read, &key] { return read(key); });
        }
    }
    // Returns `key`'s module while it initialises, is ready or reloads, else null.
    std::shared_ptr<Module> registered_now(const Key& key) const {
        return lock_free_read([&]() -> std::shared_ptr<Module> {
            const entry_type* e = find_entry(key, hasher_(key));
            return e == nullptr ? nullptr : e->registered();
        });
    }
    entry_state state_of(const Key& key) const {
        return lock_free_read([&] {
            const entry_type* e = find_entry(key, hasher_(key));
            return e == nullptr ? entry_state::absent : e->current_state();
        });
    }
    static std::string name(const Key& key) { return key_traits<Key>::to_string(key); }

    // --- Freeing entries nothing refers to (registry.hpp, reclamation.hpp) -----------------

    // Removes `key`'s entry if nothing refers to it any more (e.g. after a
    // failed import), and frees what the shard's registry left behind, after
    // a grace period, once its mutex is released. Never throws: if the mutex
    // cannot be locked the entry stays for a later sweep.
    void sweep(const Key& key, std::size_t hash) noexcept {
        shard& sh = shard_of(hash);
        garbage_type garbage;  // freed after the mutex is released
        try {
            const state_lock state = lock_adaptively(sh.mutex);
            if (entry_type* e = sh.entries.find(key, hash)) remove_when_unused(sh, *e);
            take_garbage(sh, garbage);
        } catch (...) {  // std::system_error from the mutex
        }
    }
    // Moves what `sh`'s registry left behind into `into` (but small tables
    // that growth replaced while another thread reads: they wait for the next
    // grace period, registry.hpp's take_due_garbage). Its mutex held.
    static void take_garbage(shard& sh, garbage_type& into) noexcept {
        if (sh.entries.has_garbage()) {
            sh.entries.take_due_garbage(into, &spin_wait_point<Policy>, !single_threaded<Policy>);
        }
    }

    // Removes `e` if nothing refers to it any more; if only a claim still
    // does (an erase during the end of the key's load), marks the claim so
    // that its release removes the entry (sweep_after_release). Its mutex held.
    static void remove_when_unused(shard& sh, entry_type& e) noexcept {
        if (e.current_state() == entry_state::absent &&
            e.pins.load(std::memory_order_relaxed) == 0 && sh.protocol.mark_release_for_sweep(e)) {
            return;
        }
        if (e.unused()) sh.entries.remove(e);
    }

    // Declared before a claim of `e` and destroyed after it: removes `e` when
    // the claim's release took the mutex (a contended claim, or one that
    // remove_when_unused marked) and nothing refers to the entry any more.
    // With the mutex held since the release, `e` is still the shard's.
    class sweep_after_release {
    public:
        sweep_after_release(shard& sh, entry_type& e, const state_lock& state,
                            garbage_type& into) noexcept
            : sh_(sh), e_(e), state_(state), into_(into) {}
        sweep_after_release(const sweep_after_release&) = delete;
        sweep_after_release& operator=(const sweep_after_release&) = delete;
        ~sweep_after_release() {
            if (!state_.owns_lock() || !e_.unused()) return;
            sh_.entries.remove(e_);
            take_garbage(sh_, into_);  // freed after the mutex is released
        }

    private:
        shard& sh_;
        entry_type& e_;
        const state_lock& state_;
        garbage_type& into_;
    };

    // Keeps an entry from being removed while this thread waits for its lock
    // with the mutex released (a lock_scope::global wait marks no entry).
    class waiting_pin {
    public:
        explicit waiting_pin(const entry_type& e) noexcept : e_(&e) { add_pin(e); }
        waiting_pin(const waiting_pin&) = delete;
        waiting_pin& operator=(const waiting_pin&) = delete;
        ~waiting_pin() { release(); }
        // Drops the pin (state mutex held, or the entry about to be swept).
        void release() noexcept {
            if (e_ != nullptr)
                std::exchange(e_, nullptr)->pins.fetch_sub(1, std::memory_order_relaxed);
        }

    private:
        const entry_type* e_;
    };

    // Returns `key`'s entry with one more pin (a handle keeps its address), or
    // null when the key has no entry.
    entry_type* pin_entry(const Key& key) {
        const std::size_t hash = hasher_(key);
        shard& sh = shard_of(hash);
        const state_lock state = lock_adaptively(sh.mutex);
        entry_type* e = sh.entries.find(key, hash);
        if (e != nullptr) e->pins.fetch_add(1, std::memory_order_relaxed);
        return e;
    }
    // Adds a pin to an entry the caller already pins (a handle's copy).
    static void add_pin(const entry_type& e) noexcept {
        e.pins.fetch_add(1, std::memory_order_relaxed);
    }
    // Drops a pin; removes the entry when nothing else refers to it.
    void unpin(const entry_type& e) noexcept {
        shard& sh = shard_of(hash_of(e));
        garbage_type garbage;  // freed after the mutex is released
        try {
            const state_lock state = lock_adaptively(sh.mutex);
            e.pins.fetch_sub(1, std::memory_order_relaxed);
            remove_when_unused(sh, const_cast<entry_type&>(e));
            take_garbage(sh, garbage);
        } catch (...) {  // std::system_error from the mutex: left for a later sweep
            e.pins.fetch_sub(1, std::memory_order_relaxed);
        }
    }

    // §1.7 `key`'s parents that are not ready, innermost first (their entries
    // are looked up again under the mutex: one found here may be freed).
    struct ancestor_list {
        std::vector<Key> keys;
        std::size_t size() const noexcept { return keys.size(); }
    };

    // §1.7 Returns `key`'s parents that are not ready, and sets `parent` to the
    // innermost ready one. Walks iteratively; throws import_depth_error, before
    // copying any key when the key traits can count the parents, when more
    // parents than this thread's remaining depth (§1.12) would have to be
    // imported.
    ancestor_list unloaded_ancestors(const Key& key, std::shared_ptr<Module>& parent) {
        using traits = key_traits<Key>;
        const std::size_t limit = max_import_depth();
        const std::size_t room =
            limit - (thread_import_depth() < limit ? thread_import_depth() : limit);
        if constexpr (requires { traits::ancestor_count(key); }) {
            if (traits::ancestor_count(key) > room) {
                std::optional<Key> p = traits::parent(key);
                if (!p || !ready_now(*p, hasher_(*p))) {
                    throw import_depth_error(name(key), limit,
                                             "it has more parents than the limit allows");
                }
            }
        }
        ancestor_list ancestors;
        for (std::optional<Key> p = traits::parent(key); p;
             p = traits::parent(ancestors.keys.back())) {
            if ((parent = ready_now(*p, hasher_(*p)))) break;
            if (ancestors.size() >= room) {
                throw import_depth_error(name(key), limit,
                                         "it has more unloaded parents than the limit allows");
            }
            ancestors.keys.push_back(std::move(*p));
        }
        return ancestors;
    }

    // Returns whether `key` has a parent (§1.7), without copying it when the
    // key's traits can count parents.
    static bool has_parent(const Key& key) {
        using traits = key_traits<Key>;
        if constexpr (requires { traits::ancestor_count(key); }) {
            return traits::ancestor_count(key) != 0;
        } else {
            return traits::parent(key).has_value();
        }
    }

    // §1.12 Throws import_depth_error when this thread's imports are nested
    // as deep as the limit.
    void throw_if_too_deep(const Key& key) const {
        if (thread_import_depth() < max_import_depth()) [[likely]]
            return;
        throw_too_deep(key, thread_import_depth(), max_import_depth());
    }
    [[gnu::noinline]] [[noreturn]] static void throw_too_deep(const Key& key, std::size_t depth,
                                                              std::size_t limit) {
        throw import_depth_error(name(key), limit,
                                 "imports are nested " + std::to_string(depth) + " deep");
    }

    // --- Transitions with their bookkeeping (size, teardown order). Each
    // takes the entry's shard's mutex; only the algorithm of import_system.hpp
    // calls them.

    // The transitions of a load are made by the thread holding the key's
    // claim, without the state mutex (registry_entry.hpp).

    // §1.5 Registers `module` as `e`'s initialising module (insert before
    // exec), moving it into the entry; throws import_halted_error if the key
    // was blocked meanwhile (`module` then stays the caller's, to destroy
    // outside every lock).
    void register_initializing(entry_type& e, std::shared_ptr<Module>& module) {
        if (!e.begin_load(module)) throw import_halted_error(name(e.key));
        add_size(e, 1);
    }
    // Publishes `e`'s initialised module with the keys its loader imported.
    void mark_ready(entry_type& e, key_list<Key>&& deps) {
        e.finish_load(std::move(deps), next_ready_order());
    }
    // Publishes a single-phase builder's finished module; throws
    // import_halted_error if the key was blocked meanwhile.
    void publish_built(entry_type& e, const std::shared_ptr<Module>& module, key_list<Key>&& deps) {
        if (!e.publish_built(module, std::move(deps), next_ready_order())) {
            throw import_halted_error(name(e.key));
        }
        add_size(e, 1);
    }
    // §1.6 Unregisters a failed load; returns the module so that the caller
    // destroys it outside every lock (its destructor may import).
    std::shared_ptr<Module> unregister_failed(entry_type& e) {
        add_size(e, -1);
        return e.abandon_load();
    }
    // §1.8 Drops `e`'s module or block (blocks it with `block_it`); moves
    // the module to `dropped` for destruction outside the mutex. Returns
    // whether there was a module or block to drop (always, with `block_it`).
    // Throws import_error (`what`: "erase", "block") while a load or reload of
    // the key is in flight. Decided on one read of the state, under the
    // entry's guard (registry_entry.hpp). State mutex held.
    bool drop_registration(entry_type& e, bool block_it, std::shared_ptr<Module>& dropped,
                           const char* what) {
        entry_state seen = entry_state::absent;
        if (block_it) {
            if (!e.block(dropped, &seen)) throw_in_flight(e, seen, what);
        } else {
            seen = e.drop_settled(dropped);
            if (in_flight(seen)) throw_in_flight(e, seen, what);
            if (seen == entry_state::absent) return false;
        }
        if (holds_module(seen)) add_size(e, -1);
        return true;
    }
    // Refuses every later import: the destructor's final teardown round.
    void close() {
        all_shards_lock state(*this);
        closing_ = true;
    }
    // §1.11 One teardown round: drops every settled module, dependents first
    // (destroyed outside the mutex: their destructors may import), and every
    // block; adds the modules dropped to `dropped`; returns whether there was
    // anything to drop.
    bool teardown_round(std::size_t& dropped) {
        std::size_t blocks = 0;
        std::vector<std::shared_ptr<Module>> doomed;
        garbage_type garbage;  // the entries dropped, freed after the mutexes
        {
            all_shards_lock state(*this);
            const auto find = [&](const Key& k) {
                const std::size_t hash = hasher_(k);
                return shard_of(hash).entries.find(k, hash);
            };
            entries_of<shard_array> entries{shards_};
            doomed = take_settled(
                entries, find,
                [&](const entry_type& e) { return shard_of(hash_of(e)).protocol.claimed(e); },
                [&](const entry_type& e) { add_size(e, -1); }, blocks);
            for (shard& sh : shards_) {
                sh.entries.remove_if([](const entry_type& e) { return e.unused(); });
                take_garbage(sh, garbage);
            }
        }
        dropped += doomed.size();
        for (auto& module : doomed) module.reset();
        return !doomed.empty() || blocks != 0;
    }

    // Hands the exception being handled to the threads waiting for `held`'s
    // key (singleflight), unless the key was blocked meanwhile: that is not a
    // failure to share, each waiter re-checks the registry itself (and may
    // find the block erased). Leaves the claim's state lock held when there
    // were waiters to tell.
    template <class Claim>
    static void share_failure(Claim& held) {
        try {
            throw;
        } catch (const import_halted_error&) {
        } catch (...) {
            held.share_failure(std::current_exception());
        }
    }

    // Adds `delta` to the size of `e`'s shard: an atomic increment, since
    // loads register and unregister without the shard's mutex.
    void add_size(const entry_type& e, int delta) noexcept {
        shard_of(hash_of(e))
            .size.fetch_add(static_cast<std::size_t>(delta), std::memory_order_relaxed);
    }

    // Returns a new place in teardown order (a module that becomes ready
    // after another, e.g. its dependency, gets a larger one).
    std::uint64_t next_ready_order() noexcept {
        return ready_count_.fetch_add(1, std::memory_order_relaxed) + 1;
    }

    // Returns the ready module, throws for a blocked key, else null. State
    // mutex. Every cold import asks twice before its load: the check of the
    // state is inline, the guarded read of the module and the throw are out
    // of line.
    std::shared_ptr<Module> settled(const entry_type& e) const {
        const entry_state s = e.current_state();
        if (s != entry_state::ready && s != entry_state::blocked) [[likely]]
            return nullptr;
        return settled_module(e, s);
    }
    [[gnu::noinline]] static std::shared_ptr<Module> settled_module(const entry_type& e,
                                                                    entry_state s) {
        if (s == entry_state::blocked) throw import_halted_error(name(e.key));
        return e.published();
    }

    // --- Refusals ------------------------------------------------------------------------

    static void throw_if_blocked(const entry_type& e) {
        if (e.current_state() == entry_state::blocked) throw import_halted_error(name(e.key));
    }
    // Throws unless the system still accepts imports. State mutex held.
    void throw_if_closing(const Key& key) const {
        if (!closing_) return;
        throw import_error(
            name(key), "cannot import '" + name(key) + "': its import system is being destroyed");
    }
    // Throws import_error for `what` ("erase", "block") of a key in flight.
    static void throw_in_flight(const entry_type& e, entry_state seen, const char* what) {
        const char* how = seen == entry_state::reloading ? "reloaded" : "initialised";
        throw import_error(name(e.key), std::string("cannot ") + what + " '" + name(e.key) +
                                            "' while it is being " + how);
    }
    // Returns `*e` when it holds a module to reload; else throws.
    static entry_type& require_loaded(entry_type* e, const Key& key) {
        const entry_state s = e == nullptr ? entry_state::absent : e->current_state();
        if (s == entry_state::blocked) throw import_halted_error(name(key));
        if (s == entry_state::absent) {
            throw import_error(name(key), "cannot reload '" + name(key) + "': it is not loaded");
        }
        return *e;
    }

    [[no_unique_address]] hasher hasher_{};
    [[no_unique_address]] key_equal equal_{};
    shard_array shards_;
    std::atomic<std::size_t> max_depth_{default_max_import_depth};
    bool closing_ = false;  // the destructor's last round, imports refused (every shard's mutex)
    observer_slot<observer_type> observer_;
    // Modules that became ready, ever: written by every first load, so on a
    // cache line of its own, apart from what cold imports only read.
    alignas(64) std::atomic<std::uint64_t> ready_count_{0};
};

}  // namespace importlock::detail
