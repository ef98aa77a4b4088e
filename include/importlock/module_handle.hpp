// SPDX-License-Identifier: BSL-1.0
// importlock/module_handle.hpp: resolved references to one key's module.
//
// module_handle:        imports on first use, then one acquire load per use; returns
//                       references with import_ref's validity; one handle may be
//                       shared by many threads.
// shared_module_handle: the same, but owns the module it returns (a std::shared_ptr),
//                       so the module outlives erase, block and clear for as long as
//                       the handle holds it; one acquire load and a comparison per use,
//                       no shared write (import_module copies a shared_ptr per call);
//                       one handle per thread.
#pragma once

#include <atomic>
#include <memory>
#include <utility>

namespace importlock {

// Refers to one key of one import system, like a function-local static: the
// first use imports the key, later uses cost one acquire load and a branch.
// Hold it in a member variable to depend on a module without a lookup per use.
//
// Thread-safety: one handle may be used from many threads at once. The handle
// notices erase() and block(): after them its next use imports again (or
// throws import_halted_error), never returns the dropped module. References
// it returns follow import_ref's validity rules. Once resolved, the handle
// keeps the key's registry entry (not its module) alive, so that a use stays
// one load: the entry is freed after the last handle to it is destroyed.
// Precondition: the system outlives the handle (its destructor releases the
// entry).
template <class System>
class module_handle {
public:
    using system_type = System;
    using key_type = typename System::key_type;
    using module_type = typename System::module_type;

    // Binds the handle to `key` of `system`; does not import.
    module_handle(System& system, key_type key) : system_(&system), key_(std::move(key)) {}

    module_handle(const module_handle& other)
        : system_(other.system_),
          key_(other.key_),
          entry_(other.entry_.load(std::memory_order_acquire)) {
        if (const entry_type* e = entry_.load(std::memory_order_relaxed)) System::add_pin(*e);
    }
    module_handle(module_handle&& other) noexcept
        : system_(other.system_),
          key_(std::move(other.key_)),
          entry_(other.entry_.exchange(nullptr, std::memory_order_acq_rel)) {}

    // Not thread-safe against uses of this handle on other threads.
    module_handle& operator=(const module_handle& other) {
        if (this == &other) return *this;
        key_type key = other.key_;  // may throw: nothing changed yet
        const entry_type* e = other.entry_.load(std::memory_order_acquire);
        if (e != nullptr) System::add_pin(*e);
        release();
        system_ = other.system_;
        key_ = std::move(key);
        entry_.store(e, std::memory_order_release);
        return *this;
    }
    module_handle& operator=(module_handle&& other) noexcept {
        if (this == &other) return *this;
        release();
        system_ = other.system_;
        key_ = std::move(other.key_);
        entry_.store(other.entry_.exchange(nullptr, std::memory_order_acq_rel),
                     std::memory_order_release);
        return *this;
    }

    // Releases the registry entry the handle kept (see resolve()).
    ~module_handle() { release(); }

    // Returns the module, importing it on first use (see System::import_ref).
    module_type& get() const {
        if (const entry_type* e = entry_.load(std::memory_order_acquire)) {
            if (module_type* module = e->ready_module()) return *module;
        }
        return resolve();
    }

    module_type& operator*() const { return get(); }
    module_type* operator->() const { return &get(); }

    // Returns an owning pointer to the module, importing it if needed.
    std::shared_ptr<module_type> share() const { return system_->import_module(key_); }

    // Returns the key the handle refers to.
    const key_type& key() const noexcept { return key_; }

    // Returns the system the handle imports from.
    System& system() const noexcept { return *system_; }

private:
    using entry_type = typename System::entry_type;

    // Imports through the system, then caches the key's registry entry,
    // pinned: an entry is kept while a handle pins it, through erase, block
    // and clear (the registry frees entries nothing refers to).
    module_type& resolve() const {
        module_type& module = system_->import_ref(key_);
        if (entry_.load(std::memory_order_acquire) == nullptr) {
            if (const entry_type* e = system_->pin_entry(key_)) {
                const entry_type* none = nullptr;
                // Another thread's resolve() cached it first: keep one pin.
                if (!entry_.compare_exchange_strong(none, e, std::memory_order_acq_rel)) {
                    system_->unpin(*e);
                }
            }
        }
        return module;
    }
    void release() noexcept {
        if (const entry_type* e = entry_.exchange(nullptr, std::memory_order_acq_rel)) {
            system_->unpin(*e);
        }
    }

