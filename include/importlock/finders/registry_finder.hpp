// SPDX-License-Identifier: BSL-1.0
// importlock/finders/registry_finder.hpp: a run-time table of loaders.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "../detail/flat_map.hpp"
#include "../detail/shared_spin_lock.hpp"
#include "../importer.hpp"
#include "../key_traits.hpp"
#include "../module_spec.hpp"
#include "finder_policy.hpp"

namespace importlock {

// Finds specs in a table filled at run time with define(). The default finder.
//
// Thread-safety: every member may be called from any thread, also while
// imports run; a definition changed during an import affects the imports that
// call find_spec afterwards. The table is split into 8 stripes by key hash,
// each an open-addressing table (detail/flat_map.hpp: a slot holds the hash
// and a pointer to the key and its spec) under its own reader-writer lock, so
// that cold imports of different keys on different threads rarely touch the
// same lock. The stripe locks are reader-writer spin locks held only for the
// lookup and the copy (detail/shared_spin_lock.hpp): a find_spec costs two
// atomic operations besides the lookup and the copy of the spec. Cost: O(1)
// expected under one stripe's shared lock (define: exclusive); size() and
// copies lock every stripe in turn.
template <class Key, class Module, class Hash = typename key_traits<Key>::hasher,
          class KeyEqual = typename key_traits<Key>::key_equal>
class registry_finder {
public:
    using spec_type = module_spec<Key, Module>;
    using loader_type = typename spec_type::loader_type;
    using factory_type = typename spec_type::factory_type;

    registry_finder() = default;

    // Copies or moves the definitions (the source is locked meanwhile).
    registry_finder(const registry_finder& other) { assign(other.copy_specs()); }
    registry_finder(registry_finder&& other) { assign(other.take_specs()); }
    registry_finder& operator=(const registry_finder& other) {
        if (this != &other) assign(other.copy_specs());
        return *this;
    }
    registry_finder& operator=(registry_finder&& other) {
        if (this != &other) assign(other.take_specs());
        return *this;
    }

    // Defines (or redefines) the loader of `key`: a callable as
    // `void(Module&, importer<Key, Module>&)`. Anything else is rejected with one
    // static_assert naming that signature.
    template <class Loader>
        requires(!std::is_convertible_v<Loader, spec_type>)
    void define(const Key& key, Loader loader) {
        static_assert(
            is_loader<Loader>,
            "importlock: a loader must be callable as void(Module&, importer<Key, Module>&), "
            "e.g. [](Module& m, auto& imp) { ... } (see importlock/module_spec.hpp)");
        if constexpr (is_loader<Loader>) {
            define(key, spec_type{loader_type(std::move(loader)), nullptr, nullptr});
        }
    }

    // Defines (or redefines) the loader and module factory of `key`; the factory is
    // callable as `std::shared_ptr<Module>(const Key&)`.
    template <class Loader, class Factory>
    void define(const Key& key, Loader loader, Factory factory) {
        static_assert(
            is_loader<Loader>,
            "importlock: a loader must be callable as void(Module&, importer<Key, Module>&), "
            "e.g. [](Module& m, auto& imp) { ... } (see importlock/module_spec.hpp)");
        static_assert(std::is_constructible_v<factory_type, Factory>,
                      "importlock: a module factory must be callable as "
                      "std::shared_ptr<Module>(const Key&)");
        if constexpr (is_loader<Loader> && std::is_constructible_v<factory_type, Factory>) {
            define(key, spec_type{loader_type(std::move(loader)), factory_type(std::move(factory)),
                                  nullptr});
        }
    }

    // Defines (or redefines) `key` as a single-phase module: `build(importer&)`
    // returns the finished module (a std::shared_ptr<Module>, or a Module by
    // value). No partial object exists, so a cycle through `key` throws
    // circular_import_error under every lock policy.
    template <class Build>
        requires std::invocable<Build&, importer<Key, Module>&>
    void define_value(const Key& key, Build build) {
        spec_type spec;
        spec.builder = [build = std::move(build)](
                           const Key&,
                           importer<Key, Module>& imp) mutable -> std::shared_ptr<Module> {
            using result = std::invoke_result_t<Build&, importer<Key, Module>&>;
            if constexpr (std::is_convertible_v<result, std::shared_ptr<Module>>) {
                return build(imp);
            } else {
                return std::make_shared<Module>(build(imp));
            }
        };
        define(key, std::move(spec));
    }

