// SPDX-License-Identifier: BSL-1.0
// importlock/import_system.hpp: basic_import_system, CPython's _find_and_load
// for any keyed resource.
//
// import_module(k) behaves as CPython's import statement, generalised:
//  1. Hit: a fully initialised module is returned without a lock or a shared
//     write (import_ref; import_module copies a shared_ptr).
//  2. Otherwise the parent key (key_traits<Key>::parent) is imported first,
//     fully and under its own lock, then k's module lock is taken. Locks live
//     in a lock map and exist only while held or awaited.
//  3. A thread that already holds k's lock (a circular import on its own
//     stack) does not wait for itself: it gets the partial module.
//  4. Before blocking on a lock owned by another thread, the wait-for graph is
//     walked; if blocking would deadlock, this thread (only) gets the partial
//     module (CPython's _DeadlockError path) or circular_import_error.
//  5. Under the lock: re-check, find the spec, create the module, register it
//     as initialising, run the loader, offer the child to its parent, mark it
//     initialised.
//  6. If any of that throws, k is unregistered, the lock released and the
//     same exception object rethrown; waiters retry the import themselves.
#pragma once

#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>
#include <version>  // __cpp_lib_jthread
#if defined(__cpp_lib_jthread)
#include <stop_token>
#endif

#include "detail/dot_quote.hpp"
#include "detail/lock_map.hpp"
#include "detail/module_lock.hpp"
#include "detail/policy_check.hpp"
#include "detail/registry.hpp"
#include "detail/scope_exit.hpp"
#include "detail/spin_lock.hpp"
#include "detail/wait_for_graph.hpp"
#include "errors.hpp"
#include "finders/finder_policy.hpp"
#include "finders/registry_finder.hpp"
#include "importer.hpp"
#include "key_traits.hpp"
#include "locking/lock_policy.hpp"
#include "locking/per_key_locks.hpp"
#include "module_handle.hpp"
#include "module_spec.hpp"
#include "module_traits.hpp"
#include "observer.hpp"
#include "snapshot.hpp"

namespace importlock {

// Keyed once-initialisation with CPython's import-lock semantics.
//
// Key is hashable and copyable (see key_traits.hpp); the registry holds
// std::shared_ptr<Module>. LockPolicy says how imports synchronise and what a
// cycle gets (see locking/lock_policy.hpp); FinderPolicy turns a key into a
// module_spec (see finders/finder_policy.hpp).
//
// Thread-safety: every member may be called from any thread concurrently,
// except with no_locks. Instances share nothing: two systems have separate
// registries, locks and wait-for graphs (CPython's subinterpreters).
//
// Reference validity: a reference from import_ref stays valid until its key is
// erased or blocked, its import fails (for a partial module seen through a
// cycle), or the system is destroyed, like a reference into a node container.
template <class Key, class Module, class LockPolicy = per_key_locks,
          class FinderPolicy = registry_finder<Key, Module>>
class basic_import_system final : public importer<Key, Module> {
    // One readable error per broken argument (see detail/policy_check.hpp).
    static_assert(detail::checked_module<Module>::value);
    using policy = typename detail::checked_lock_policy<LockPolicy>::type;
    using checked_finder_type =
        typename std::conditional_t<detail::checked_key<Key>::ok,
                                    detail::checked_finder<FinderPolicy, Key, Module>,
                                    std::type_identity<detail::null_finder<Key, Module>>>::type;

public:
    using key_type = Key;
    using module_type = Module;
    using lock_policy_type = LockPolicy;
    using finder_type = FinderPolicy;
    using importer_type = importer<Key, Module>;
    using spec_type = module_spec<Key, Module>;
    using traits_type = key_traits<Key>;

    // Builds an empty system with a default-constructed finder.
    basic_import_system() = default;

    // Builds an empty system that finds specs with `finder`.
    explicit basic_import_system(FinderPolicy finder) : finder_(std::move(finder)) {}

    basic_import_system(const basic_import_system&) = delete;
    basic_import_system& operator=(const basic_import_system&) = delete;

    // Drops every module the system still holds, dependents before their
    // dependencies (see clear). Precondition: no import is in flight (checked
    // by an assertion in debug builds).
    ~basic_import_system() {
        assert(locks_.size() == 0 &&
               "importlock: basic_import_system destroyed while imports are in flight");
        clear();
    }

    // Returns the finder, e.g. to define loaders.
    checked_finder_type& finder() noexcept { return finder_; }
    const checked_finder_type& finder() const noexcept { return finder_; }

    // Imports `key` (see the file comment) and returns the module: fully
    // initialised, or partially initialised when this import closed a cycle
    // and the lock policy allows it. Throws module_not_found_error,
    // import_halted_error, circular_import_error, or what the loader threw.
    std::shared_ptr<Module> import_module(const Key& key) override {
        const std::size_t hash = hasher_(key);
        if (auto module = hit(key, hash)) return module;
        return import_slow(key, hash, policy::on_cycle);
    }