    System* system_;
    key_type key_;
    mutable std::atomic<const entry_type*> entry_{nullptr};
};

// An owning handle to one key of one import system: the first use imports the key
// (System::import_module) and keeps the std::shared_ptr it returns; each later use
// checks with one acquire load that the system still publishes that module as ready
// and returns it: no lock and no shared write, so hits scale with threads (an
// import_module hit increments the shared reference count each call).
//
// Freshness: when the key was erased, blocked, cleared or is being reloaded, the
// system no longer publishes the owned module as ready, and the next use imports
// again (waiting for a reload, importing anew after an erase, throwing
// import_halted_error for a block), then owns the new result. The module owned before
// stays alive until then: a module the handle returned is never destroyed while the
// handle holds it. If that import throws, the handle keeps what it owned (strong
// guarantee). A partial module (a cycle under the partial-module policy) is returned
// but never taken as ready: the next use imports again.
//
// Thread-safety: like the std::shared_ptr it holds: distinct handles may be used on
// any threads at once, also for the same key; one handle object is used by one thread
// at a time (copy it for each thread: a copy costs one reference-count increment).
// Like module_handle, it keeps the key's registry entry alive once resolved.
// Precondition: the system outlives the handle (its destructor releases the entry).
//
// Cost: a use after the first is one acquire load of the key's registry entry and a
// comparison; a refresh is an import_module.
template <class System>
class shared_module_handle {
public:
    using system_type = System;
    using key_type = typename System::key_type;
    using module_type = typename System::module_type;

    // Binds the handle to `key` of `system`; does not import.
    shared_module_handle(System& system, key_type key) : system_(&system), key_(std::move(key)) {}

    shared_module_handle(const shared_module_handle& other)
        : system_(other.system_), key_(other.key_), entry_(other.entry_), owned_(other.owned_) {
        if (entry_ != nullptr) System::add_pin(*entry_);
    }
    shared_module_handle(shared_module_handle&& other) noexcept
        : system_(other.system_),
          key_(std::move(other.key_)),
          entry_(std::exchange(other.entry_, nullptr)),
          owned_(std::move(other.owned_)) {}
    shared_module_handle& operator=(const shared_module_handle& other) {
        if (this != &other) *this = shared_module_handle(other);
        return *this;
    }
    shared_module_handle& operator=(shared_module_handle&& other) noexcept {
        if (this == &other) return *this;
        if (entry_ != nullptr) system_->unpin(*entry_);
        system_ = other.system_;
        key_ = std::move(other.key_);
        entry_ = std::exchange(other.entry_, nullptr);
        owned_ = std::move(other.owned_);
        return *this;
    }
    // Releases the registry entry the handle kept (see refresh()).
    ~shared_module_handle() {
        if (entry_ != nullptr) system_->unpin(*entry_);
    }

    // Returns the owned module, importing it first when the system does not publish it
    // as ready (the first use, or after erase, block, clear or during a reload).
    const std::shared_ptr<module_type>& get() {
        if (entry_ != nullptr) {
            const module_type* ready = entry_->ready_module();
            if (ready != nullptr && ready == owned_.get()) return owned_;
        }
        return refresh();
    }

    module_type& operator*() { return *get(); }
    module_type* operator->() { return get().get(); }

    // Returns what the handle owns, without checking or importing (null before the
    // first use and after reset()).
    const std::shared_ptr<module_type>& owned() const noexcept { return owned_; }

    // Drops the owned module; the next use imports.
    void reset() noexcept { owned_.reset(); }

    // Returns the key the handle refers to.
    const key_type& key() const noexcept { return key_; }

    // Returns the system the handle imports from.
    System& system() const noexcept { return *system_; }

private:
    using entry_type = typename System::entry_type;

    // Imports, then owns the result; the key's registry entry is looked up
    // once and pinned: kept while the handle pins it, through erase, block
    // and clear (the registry frees entries nothing refers to).
    const std::shared_ptr<module_type>& refresh() {
        std::shared_ptr<module_type> module = system_->import_module(key_);
        if (entry_ == nullptr) entry_ = system_->pin_entry(key_);
        owned_ = std::move(module);
        return owned_;
    }

    System* system_;
    key_type key_;
    const entry_type* entry_ = nullptr;
    std::shared_ptr<module_type> owned_;
};

}  // namespace importlock
