// SPDX-License-Identifier: BSL-1.0
// importlock/import_system.hpp: basic_import_system, CPython's _find_and_load
// for any keyed resource.
//
// The public interface comes first; after it, the algorithm of DESIGN §1 in
// §1 order, each step marked `§1.x`. The state, its queries and bookkeeping
// are in detail/import_state.hpp; the machinery (registry and entry state
// machine, lock protocol, importer, teardown order, ...) in detail/.
#pragma once

#if __has_include(<version>)
#include <version>
#endif

#include <cassert>
#include <cstddef>
#include <memory>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/adaptive_lock.hpp"
#include "detail/chrono.hpp"
#include "detail/deadline.hpp"
#include "detail/import_state.hpp"
#include "detail/module_factory.hpp"
#include "errors.hpp"
#include "finders/registry_finder.hpp"
#include "importer.hpp"
#include "locking/per_key_locks.hpp"
#include "module_handle.hpp"
#include "module_traits.hpp"

namespace importlock {

// Keyed once-initialisation with CPython's import-lock semantics (DESIGN §1).
//
// Key is hashable and copyable (key_traits.hpp); the registry holds
// std::shared_ptr<Module>. LockPolicy says how imports synchronise and what a
// cycle gets (locking/lock_policy.hpp); FinderPolicy turns a key into a
// module_spec (finders/finder_policy.hpp).
//
// Thread-safety: every member may be called from any thread, from loaders,
// module destructors and observer hooks, except with no_locks (one thread).
// Systems share no registry and no lock; they share a wait_graph_domain (by
// default the process-wide one) so that cycles across systems are found.
// A lock policy may split a system's state into shards by key hash, each
// with its own state mutex (sharded_per_key_locks: 8; the default policies:
// 1; detail/import_state.hpp): imports of keys in different shards take no
// common lock.
//
// Cost of each member (n: registered modules, e: dependency edges):
//   import_ref hit             a hash probe and one acquire load inside a read
//                              section (a load and two stores to this thread's own
//                              reader record, detail/reclamation.hpp): no lock, no
//                              shared write
//   handle hit                 one acquire load: no lock, no write (the handle pins
//                              the key's entry)
//   import_module / get hit    the import_ref hit plus the entry's spin lock around
//                              one reference-count increment
//   shared_handle use          one acquire load and a comparison: no lock, no write
//   contains, is_initializing, is_blocked   a probe and one load in a read section
//   size                       a relaxed load per shard, lock-free
//   cold import                uncontended: one lock-free look (import_module; through
//                              import_ref, the hit's, and a second only for a key with
//                              a parent), the key's shard's mutex once (to insert
//                              the entry and claim the key, lock_protocol.hpp), the
//                              entry's spin lock once (to register the module), one
//                              compare-and-swap to release; allocates the module with its
//                              importer, in one block, and the key's entry (one
//                              allocation each), no lock record;
//                              through import_ref, no reference count taken for the
//                              caller (the registry's is the only one). Contended: a lock
//                              record from a free list and the shard's mutex to wait
//                              and to release; the wait_graph_domain's mutex only
//                              when this thread waits
//   reload                     a cold import's locking, no allocation but the loader's
//   block, erase               O(1) under the key's shard's mutex; an erase that
//                              frees the entry then waits, with no lock held, for the
//                              other threads' read sections (a fence when no other
//                              thread has read; else one membarrier system call)
//   failed import              as erase, for the failed key's entry
//   clear, destructor          O((n + e) log n) per round under every shard's mutex;
//                              O(n + e log n) when the modules became ready in
//                              insertion order (one shard, no nested import)
//                              and no dependency is newer than its dependent
//   dependencies(k)            O(result); dependents, write_dependency_dot O(n + e)
//                              under every shard's mutex
//   snapshot                   O(n + frames log frames + threads x locks) under every
//                              shard's mutex and the domain's (uncontended claims are
//                              found through their entries)
//   lock_count                 three loads per shard, lock-free (global_lock: its mutex)
//   waiter_count               O(1) under the key's shard's mutex
//
// Reference validity: a reference from import_ref stays valid until its key
// is erased, blocked or cleared, its import fails (a partial module seen
// through a cycle), or the system is destroyed.
template <class Key, class Module, class LockPolicy = per_key_locks,
          class FinderPolicy = registry_finder<Key, Module>>
class basic_import_system final
    : public importer<Key, Module>,
      public detail::import_state<Key, Module, detail::lock_policy_or_default<LockPolicy>,
                                  basic_import_system<Key, Module, LockPolicy, FinderPolicy>> {
    static_assert(detail::checked_module<Module>::value);
    static_assert(detail::checked_lock_policy<LockPolicy>::value);
    using policy = detail::lock_policy_or_default<LockPolicy>;
    using base = detail::import_state<Key, Module, policy, basic_import_system>;
    using checked_finder_type =
        typename std::conditional_t<detail::checked_key<Key>::ok,
                                    detail::checked_finder<FinderPolicy, Key, Module>,
                                    std::type_identity<detail::null_finder<Key, Module>>>::type;
    using typename base::entry_type;
    using typename base::frame_type;
    using typename base::module_importer;
    using typename base::protocol_type;
    using typename base::state_lock;
    using claim = typename protocol_type::claim;
    using entry_state = detail::entry_state;
    using base::add_pin, base::pin_entry, base::unpin;
    using base::find_entry, base::name, base::published, base::throw_if_blocked;
    using base::hasher_, base::observer_, base::shard_of;
    friend class module_handle<basic_import_system>;
    friend class shared_module_handle<basic_import_system>;

public:
    using key_type = Key;
    using module_type = Module;
    using lock_policy_type = LockPolicy;
    using finder_type = FinderPolicy;
    using importer_type = importer<Key, Module>;
    using spec_type = module_spec<Key, Module>;
    using traits_type = key_traits<Key>;
    using typename base::observer_type;

    // Builds an empty system with `finder`, whose cycles are checked in `domain`.
    basic_import_system() : basic_import_system(FinderPolicy{}) {}
    explicit basic_import_system(FinderPolicy finder,
                                 wait_graph_domain& domain = wait_graph_domain::process_wide())
        : base(domain), finder_(std::move(finder)) {}
    explicit basic_import_system(wait_graph_domain& domain)
        : basic_import_system(FinderPolicy{}, domain) {}
    basic_import_system(const basic_import_system&) = delete;
    basic_import_system& operator=(const basic_import_system&) = delete;

    // Tears the modules down, dependents first (§1.11); imports made by their
    // destructors succeed and are torn down too, until the final round, in
    // which they throw import_error. Precondition: no import in flight. The
    // teardown allocates its plan: out of memory here calls std::terminate (a
    // destructor cannot throw; clear() throws std::bad_alloc instead).
    ~basic_import_system() {
        assert(this->lock_count() == 0 &&
               "importlock: import system destroyed while imports are in flight");
        teardown(true);
    }

    // Returns the finder, e.g. to define loaders.
    checked_finder_type& finder() noexcept { return finder_; }
    const checked_finder_type& finder() const noexcept { return finder_; }

    // --- Importing (§1.1-§1.7, §1.9) -----------------------------------------------------

    // Imports `key`: the module, fully initialised, or partial when this import
    // closed a cycle and the policy allows it. Throws module_not_found_error,
    // import_halted_error, circular_import_error, import_depth_error or what
    // the loader threw.
    std::shared_ptr<Module> import_module(const Key& key) override {
        return find_and_load(key, hasher_(key), policy::on_cycle, {});
    }

    // Imports `key`, giving up waiting for other threads after `timeout`
    // (import_timeout_error); beyond the clock's range: no limit; NaN:
    // std::invalid_argument. The loader this thread runs is never interrupted.
    template <class Rep, class Period>
    std::shared_ptr<Module> import_module_for(const Key& key,
                                              const std::chrono::duration<Rep, Period>& timeout) {
        return import_limited(
            key, [&] { return detail::wait_limit{detail::deadline_after(timeout, name(key))}; });
    }

    // Imports `key`, giving up waiting at `deadline` on any clock.
    template <class Clock, class Duration>
    std::shared_ptr<Module> import_module_until(
        const Key& key, const std::chrono::time_point<Clock, Duration>& deadline) {
        return import_limited(
            key, [&] { return detail::wait_limit{detail::deadline_at(deadline, name(key))}; });
    }

#if defined(__cpp_lib_jthread)
    // Imports `key`, giving up waiting once `stop` is requested (import_cancelled_error).
    // Only with a policy that has timed waits (not no_locks), as the timed imports;
    // a template, so that an explicit instantiation of a no_locks system (which
    // compiles every non-template member) does not compile it.
    template <class StopToken>
        requires std::is_same_v<StopToken, std::stop_token>
    std::shared_ptr<Module> import_module(const Key& key, StopToken stop) {
        std::stop_callback wake(stop, [this] { this->notify_all_waiters(); });
        return import_limited(key, [&] { return detail::stop_limit(stop); });
    }
#endif

    // Imports `key` and returns a reference (valid as the class comment says).
    Module& import_ref(const Key& key) override {
        const std::size_t hash = hasher_(key);
        if (Module* module = this->ready_address(key, hash)) return *module;
        return import_ref_missed(key, hash);
    }

    // Returns a handle that imports `key` on first use (module_handle.hpp).
    module_handle<basic_import_system> handle(Key key) {
        return module_handle<basic_import_system>(*this, std::move(key));
    }

    // Returns an owning handle that imports `key` on first use and keeps the module
    // alive while it holds it; a use costs one acquire load (module_handle.hpp).
    shared_module_handle<basic_import_system> shared_handle(Key key) {
        return shared_module_handle<basic_import_system>(*this, std::move(key));
    }

    // Re-runs the loaded `key`'s loader on the same object under its lock
    // (importlib.reload); a failed reload keeps the module and rethrows.
    std::shared_ptr<Module> reload(const Key& key) { return reload_key(key, hasher_(key)); }

    // --- The registry, CPython's sys.modules (§1.8, §1.11) ---------------------------------

    // Returns the module registered for `key`, also while it initialises, or null.
    std::shared_ptr<Module> get(const Key& key) const override { return this->registered_now(key); }
    // Blocks `key` (`sys.modules[k] = None`): importing it throws
    // import_halted_error until erase(key). Refused while `key` is in flight.
    void block(const Key& key) { unregister(key, true); }
    // Removes `key`'s module or block; returns whether there was one. Refused
    // while `key` is in flight.
    bool erase(const Key& key) { return unregister(key, false); }
    // Drops every loaded module and block, dependents first, and then what
    // their destructors imported; returns the modules dropped.
    std::size_t clear() { return teardown(false); }
    // The read-only queries (contains, is_initializing, is_blocked, size,
    // set_max_import_depth, dependencies, dependents, write_dependency_dot,
    // set_observer, snapshot, lock_count, waiter_count, ...) come from
    // detail/import_state.hpp, with the state they read.

    // ===================== End of the public interface. =====================
    // The algorithm of DESIGN §1 follows, in §1 order.

private:
    // §1.1 Hit: find_entry and published (detail/import_state.hpp) are the one
    // read path: an entry's module is published only together with "ready".

    // What the caller of an import keeps: the module's ownership (a shared_ptr
    // it holds or returns), or only a reference (import_ref). For a
    // reference, a first load leaves the module's one owner in the registry
    // and returns a non-owning pointer to it: no reference-count increment
    // and decrement (two atomic read-modify-writes) on the cold path.
    enum class caller_needs : bool { ownership, reference };
    // Whether the caller has just looked for the ready module (import_ref's hit).
    enum class hit_checked : bool { no, yes };

    // import_ref after its hit check failed. Out of line: inlined into
    // import_ref, the load would cost the hit's loop a register.
    [[gnu::noinline]] Module& import_ref_missed(const Key& key, std::size_t hash) {
        return *find_and_load(key, hash, policy::on_cycle, {}, caller_needs::reference,
                              hit_checked::yes);
    }

    // CPython's _find_and_load: hit, blocked (§1.8, before any parent is
    // touched), parents (§1.7), then the key. With caller_needs::reference
    // the result may not own the module. When it throws, the entry it left
    // that nothing refers to any more is removed (memory follows the keys).
    std::shared_ptr<Module> find_and_load(const Key& key, std::size_t hash,
                                          cycle_resolution on_cycle,
                                          const detail::wait_limit& limit,
                                          caller_needs needs = caller_needs::ownership,
                                          hit_checked looked = hit_checked::no) {
        // The hit. A caller that has just looked skips it for a key without a
        // parent: load_key looks again under the mutex and finds what this look
        // would (a module published meanwhile, a block); §1.8 needs the block
        // refused here only before a parent is imported.
        if (looked == hit_checked::no || this->has_parent(key)) {
            if (auto module = this->ready_or_throw_blocked(key, hash)) return module;
        }
        // §1.7 Parents first, outermost first, each fully imported; iterative,
        // and refused before any copy when deeper than the limit (§1.12).
        std::shared_ptr<Module> parent;
        auto ancestors = this->unloaded_ancestors(key, parent);
        std::size_t i = ancestors.size();
        try {
            while (i > 0) {
                const Key& k = ancestors.keys[i - 1];
                parent = load_key(k, hasher_(k), parent, on_cycle, limit, true);
                --i;
            }
            return load_key(key, hash, parent, on_cycle, limit, false, needs);
        } catch (...) {
            // The failed parent's entry, else the key's: the others are ready
            // or were never created.
            if (i > 0) {
                this->sweep(ancestors.keys[i - 1], hasher_(ancestors.keys[i - 1]));
            } else {
                this->sweep(key, hash);
            }
            throw;
        }
    }

    // §1.2-§1.6 for one key whose parent is loaded: re-check, take the key's
    // lock (re-entrantly, §1.3), or resolve a cycle (§1.4); then load it.
    std::shared_ptr<Module> load_key(const Key& key, std::size_t hash,
                                     const std::shared_ptr<Module>& parent,
                                     cycle_resolution on_cycle, const detail::wait_limit& limit,
                                     bool as_parent, caller_needs needs = caller_needs::ownership) {
        auto& sh = shard_of(hash);  // the key's entry, lock and claims (import_state.hpp)
        // A table the insert replaced, or the entry an erase during the end of
        // the load left (sweep_after_release): freed once the mutex is released.
        typename base::garbage_type replaced;
        // Spins briefly before sleeping: held for a registry insert and a claim.
        state_lock state = detail::lock_adaptively(sh.mutex);
        this->throw_if_closing(key);
        entry_type& e = sh.entries.find_or_insert(key, hash, *this);
        base::take_garbage(sh, replaced);
        if (auto done = this->settled(e)) return done;
        // §1.2 Uncontended: claim the key with no lock record and no wait
        // (lock_protocol.hpp); its release takes no mutex.
        if (sh.protocol.can_claim_uncontended(e)) {
            this->throw_if_too_deep(key);  // §1.12
            // An erase at the end of the load makes the release remove the entry.
            typename base::sweep_after_release sweeper(sh, e, state, replaced);
            claim held(sh.protocol, e, state, protocol_type::uncontended);
            // Checked again: a holder releases without the mutex, so it may have
            // published between the check above and the claim word's load.
            if (auto done = this->settled(e)) return done;
            state.unlock();
            return run_first_load(e, parent, held, needs);
        }
        // §1.3 This thread already imports `key`: a circular import on its own
        // stack. A parent is handed over partial under every policy (a
        // package whose loader imports its own submodule).
        if (sh.protocol.claimed_by_this_thread(e)) {
            if (as_parent && detail::holds_module(e.current_state())) return e.registered();
            return resolve_cycle(
                key, e, state, [&] { return sh.protocol.reentry_chain(e); }, on_cycle,
                "this thread is already importing it");
        }
        this->throw_if_too_deep(key);  // §1.12
        // §1.2/§1.4 Take the key's lock, unless waiting would close a cycle.
        std::shared_ptr<observer_type> waiting;  // set once on_wait returned
        std::chrono::steady_clock::time_point wait_start;
        const auto wait_ended = [&] {
            state.unlock();  // hooks run outside every internal lock
            observer_.notify([&] { waiting->on_wait_end(key, detail::elapsed_since(wait_start)); });
        };
        typename base::waiting_pin pinned(e);  // the mutex is released while waiting
        auto got = [&] {
            try {
                return sh.protocol.acquire(e, state, limit, detail::shares_failures<policy>,
                                           [&](std::thread::id h) {
                                               auto o = observer_.load();
                                               if (!o) return;
                                               wait_start = std::chrono::steady_clock::now();
                                               o->on_wait(key, h);
                                               waiting = std::move(o);
                                           });
            } catch (...) {
                if (waiting) wait_ended();
                throw;
            }
        }();
        if (waiting) {
            wait_ended();
            state.lock();
        }
        pinned.release();
        if (!got.cycle.empty()) {
            return resolve_cycle(
                key, e, state, [&] { return std::move(got.cycle); }, on_cycle,
                "another thread importing it waits for this one");
        }
        if (got.failure) std::rethrow_exception(got.failure);
        typename base::sweep_after_release sweeper(sh, e, state, replaced);
        claim held(sh.protocol, e, *got.lock, state);
        if (auto done = this->settled(e)) return done;  // another thread loaded it meanwhile
        state.unlock();
        return run_first_load(e, parent, held, needs);
    }

    // §1.4 Gives the partial module to the import that closed a cycle, or
    // throws circular_import_error. The observer hears of it outside the lock.
    // `make_chain` names the cycle's imports; it runs only when someone reads
    // the chain (an observer, or the error), so that handing over a partial
    // module costs O(1) however deep the stack. `key` (the caller's) names the
    // key once the mutex is released: the entry may be freed then.
    template <class MakeChain>
    std::shared_ptr<Module> resolve_cycle(const Key& key, entry_type& e, state_lock& state,
                                          MakeChain&& make_chain, cycle_resolution on_cycle,
                                          const char* why) {
        std::shared_ptr<Module> partial;
        if (on_cycle == cycle_resolution::partial_module) {
            partial = e.registered();
            if (!partial) {
                why =
                    "it has no module object yet: its builder, finder or factory is still running";
            }
        }
        const auto o = observer_.load();
        if (partial && !o) {
            state.unlock();
            return partial;
        }
        std::vector<std::string> chain = std::forward<MakeChain>(make_chain)();
        state.unlock();
        if (o) observer_.notify([&] { o->on_cycle(key, chain, partial != nullptr); });
        if (partial) return partial;
        throw circular_import_error(std::move(chain), "'" + name(key) + "': " + why);
    }

    // §1.5 Find, create, insert, execute (CPython's _find_and_load_unlocked);
    // §1.6 on failure unregister and rethrow the loader's own exception. Runs
    // with the key's claim held and its shard's mutex released; takes no
    // mutex unless another thread waits for the key (its claim's release).
    std::shared_ptr<Module> run_first_load(entry_type& e, const std::shared_ptr<Module>& parent,
                                           claim& held, caller_needs needs) {
        const auto observer = observer_.load();
        std::chrono::steady_clock::time_point start;
        try {
            if (observer) {
                start = std::chrono::steady_clock::now();
                observer->on_import_begin(e.key);  // may abort the import
            }
            std::shared_ptr<Module> module = load_module(e, parent, needs);
            if (observer) {
                // Hooks run outside every internal lock.
                if (held.state().owns_lock()) held.state().unlock();
                observer_.notify(
                    [&] { observer->on_import_end(e.key, detail::elapsed_since(start)); });
            }
            return module;
        } catch (...) {
            if (observer) {
                observer_.notify(
                    [&] { observer->on_import_failed(e.key, std::current_exception()); });
            }
            if constexpr (detail::shares_failures<policy>) this->share_failure(held);
            throw;
        }
    }

    // Publishes the module (without the state mutex: the claim guards it).
    std::shared_ptr<Module> load_module(entry_type& e, const std::shared_ptr<Module>& parent,
                                        caller_needs needs) {
        std::optional<spec_type> spec = finder_.find_spec(e.key);
        if (!spec) throw detail::not_found(finder_, e.key);
        frame_type frame;
        if (spec->builder) {  // single-phase: registered only when finished
            // The importer lives with the module (§1.13), but the builder receives it
            // before the module exists: a holder for both, the module put in after.
            auto holder = detail::hold_importer<module_importer, Module>(*this);
            module_importer& imp = holder->importer;
            std::shared_ptr<Module> built =
                run_loader(imp, frame, [&](importer_type& i) { return spec->builder(e.key, i); });
            if (!built)
                throw import_error(name(e.key),
                                   "the builder of '" + name(e.key) + "' returned null");
            std::shared_ptr<Module> module =
                detail::hold_module(std::move(holder), std::move(built));
            if (parent) module_traits<Module>::bind_child(*parent, e.key, module);
            this->publish_built(e, module, frame.take());
            e.extra.importer = &imp;  // a reload's (the claim is still held)
            return module;
        }
        detail::require_loader(e.key, *spec);
        // The module with the importer its loader receives (§1.13), one allocation.
        auto made = detail::create_module<module_importer>(e.key, *spec, *this);
        std::shared_ptr<Module>& created = made.module;
        module_importer& imp = *made.importer;
        Module& module = *created;
        // The caller's owner (and bind_child's), unless the registry's is the only one.
        std::shared_ptr<Module> owner;
        if (needs == caller_needs::ownership || parent) owner = created;
        this->register_initializing(e, created);  // §1.5 insert before exec; takes `created`
        e.extra.importer = &imp;                  // a reload's; read under the key's claim
        detail::key_list<Key> deps;
        try {
            run_loader(imp, frame, [&](importer_type& i) { spec->loader(module, i); });
            // Bound before it is ready: no ready child is missing from its parent (gh-149728).
            if (parent) module_traits<Module>::bind_child(*parent, e.key, owner);
            if (!frame.empty()) deps = frame.take();
        } catch (...) {
            // §1.6 (gh-143650: waiters never see it); a destructor that
            // imports runs outside the mutex (and takes the importer with it).
            e.extra.importer = nullptr;
            this->unregister_failed(e).reset();
            throw;
        }
        this->mark_ready(e, std::move(deps));
        // Nobody drops the module before this returns but an erase after the
        // mark, which ends a reference's validity (the class comment).
        if (!owner) return std::shared_ptr<Module>(std::shared_ptr<Module>(), &module);
        return owner;
    }

    // Runs a loader or builder with `imp`, the importer that lives with its
    // module object (§1.13), recording into `frame` the imports that succeed;
    // kept importers record nothing after.
    template <class Run>
    decltype(auto) run_loader(module_importer& imp, frame_type& frame, Run&& run) {
        imp.attach(&frame);
        struct detach {
            module_importer& imp;
            ~detach() { imp.detach(); }
        } detach_after{imp};
        return run(imp);
    }

    // §1.8 block / erase.
    // An erased key's entry is removed when nothing else refers to it (a
    // handle, a waiter) and freed after a grace period (memory follows the keys).
    bool unregister(const Key& key, bool block_it) {
        std::shared_ptr<Module> dropped;      // destroyed after the state mutex
        typename base::garbage_type garbage;  // freed after the state mutex
        const std::size_t hash = hasher_(key);
        auto& sh = shard_of(hash);
        state_lock state = detail::lock_adaptively(sh.mutex);
        entry_type* e =
            block_it ? &sh.entries.find_or_insert(key, hash, *this) : sh.entries.find(key, hash);
        base::take_garbage(sh, garbage);  // a table the insert replaced
        if (e == nullptr) return false;
        const bool had_any =
            this->drop_registration(*e, block_it, dropped, block_it ? "block" : "erase");
        base::remove_when_unused(sh, *e);  // or by the release of a load that is ending
        base::take_garbage(sh, garbage);
        state.unlock();
        return had_any;
    }

    // §1.9 Reload: the same object, under the key's lock, the loader-running
    // code of the first load.
    std::shared_ptr<Module> reload_key(const Key& key, std::size_t hash) {
        auto& sh = shard_of(hash);
        state_lock state = detail::lock_adaptively(sh.mutex);
        entry_type& e = base::require_loaded(sh.entries.find(key, hash), key);
        if (sh.protocol.claimed_by_this_thread(e)) {
            throw import_error(name(key), "cannot reload '" + name(key) +
                                              "' while this thread is initialising it");
        }
        typename base::waiting_pin pinned(e);  // the mutex is released while waiting
        auto got = sh.protocol.acquire(e, state, {}, false, [](std::thread::id) {});
        pinned.release();
        if (!got.cycle.empty()) {
            throw circular_import_error(
                std::move(got.cycle),
                "reloading it would wait for a thread that waits for this one");
        }
        claim held(sh.protocol, e, *got.lock, state);
        base::require_loaded(&e, key);  // erased, blocked or failed meanwhile
        std::shared_ptr<Module> module = e.published();
        // The importer of this module object, attached again (its first load's).
        module_importer& imp = *e.extra.importer;
        e.begin_reload();
        state.unlock();
        const auto observer = observer_.load();
        const auto start = std::chrono::steady_clock::now();
        frame_type frame;
        std::optional<detail::key_list<Key>> deps;  // set when the loader succeeded
        detail::scope_exit finish([&] {
            if (observer) {
                observer_.notify(
                    [&] { observer->on_reload(key, detail::elapsed_since(start), !!deps); });
            }
            state.lock();
            e.finish_reload(deps ? &*deps : nullptr);  // a failed reload keeps the module
        });
        const spec_type spec = detail::find_reload_spec(finder_, key);
        run_loader(imp, frame, [&](importer_type& i) { spec.loader(*module, i); });
        deps = frame.take();
        return module;
    }

    // §1.11 Teardown: rounds of "drop every settled module, dependents first",
    // until a round finds none (module destructors may import). With `final`
    // the last round refuses imports.
    std::size_t teardown(bool final) {
        std::size_t dropped = 0;
        for (int i = 0; i < teardown_rounds && this->teardown_round(dropped); ++i) {
        }
        if (final) {
            this->close();
            while (this->teardown_round(dropped)) {
            }
        }
        return dropped;
    }

    // --- Helpers ------------------------------------------------------------------------

    // An import whose waits end at a limit; `make_limit` runs after the hit
    // check, so that a hit never reads the clock.
    template <class MakeLimit>
    std::shared_ptr<Module> import_limited(const Key& key, MakeLimit&& make_limit) {
        static_assert(detail::has_timed_waits<policy>,
                      "importlock: timed imports need the LockPolicy's condition_variable_type "
                      "to provide wait_until(std::unique_lock<mutex_type>&, time_point) "
                      "(see importlock/locking/lock_policy.hpp)");
        const std::size_t hash = hasher_(key);
        if (auto module = this->ready_now(key, hash)) return module;
        return find_and_load(key, hash, policy::on_cycle, make_limit());
    }

    static constexpr int teardown_rounds = 64;

    checked_finder_type finder_;
};

// The everyday alias: std::string keys, per-key locks, a registry finder.
template <class Module>
using import_system = basic_import_system<std::string, Module>;

}  // namespace importlock