    // Imports `key` like import_module, but waits at most `timeout` for other
    // threads' imports of `key` (and of its parents) before throwing
    // import_timeout_error. Once this thread runs the loader it is not
    // interrupted, and imports the loader makes are not limited.
    template <class Rep, class Period>
    std::shared_ptr<Module> import_module_for(const Key& key,
                                              const std::chrono::duration<Rep, Period>& timeout) {
        static_assert(timed_waits,
                      "importlock: timed imports need the LockPolicy's condition_variable_type "
                      "to provide wait_until(std::unique_lock<mutex_type>&, time_point) "
                      "(see importlock/locking/lock_policy.hpp)");
        const std::size_t hash = hasher_(key);
        if (auto module = hit(key, hash)) return module;
        wait_limit limit;
        limit.deadline = deadline_after(timeout);
        return import_slow(key, hash, policy::on_cycle, limit);
    }

    // Imports `key` like import_module_for, waiting until `deadline` at most
    // (on any clock; time_point::max() waits without limit).
    template <class Clock, class Duration>
    std::shared_ptr<Module> import_module_until(
        const Key& key, const std::chrono::time_point<Clock, Duration>& deadline) {
        const auto now = Clock::now();
        if (deadline == std::chrono::time_point<Clock, Duration>::max()) {
            return import_module_for(key, std::chrono::steady_clock::duration::max());
        }
        // deadline - deadline: a zero of the same duration type.
        return import_module_for(key, deadline <= now ? deadline - deadline : deadline - now);
    }

#if defined(__cpp_lib_jthread)
    // Imports `key` like import_module, but stops waiting for other threads'
    // imports of `key` (and of its parents) with import_cancelled_error when
    // `stop` is requested. Once this thread runs the loader it is not
    // interrupted.
    std::shared_ptr<Module> import_module(const Key& key, std::stop_token stop) {
        const std::size_t hash = hasher_(key);
        if (auto module = hit(key, hash)) return module;
        // Wakes this system's waiters so that this one sees the request; the
        // others check their own tokens and wait again.
        std::stop_callback wake(stop, [this] {
            state_lock state(state_mutex_);
            locks_.for_each([](lock_type& lock) { lock.released.notify_all(); });
        });
        wait_limit limit;
        limit.stop = std::move(stop);
        return import_slow(key, hash, policy::on_cycle, limit);
    }
#endif

    // Imports `key` like import_module and returns a reference to the module.
    // A hit takes no lock and writes no shared memory: a probe and one acquire
    // load. See the class comment for how long the reference stays valid.
    Module& import_ref(const Key& key) override {
        const std::size_t hash = hasher_(key);
        if (const entry_type* e = registry_.find(key, hash)) {
            if (Module* module = e->ready.load(std::memory_order_acquire)) return *module;
        }
        return *import_slow(key, hash, policy::on_cycle);
    }

    // Returns a handle on `key` that imports on first use and then costs one
    // acquire load (see module_handle.hpp). Does not import.
    module_handle<basic_import_system> handle(Key key) {
        return module_handle<basic_import_system>(*this, std::move(key));
    }

    // Re-runs the loader of the loaded `key` on the same module object, under
    // `key`'s lock (importlib.reload): holders of the module see the new
    // state, and imports of `key` wait until the reload ends. If the loader
    // throws, the module stays registered and the exception propagates.
    // Throws import_error when `key` is not loaded or this thread is
    // initialising it.
    std::shared_ptr<Module> reload(const Key& key) {
        const std::size_t hash = hasher_(key);
        const auto self = std::this_thread::get_id();
        state_lock state(state_mutex_);
        require_loaded(key, hash, "reload");
        lock_type& lock = locks_.lock_for(key, hash);
        if (acquisition got = acquire(lock, state, key, hash, false, {}); !got.cycle.empty()) {
            throw circular_import_error(
                std::move(got.cycle),
                "reloading it would wait for a thread that waits for this one");
        }
        held_import held(*this, state, key, lock);
        if (held.reentered()) {
            throw import_error(name(key), "cannot reload '" + name(key) +
                                              "' while this thread is initialising it");
        }
        entry_type& e = require_loaded(key, hash, "reload");
        std::shared_ptr<Module> module = e.load_owner();
        e.initializer = self;
        e.ready.store(nullptr, std::memory_order_relaxed);
        e.state.store(entry_state::reloading, std::memory_order_relaxed);
        state.unlock();
        const std::shared_ptr<observer_type> observer = load_observer();
        const auto start = std::chrono::steady_clock::now();
        std::vector<Key> dependencies;
        try {
            std::optional<spec_type> spec = finder_.find_spec(key);
            if (!spec) throw module_not_found_error(name(key));
            if (spec->builder) {
                throw import_error(name(key), "cannot reload '" + name(key) +
                                                  "': it is a single-phase module; erase it "
                                                  "and import it again");
            }
            require_loader(key, *spec);
            recording_importer recorder(*this);
            spec->loader(*module, recorder);
            dependencies = recorder.take();
        } catch (...) {
            if (observer) notify([&] { observer->on_reload(key, since(start), false); });
            state.lock();
            mark_ready(e, module.get());
            throw;
        }
        if (observer) notify([&] { observer->on_reload(key, since(start), true); });
        state.lock();
        e.dependencies.swap(dependencies);
        mark_ready(e, module.get());
        return module;
    }