    // Defines (or redefines) `key` from a whole spec.
    void define(const Key& key, spec_type spec) {
        stripe& st = stripe_of(key);
        spec_type old;  // a replaced spec is destroyed after the lock: its captures may run code
        detail::shared_spin_lock::unique_guard lock(st.mutex);
        if (spec_type* found = st.specs.find(key)) {
            old = std::move(*found);
            *found = std::move(spec);
            return;
        }
        st.specs.insert_new(key, std::move(spec));
    }

    // Removes the definition of `key`; returns whether it existed. Modules
    // already imported stay registered.
    bool undefine(const Key& key) {
        stripe& st = stripe_of(key);
        spec_type old;  // destroyed after the lock, as in define
        detail::shared_spin_lock::unique_guard lock(st.mutex);
        return st.specs.erase(key, &old);
    }

    // Returns whether `key` has a definition.
    bool defines(const Key& key) const {
        const stripe& st = stripe_of(key);
        detail::shared_spin_lock::shared_guard lock(st.mutex);
        return st.specs.find(key) != nullptr;
    }

    // Returns the number of definitions (each stripe counted under its lock).
    std::size_t size() const {
        std::size_t n = 0;
        for (const stripe& st : stripes_) {
            detail::shared_spin_lock::shared_guard lock(st.mutex);
            n += st.specs.size();
        }
        return n;
    }

    // Returns a copy of the spec of `key`, or nullopt.
    std::optional<spec_type> find_spec(const Key& key) const {
        const stripe& st = stripe_of(key);
        detail::shared_spin_lock::shared_guard lock(st.mutex);
        if (const spec_type* found = st.specs.find(key)) return *found;
        return std::nullopt;
    }

    // Says how `key` could be found (see finder_policy.hpp):
    // `define it with finder().define("db", ...)`.
    std::string not_found_hint(const Key& key) const {
        std::string shown = key_traits<Key>::to_string(key);
        if constexpr (std::is_convertible_v<const Key&, std::string>) shown = '"' + shown + '"';
        return "define it with finder().define(" + shown + ", ...)";
    }

private:
    // A loader: callable on the module being initialised and the importer.
    template <class Loader>
    static constexpr bool is_loader =
        std::is_invocable_v<Loader&, Module&, importer<Key, Module>&> &&
        std::is_constructible_v<loader_type, Loader>;

    using spec_map = detail::flat_map<Key, spec_type, Hash, KeyEqual>;
    static constexpr std::size_t stripe_count = 8;

    struct alignas(64) stripe {
        mutable detail::shared_spin_lock mutex;
        spec_map specs;
    };

    const stripe& stripe_of(const Key& key) const {
        const auto h = static_cast<std::uint64_t>(Hash{}(key)) * 0x9E3779B97F4A7C15ull;
        return stripes_[(h >> 32) & (stripe_count - 1)];
    }
    stripe& stripe_of(const Key& key) {
        return const_cast<stripe&>(std::as_const(*this).stripe_of(key));
    }

    // Every stripe's table, each copied (moved) under its lock.
    std::array<spec_map, stripe_count> copy_specs() const {
        std::array<spec_map, stripe_count> out;
        for (std::size_t i = 0; i < stripe_count; ++i) {
            detail::shared_spin_lock::shared_guard lock(stripes_[i].mutex);
            out[i] = stripes_[i].specs;
        }
        return out;
    }
    std::array<spec_map, stripe_count> take_specs() {
        std::array<spec_map, stripe_count> out;
        for (std::size_t i = 0; i < stripe_count; ++i) {
            detail::shared_spin_lock::unique_guard lock(stripes_[i].mutex);
            out[i].swap(stripes_[i].specs);
        }
        return out;
    }
    void assign(std::array<spec_map, stripe_count>&& specs) {
        for (std::size_t i = 0; i < stripe_count; ++i) {
            detail::shared_spin_lock::unique_guard lock(stripes_[i].mutex);
            stripes_[i].specs.swap(specs[i]);  // the old specs die with `specs`, unlocked
        }
    }

    std::array<stripe, stripe_count> stripes_;
};

}  // namespace importlock
