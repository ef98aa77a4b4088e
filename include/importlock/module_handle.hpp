// SPDX-License-Identifier: BSL-1.0
// importlock/module_handle.hpp: a resolved reference to one key's module.
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
// it returns follow import_ref's validity rules. Precondition: the system
// outlives the handle.
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
          entry_(other.entry_.load(std::memory_order_acquire)) {}

    module_handle& operator=(const module_handle& other) {
        system_ = other.system_;
        key_ = other.key_;
        entry_.store(other.entry_.load(std::memory_order_acquire), std::memory_order_release);
        return *this;
    }

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

    // Imports through the system, then caches the registry entry, whose
    // address is stable for the system's lifetime.
    module_type& resolve() const {
        module_type& module = system_->import_ref(key_);
        if (entry_.load(std::memory_order_relaxed) == nullptr) {
            entry_.store(system_->find_entry(key_), std::memory_order_release);
        }
        return module;
    }

    System* system_;
    key_type key_;
    mutable std::atomic<const entry_type*> entry_{nullptr};
};

}  // namespace importlock