    // Returns the module registered for `key`, also while it initialises (as
    // sys.modules.get), or null. Never imports; takes no lock.
    std::shared_ptr<Module> get(const Key& key) const override {
        const entry_type* e = registry_.find(key, hasher_(key));
        if (e == nullptr || !holds_module(e->state.load(std::memory_order_acquire))) return {};
        return e->load_owner();
    }

    // Returns whether a module (initialised or not) is registered for `key`.
    bool contains(const Key& key) const {
        const entry_type* e = registry_.find(key, hasher_(key));
        return e != nullptr && holds_module(e->state.load(std::memory_order_acquire));
    }

    // Returns whether `key`'s module is registered and its first load is
    // running (false during a reload, like CPython's spec._initializing).
    bool is_initializing(const Key& key) const {
        const entry_type* e = registry_.find(key, hasher_(key));
        return e != nullptr &&
               e->state.load(std::memory_order_acquire) == entry_state::initializing;
    }

    // Returns whether `key` is blocked (see block).
    bool is_blocked(const Key& key) const {
        const entry_type* e = registry_.find(key, hasher_(key));
        return e != nullptr && e->state.load(std::memory_order_acquire) == entry_state::blocked;
    }

    // Blocks `key`: importing it throws import_halted_error until erase(key)
    // (CPython's `sys.modules[k] = None`). A loaded module is dropped from the
    // registry. Throws import_error while `key` initialises or reloads.
    void block(const Key& key) {
        std::shared_ptr<Module> dropped;  // destroyed after the state mutex is released
        state_lock state(state_mutex_);
        entry_type& e = registry_.find_or_insert(key, hasher_(key));
        refuse_while_in_flight(e, "block");
        dropped = unregister(e, entry_state::blocked);
    }

    // Removes `key`'s module or block from the registry; returns whether there
    // was one. The next import runs the loader again. Invalidates references
    // from import_ref. Throws import_error while `key` initialises or reloads.
    bool erase(const Key& key) {
        std::shared_ptr<Module> dropped;  // destroyed after the state mutex is released
        state_lock state(state_mutex_);
        entry_type* e = registry_.find(key, hasher_(key));
        if (e == nullptr || e->state.load(std::memory_order_relaxed) == entry_state::absent)
            return false;
        refuse_while_in_flight(*e, "erase");
        dropped = unregister(*e, entry_state::absent);
        return true;
    }

    // Drops every initialised module and every block, dependents before their
    // dependencies: in the reverse of the order in which they became ready,
    // which puts each module before the modules its loader imported (folly's
    // singleton teardown). A module is destroyed when its last shared_ptr goes;
    // references from import_ref are invalidated. Modules still initialising
    // or reloading stay. Returns the number of modules dropped.
    std::size_t clear() {
        std::vector<std::pair<std::uint64_t, std::shared_ptr<Module>>> dropped;
        {
            state_lock state(state_mutex_);
            dropped.reserve(size_.load(std::memory_order_relaxed));
            registry_.for_each([&](entry_type& e) {
                const entry_state s = e.state.load(std::memory_order_relaxed);
                if (s == entry_state::ready) {
                    dropped.emplace_back(e.ready_order, unregister(e, entry_state::absent));
                    e.dependencies.clear();
                } else if (s == entry_state::blocked) {
                    unregister(e, entry_state::absent);
                }
            });
        }
        std::sort(dropped.begin(), dropped.end(),
                  [](const auto& a, const auto& b) { return a.first > b.first; });
        for (auto& [order, module] : dropped) module.reset();
        return dropped.size();
    }

    // Returns the keys the last successful load of `key` imported through its
    // importer (the dependency graph's edges from `key`), in first-import
    // order; empty when `key` is not loaded. Imports a loader makes through
    // the system object directly, not its importer, are not recorded.
    std::vector<Key> dependencies(const Key& key) const {
        state_lock state(state_mutex_);
        const entry_type* e = registry_.find(key, hasher_(key));
        if (e == nullptr || !holds_module(e->state.load(std::memory_order_relaxed))) return {};
        return e->dependencies;
    }

    // Returns the loaded keys whose loaders imported `key`. O(modules).
    std::vector<Key> dependents(const Key& key) const {
        state_lock state(state_mutex_);
        std::vector<Key> out;
        registry_.for_each([&](const entry_type& e) {
            if (!holds_module(e.state.load(std::memory_order_relaxed))) return;
            for (const Key& dependency : e.dependencies) {
                if (equal_(dependency, key)) {
                    out.push_back(e.key);
                    break;
                }
            }
        });
        return out;
    }

    // Writes the dependency graph of the registered modules in Graphviz DOT:
    // an edge a -> b when a's loader imported b. Initialising modules are
    // dashed.
    void write_dependency_dot(std::ostream& out) const {
        state_lock state(state_mutex_);
        out << "digraph imports {\n";
        registry_.for_each([&](const entry_type& e) {
            const entry_state s = e.state.load(std::memory_order_relaxed);
            if (!holds_module(s)) return;
            out << "  " << detail::dot_quote(name(e.key))
                << (s == entry_state::ready ? ";\n" : " [style=dashed];\n");
            for (const Key& dependency : e.dependencies) {
                out << "  " << detail::dot_quote(name(e.key)) << " -> "
                    << detail::dot_quote(name(dependency)) << ";\n";
            }
        });
        out << "}\n";
    }

