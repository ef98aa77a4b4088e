// importlock/finders/registry_finder.hpp: a run-time table of loaders.
#pragma once

#include <cstddef>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <unordered_map>
#include <utility>

#include "../key_traits.hpp"
#include "../module_spec.hpp"

namespace importlock {

// Finds specs in a table filled at run time with define(). The default finder.
//
// Thread-safety: every member may be called from any thread, also while
// imports run; a definition changed during an import affects the imports that
// call find_spec afterwards. Cost: O(1) expected under a shared lock.
template <class Key, class Module, class Hash = typename key_traits<Key>::hasher,
          class KeyEqual = typename key_traits<Key>::key_equal>
class registry_finder {
public:
    using spec_type = module_spec<Key, Module>;
    using loader_type = typename spec_type::loader_type;
    using factory_type = typename spec_type::factory_type;

    // Defines (or redefines) the loader of `key`: `void(Module&, importer<Key, Module>&)`.
    void define(const Key& key, loader_type loader) {
        define(key, spec_type{std::move(loader), nullptr});
    }

    // Defines (or redefines) the loader and module factory of `key`.
    void define(const Key& key, loader_type loader, factory_type factory) {
        define(key, spec_type{std::move(loader), std::move(factory)});
    }

    // Defines (or redefines) `key` from a whole spec.
    void define(const Key& key, spec_type spec) {
        std::unique_lock lock(mutex_);
        specs_.insert_or_assign(key, std::move(spec));
    }

    // Removes the definition of `key`; returns whether it existed. Modules
    // already imported stay registered.
    bool undefine(const Key& key) {
        std::unique_lock lock(mutex_);
        return specs_.erase(key) != 0;
    }

    // Returns whether `key` has a definition.
    bool defines(const Key& key) const {
        std::shared_lock lock(mutex_);
        return specs_.find(key) != specs_.end();
    }

    // Returns the number of definitions.
    std::size_t size() const {
        std::shared_lock lock(mutex_);
        return specs_.size();
    }

    // Returns a copy of the spec of `key`, or nullopt.
    std::optional<spec_type> find_spec(const Key& key) const {
        std::shared_lock lock(mutex_);
        const auto it = specs_.find(key);
        if (it == specs_.end()) return std::nullopt;
        return it->second;
    }

private:
    mutable std::shared_mutex mutex_;
    std::unordered_map<Key, spec_type, Hash, KeyEqual> specs_;
};

}  // namespace importlock