    // Installs `observer` (or removes it, with null) for the imports that
    // start afterwards. See observer.hpp for what its hooks may do.
    void set_observer(std::shared_ptr<import_observer<Key>> observer) {
        const bool installed = observer != nullptr;
        {
            std::lock_guard guard(observer_lock_);
            observer_.swap(observer);
        }
        has_observer_.store(installed, std::memory_order_release);
    }  // the previous observer is released here, outside the lock

    // Returns the installed observer, or null.
    std::shared_ptr<import_observer<Key>> observer() const { return load_observer(); }

    // Returns what the system's imports in flight are doing: which thread
    // initialises which keys, which threads wait for which key and for whom.
    // A thread dump for imports; callable from any thread (e.g. a watchdog),
    // cheap when nothing is in flight.
    import_snapshot snapshot() const {
        import_snapshot out;
        state_lock state(state_mutex_);
        for (const auto& [thread, keys] : stacks_) {
            import_snapshot::thread_state t;
            t.thread = thread;
            for (const Key& key : keys) t.importing.push_back(name(key));
            out.threads.push_back(std::move(t));
        }
        graph_lock graph(waits_.mutex);
        locks_.for_each([&](const lock_type& lock) {
            import_snapshot::lock_state l;
            l.key = lock.describe(lock);
            l.owner = lock.owner;
            l.depth = lock.depth;
            waits_.graph.for_each([&](std::thread::id thread, const detail::wait_node* node) {
                if (node != &lock) return;
                l.waiters.push_back(thread);
                auto it = std::find_if(out.threads.begin(), out.threads.end(),
                                       [&](const auto& t) { return t.thread == thread; });
                if (it == out.threads.end()) {
                    out.threads.emplace_back();
                    it = std::prev(out.threads.end());
                    it->thread = thread;
                }
                it->waiting_for = l.key;
                it->waiting_for_thread = lock.owner;
            });
            out.locks.push_back(std::move(l));
        });
        return out;
    }

    // Returns the number of registered modules, initialised or not.
    std::size_t size() const noexcept { return size_.load(std::memory_order_relaxed); }

    // Returns the number of module locks alive: held or awaited by some
    // thread. It is 0 whenever no import is in flight.
    std::size_t lock_count() const {
        state_lock state(state_mutex_);
        return locks_.size();
    }

    // Returns the number of threads blocked waiting for `key`'s module lock
    // (for global_lock: waiting for the global lock). For diagnostics and
    // tests that must know a thread is parked before they go on.
    std::size_t waiter_count(const Key& key) const {
        state_lock state(state_mutex_);
        std::size_t count = 0;
        locks_.for_each([&](const lock_type& lock) {
            if (lock.key == nullptr || equal_(*lock.key, key)) count += lock.waiters;
        });
        return count;
    }

private:
    using entry_state = detail::entry_state;
    using entry_type = detail::registry_entry<Key, Module>;
    using hasher = typename detail::key_functions<Key>::hasher;
    using key_equal = typename detail::key_functions<Key>::key_equal;
    using mutex_type = typename policy::mutex_type;
    using state_lock = std::unique_lock<mutex_type>;
    using lock_type = detail::module_lock<Key, typename policy::condition_variable_type>;
    using graph_lock = std::lock_guard<std::mutex>;
    using observer_type = import_observer<Key>;

    static constexpr bool timed_waits =
        requires(typename policy::condition_variable_type& cv, state_lock& lock,
                 std::chrono::steady_clock::time_point deadline) { cv.wait_until(lock, deadline); };

    static constexpr bool shares_failures =
        detail::failure_mode_of<policy>() == failure_mode::waiters_share_failure;

    // How an attempt to take a module lock ended without taking it.
    struct acquisition {
        std::vector<std::string> cycle;  // non-empty: waiting would close this cycle
        std::exception_ptr failure;      // non-null: the awaited import failed (shared)
    };

    // How long an import may wait for other threads' imports.
    struct wait_limit {
        std::optional<std::chrono::steady_clock::time_point> deadline;
#if defined(__cpp_lib_jthread)
        std::stop_token stop;
#endif
    };

    // Holds one acquisition of a module lock and this thread's import-stack
    // frame for its key; gives both back, under the state mutex, on exit.
    class held_import {
    public:
        held_import(basic_import_system& system, state_lock& state, const Key& key, lock_type& lock)
            : system_(system), state_(state), key_(key), lock_(lock) {
            try {
                stack_ = &system_.stacks_[std::this_thread::get_id()];
                reentered_ = std::find_if(stack_->begin(), stack_->end(), [&](const Key& k) {
                                 return system_.equal_(k, key_);
                             }) != stack_->end();
                if (!reentered_) {
                    stack_->push_back(key);
                    pushed_ = true;
                }
            } catch (...) {
                release();
                throw;
            }
        }
        held_import(const held_import&) = delete;
        held_import& operator=(const held_import&) = delete;
        ~held_import() {
            if (!state_.owns_lock()) state_.lock();
            if (pushed_) stack_->pop_back();
            release();
        }

        // Returns whether this thread was already importing the key: a
        // circular import on its own stack.
        bool reentered() const noexcept { return reentered_; }

        // Returns this thread's import stack (keys whose locks it holds).
        const std::vector<Key>& stack() const noexcept { return *stack_; }

    private:
        void release() noexcept {
            if (stack_ != nullptr && stack_->empty()) {
                system_.stacks_.erase(std::this_thread::get_id());
            }
            {
                graph_lock graph(system_.waits_.mutex);
                lock_.release();
            }
            system_.locks_.forget_if_unused(lock_);
        }

        basic_import_system& system_;
        state_lock& state_;
        const Key& key_;
        lock_type& lock_;
        std::vector<Key>* stack_ = nullptr;
        bool reentered_ = false;
        bool pushed_ = false;
    };

    // Returns the steady-clock time `timeout` from now, or nullopt (no limit)
    // when that is beyond what the clock can represent.
    template <class Rep, class Period>
    static std::optional<std::chrono::steady_clock::time_point> deadline_after(
        const std::chrono::duration<Rep, Period>& timeout) {
        using steady = std::chrono::steady_clock;
        const steady::time_point now = steady::now();
        if (timeout <= timeout.zero()) return now;
        const auto headroom = steady::time_point::max() - now;
        if (std::chrono::duration<double, Period>(timeout) >=
            std::chrono::duration<double, steady::period>(headroom)) {
            return std::nullopt;
        }
        return now + std::chrono::ceil<steady::duration>(timeout);
    }

    // Returns the installed observer or null; one atomic load when none.
    std::shared_ptr<observer_type> load_observer() const {
        if (!has_observer_.load(std::memory_order_acquire)) return nullptr;
        std::lock_guard guard(observer_lock_);
        return observer_;
    }

    // Returns the fully initialised module of `key`, or null. Lock-free.
    std::shared_ptr<Module> hit(const Key& key, std::size_t hash) const {
        if (const entry_type* e = registry_.find(key, hash);
            e != nullptr && e->ready.load(std::memory_order_acquire) != nullptr) {
            return e->load_owner();
        }
        return nullptr;
    }

    static bool holds_module(entry_state s) noexcept {
        return s == entry_state::initializing || s == entry_state::ready ||
               s == entry_state::reloading;
    }

    static std::string name(const Key& key) { return traits_type::to_string(key); }

    // The slow path of import_module: parent first, then `key`'s lock.
    std::shared_ptr<Module> import_slow(const Key& key, std::size_t hash, cycle_resolution on_cycle,
                                        const wait_limit& limit = {}) {
        std::shared_ptr<Module> parent;
        if (std::optional<Key> parent_key = traits_type::parent(key)) {
            parent = import_parent(*parent_key, on_cycle, limit);
        }
        state_lock state(state_mutex_);
        if (std::shared_ptr<Module> done = registered_or_halted(key, hash)) return done;
        lock_type& lock = locks_.lock_for(key, hash);
        acquisition got = acquire(lock, state, key, hash, shares_failures, limit);
        if (!got.cycle.empty()) {
            return resolve_cycle(key, hash, std::move(got.cycle), on_cycle,
                                 "another thread importing it waits for this one");
        }
        if (got.failure) std::rethrow_exception(got.failure);
        held_import held(*this, state, key, lock);
        if (held.reentered()) {
            std::vector<std::string> chain;
            const auto& stack = held.stack();
            auto first = std::find_if(stack.begin(), stack.end(),
                                      [&](const Key& k) { return equal_(k, key); });
            for (; first != stack.end(); ++first) chain.push_back(name(*first));
            chain.push_back(name(key));
            return resolve_cycle(key, hash, std::move(chain), on_cycle,
                                 "this thread is already importing it");
        }
        if (std::shared_ptr<Module> done = registered_or_halted(key, hash)) return done;
        state.unlock();
        const std::shared_ptr<observer_type> observer = load_observer();
        const auto start = std::chrono::steady_clock::now();
        try {
            if (observer) observer->on_import_begin(key);
            std::shared_ptr<Module> module = load(key, hash, parent, state);
            if (observer) {
                state.unlock();
                notify([&] { observer->on_import_end(key, since(start)); });
            }
            return module;
        } catch (...) {
            if (observer) {
                if (state.owns_lock()) state.unlock();
                notify([&] { observer->on_import_failed(key, std::current_exception()); });
            }
            share_failure(key, hash, lock, state);
            throw;
        }
    }

    // Calls an outcome hook of the observer; its exceptions are swallowed so
    // that the import's outcome stands (see observer.hpp).
    template <class Hook>
    static void notify(Hook&& hook) noexcept {
        try {
            hook();
        } catch (...) {
        }
    }

    static std::chrono::nanoseconds since(std::chrono::steady_clock::time_point start) {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::steady_clock::now() - start);
    }

    // Finds, creates, registers and initialises `key`, whose lock this thread
    // holds (CPython's _find_and_load_unlocked). Called and returns with the
    // state mutex released; on success it returns with it held.
    std::shared_ptr<Module> load(const Key& key, std::size_t hash,
                                 const std::shared_ptr<Module>& parent, state_lock& state) {
        std::optional<spec_type> spec = finder_.find_spec(key);
        if (!spec) throw module_not_found_error(name(key));
        recording_importer recorder(*this);
        if (spec->builder) {
            // Single-phase: nothing is registered until the module is finished.
            std::shared_ptr<Module> module = spec->builder(key, recorder);
            if (!module) {
                throw import_error(name(key), "the builder of '" + name(key) + "' returned null");
            }
            if (parent) module_traits<Module>::bind_child(*parent, key, module);
            std::vector<Key> dependencies = recorder.take();
            state.lock();
            entry_type& e = publish_or_drop(key, hash, module, state);
            e.dependencies.swap(dependencies);
            mark_ready(e, module.get());
            return module;
        }
        require_loader(key, *spec);
        std::shared_ptr<Module> module = create(key, *spec);
        state.lock();
        entry_type& e = publish_or_drop(key, hash, module, state);
        state.unlock();
        std::vector<Key> dependencies;
        try {
            spec->loader(*module, recorder);
            // Bound before it is marked ready: no thread sees a ready child
            // missing from its parent (gh-149728).
            if (parent) module_traits<Module>::bind_child(*parent, key, module);
            dependencies = recorder.take();
        } catch (...) {
            state.lock();
            unregister(e, entry_state::absent);
            state.unlock();
            module.reset();  // a destructor that imports must not run under the state mutex
            throw;
        }
        state.lock();
        e.dependencies.swap(dependencies);
        mark_ready(e, module.get());
        return module;
    }

    // The importer a loader gets: forwards to the system and records the keys
    // imported, the edges of the dependency graph. Thread-safe, for a loader
    // that hands it to a helper thread.
    class recording_importer final : public importer<Key, Module> {
    public:
        explicit recording_importer(basic_import_system& system) : system_(system) {}

        std::shared_ptr<Module> import_module(const Key& key) override {
            record(key);
            return system_.import_module(key);
        }
        Module& import_ref(const Key& key) override {
            record(key);
            return system_.import_ref(key);
        }
        std::shared_ptr<Module> get(const Key& key) const override { return system_.get(key); }

        // Returns the keys imported so far, each once, in first-import order.
        std::vector<Key> take() {
            std::lock_guard lock(mutex_);
            return std::move(imported_);
        }

    private:
        void record(const Key& key) {
            std::lock_guard lock(mutex_);
            const bool seen = std::any_of(imported_.begin(), imported_.end(),
                                          [&](const Key& k) { return system_.equal_(k, key); });
            if (!seen) imported_.push_back(key);
        }

        basic_import_system& system_;
        std::mutex mutex_;
        std::vector<Key> imported_;
    };

    // Registers `module` as the initialising module of `key`, before its
    // loader runs (CPython inserts into sys.modules before exec_module).
    // State mutex held. Throws import_halted_error if `key` was blocked
    // meanwhile.
    entry_type& publish(const Key& key, std::size_t hash, const std::shared_ptr<Module>& module) {
        entry_type& e = registry_.find_or_insert(key, hash);
        if (e.state.load(std::memory_order_relaxed) == entry_state::blocked) {
            throw import_halted_error(name(key));
        }
        e.exchange_owner(module);
        e.initializer = std::this_thread::get_id();
        e.state.store(entry_state::initializing, std::memory_order_release);
        size_.fetch_add(1, std::memory_order_relaxed);
        return e;
    }

    // publish(), but if it throws (the key was blocked meanwhile, or no
    // memory), drops `module` after releasing the state mutex, so that its
    // destructor never runs under it.
    entry_type& publish_or_drop(const Key& key, std::size_t hash, std::shared_ptr<Module>& module,
                                state_lock& state) {
        try {
            return publish(key, hash, module);
        } catch (...) {
            state.unlock();
            module.reset();
            throw;
        }
    }

    // Hands the exception being handled to the threads waiting on `key`, when
    // the policy shares failures. Called from a catch block; relocks `state`.
    void share_failure(const Key& key, std::size_t hash, const lock_type& lock, state_lock& state) {
        if constexpr (shares_failures) {
            if (!state.owns_lock()) state.lock();
            if (lock.waiters == 0) return;
            try {
                entry_type& e = registry_.find_or_insert(key, hash);
                ++e.failures;
                e.last_failure = std::current_exception();
            } catch (...) {
                // Out of memory: the waiters retry instead, as with waiters_retry.
            }
        } else {
            (void)key, (void)hash, (void)lock, (void)state;
        }
    }

    // Returns how many imports of `key` failed so far. State mutex held.
    std::uint32_t failures_of(const Key& key, std::size_t hash) const {
        const entry_type* e = registry_.find(key, hash);
        return e == nullptr ? 0 : e->failures;
    }

    // Imports the parent of a key about to be imported. A parent that this
    // thread is initialising is returned partial under every policy: the
    // child needs it only to bind itself (CPython's package __init__ that
    // imports its own submodule).
    std::shared_ptr<Module> import_parent(const Key& parent_key, cycle_resolution on_cycle,
                                          const wait_limit& limit) {
        const std::size_t hash = hasher_(parent_key);
        if (auto module = hit(parent_key, hash)) return module;
        {
            state_lock state(state_mutex_);
            const entry_type* e = registry_.find(parent_key, hash);
            // Initialising or reloading on this thread: a package whose
            // (re)load imports its own child.
            if (e != nullptr && e->initializer == std::this_thread::get_id() &&
                holds_module(e->state.load(std::memory_order_relaxed))) {
                return e->load_owner();
            }
        }
        return import_slow(parent_key, hash, on_cycle, limit);
    }

    // Returns the ready module of `key`, throws for a blocked key, else null.
    // State mutex held.
    std::shared_ptr<Module> registered_or_halted(const Key& key, std::size_t hash) const {
        const entry_type* e = registry_.find(key, hash);
        if (e == nullptr) return {};
        switch (e->state.load(std::memory_order_relaxed)) {
            case entry_state::ready: return e->load_owner();
            case entry_state::blocked: throw import_halted_error(name(key));
            default: return {};
        }
    }

    // Takes `lock` for this thread, waiting while another thread holds it.
    // Returns without the lock when waiting would deadlock (the cycle's keys,
    // from the key this thread holds: "a -> b -> a") or, with
    // `share_failures`, when an import of `key` failed while this thread
    // waited. Throws import_timeout_error / import_cancelled_error when
    // `limit` runs out first. Checking the process-wide wait-for graph and
    // registering in it happen under the graph's mutex in one step. State
    // mutex held throughout (released while waiting).
    acquisition acquire(lock_type& lock, state_lock& state, const Key& key, std::size_t hash,
                        bool share_failures, const wait_limit& limit) {
        const auto self = std::this_thread::get_id();
        const std::uint32_t failures_before = share_failures ? failures_of(key, hash) : 0;
        for (;;) {
            std::vector<std::pair<std::string, std::thread::id>> cycle_locks;
            {
                graph_lock graph(waits_.mutex);
                if (lock.try_acquire(self)) return {};
                // Described under the graph's mutex: the chain's locks cannot
                // be released, so not destroyed, meanwhile.
                for (const detail::wait_node* node : waits_.graph.find_cycle(self, &lock)) {
                    cycle_locks.emplace_back(node->describe(*node), node->owner);
                }
                if (cycle_locks.empty()) {
#if defined(__cpp_lib_jthread)
                    if (limit.stop.stop_requested()) {
                        throw import_cancelled_error(name(key), lock.owner);
                    }
#endif
                    if (limit.deadline && std::chrono::steady_clock::now() >= *limit.deadline) {
                        throw import_timeout_error(name(key), lock.owner);
                    }
                    waits_.graph.add_wait(self, &lock);
                }
            }
            if (!cycle_locks.empty()) return {import_chain(self, cycle_locks), nullptr};
            {
                ++lock.waiters;
                detail::scope_exit unwait([&]() noexcept {
                    --lock.waiters;
                    graph_lock graph(waits_.mutex);
                    waits_.graph.remove_wait(self);
                });
                if (const auto observer = load_observer()) {
                    observer->on_wait(key, lock.owner);  // owner is stable under the state mutex
                }
                if constexpr (timed_waits) {
                    if (limit.deadline) {
                        lock.released.wait_until(state, *limit.deadline);
                    } else {
                        lock.released.wait(state);
                    }
                } else {
                    lock.released.wait(state);
                }
            }
            if (share_failures) {
                const entry_type* e = registry_.find(key, hash);
                if (e != nullptr && e->failures != failures_before && e->last_failure) {
                    locks_.forget_if_unused(lock);
                    return {{}, e->last_failure};
                }
            }
        }
    }

    // Returns the imports that form a cross-thread cycle, "a -> c -> b -> d ->
    // a": starting at the lock this thread holds, each lock's key followed by
    // the keys its owner imported on top of it (from this system's import
    // stacks; a lock of another system contributes its key only). `locks`
    // runs from the lock wanted to the one this thread holds, with owners.
    // State mutex held.
    std::vector<std::string> import_chain(
        std::thread::id self,
        const std::vector<std::pair<std::string, std::thread::id>>& locks) const {
        const auto stacked_above = [&](std::thread::id thread, const std::string& key,
                                       std::vector<std::string>& out) {
            const auto it = stacks_.find(thread);
            if (it == stacks_.end()) return;
            const std::vector<Key>& stack = it->second;
            for (std::size_t i = 0; i < stack.size(); ++i) {
                if (name(stack[i]) != key) continue;
                for (std::size_t j = i + 1; j < stack.size(); ++j) out.push_back(name(stack[j]));
                return;
            }
        };
        std::vector<std::string> chain;
        chain.push_back(locks.back().first);
        stacked_above(self, locks.back().first, chain);
        for (std::size_t i = 0; i + 1 < locks.size(); ++i) {
            chain.push_back(locks[i].first);
            stacked_above(locks[i].second, locks[i].first, chain);
        }
        chain.push_back(locks.back().first);
        return chain;
    }

    // Gives the partial module of `key` to an import that closed a cycle, or
    // throws circular_import_error when the policy says so or no module
    // exists yet. State mutex held.
    std::shared_ptr<Module> resolve_cycle(const Key& key, std::size_t hash,
                                          std::vector<std::string> chain, cycle_resolution on_cycle,
                                          const char* why) {
        const auto observer = load_observer();
        if (on_cycle == cycle_resolution::partial_module) {
            const entry_type* e = registry_.find(key, hash);
            if (e != nullptr && holds_module(e->state.load(std::memory_order_relaxed))) {
                if (observer) notify([&] { observer->on_cycle(key, chain, true); });
                return e->load_owner();
            }
            why = "it has no module object yet: its builder, finder or factory is still running";
        }
        if (observer) notify([&] { observer->on_cycle(key, chain, false); });
        throw circular_import_error(std::move(chain), std::string("'") + name(key) + "': " + why);
    }

    static void require_loader(const Key& key, const spec_type& spec) {
        if (!spec.loader) {
            throw import_error(name(key), "the spec found for '" + name(key) + "' has no loader");
        }
    }

    // Creates the module object of `key` (CPython's module_from_spec).
    static std::shared_ptr<Module> create(const Key& key, const spec_type& spec) {
        if (spec.factory) {
            std::shared_ptr<Module> module = spec.factory(key);
            if (!module) {
                throw import_error(name(key),
                                   "the module factory of '" + name(key) + "' returned null");
            }
            return module;
        } else if constexpr (std::is_default_constructible_v<Module>) {
            return std::make_shared<Module>();
        } else {
            throw import_error(name(key), "'" + name(key) +
                                              "' has no module factory and the module type is "
                                              "not default-constructible");
        }
    }

    // Returns the entry of a loaded `key`, or throws. State mutex held.
    entry_type& require_loaded(const Key& key, std::size_t hash, const char* operation) {
        entry_type* e = registry_.find(key, hash);
        const entry_state s =
            e == nullptr ? entry_state::absent : e->state.load(std::memory_order_relaxed);
        if (s == entry_state::blocked) throw import_halted_error(name(key));
        if (s == entry_state::absent) {
            throw import_error(name(key), std::string("cannot ") + operation + " '" + name(key) +
                                              "': it is not loaded");
        }
        return *e;
    }

    // Throws when `e` initialises or reloads. State mutex held.
    static void refuse_while_in_flight(const entry_type& e, const char* operation) {
        const entry_state s = e.state.load(std::memory_order_relaxed);
        if (s == entry_state::initializing || s == entry_state::reloading) {
            throw import_error(name(e.key),
                               std::string("cannot ") + operation + " '" + name(e.key) +
                                   "' while it is being " +
                                   (s == entry_state::reloading ? "reloaded" : "initialised"));
        }
    }

    // Publishes `module` as the finished module of `e`. State mutex held.
    void mark_ready(entry_type& e, Module* module) noexcept {
        e.initializer = {};
        e.last_failure = nullptr;
        e.ready_order = ++ready_count_;
        e.state.store(entry_state::ready, std::memory_order_release);
        e.ready.store(module, std::memory_order_release);
    }

    // Returns the entry of `key` or null; lock-free (for module_handle).
    const entry_type* find_entry(const Key& key) const { return registry_.find(key, hasher_(key)); }

    friend class module_handle<basic_import_system>;

    // Drops the module of `e` and gives `e` the state `next`; returns the
    // module so that the caller destroys it outside the state mutex.
    std::shared_ptr<Module> unregister(entry_type& e, entry_state next) noexcept {
        if (holds_module(e.state.load(std::memory_order_relaxed))) {
            size_.fetch_sub(1, std::memory_order_relaxed);
        }
        e.ready.store(nullptr, std::memory_order_relaxed);
        e.state.store(next, std::memory_order_release);
        return e.exchange_owner(nullptr);
    }

    [[no_unique_address]] hasher hasher_{};
    [[no_unique_address]] key_equal equal_{};
    mutable mutex_type state_mutex_;  // guards all below but the registry's reads
    detail::registry<Key, Module, hasher, key_equal> registry_;
    detail::lock_map<policy::scope, Key, lock_type, key_equal> locks_;
    std::unordered_map<std::thread::id, std::vector<Key>> stacks_;  // keys each thread imports
    detail::process_wait_graph& waits_ = detail::process_wait_graph::instance();
    std::atomic<std::size_t> size_{0};
    std::uint64_t ready_count_ = 0;  // modules that became ready, ever
    // The observer: a flag for the common case of none, and the pointer under
    // a spin lock (see detail/spin_lock.hpp).
    std::atomic<bool> has_observer_{false};
    mutable detail::spin_lock observer_lock_;
    std::shared_ptr<observer_type> observer_;
    checked_finder_type finder_;
};

// The everyday alias: std::string keys, per-key locks, a registry finder.
template <class Module>
using import_system = basic_import_system<std::string, Module>;

}  // namespace importlock
