// SPDX-License-Identifier: BSL-1.0
// importlock/detail/module_factory.hpp: from a spec to a module object
// (CPython's module_from_spec), the importer that lives with it, and the
// errors of that step.
//
// Purpose: the importer a key's loader receives lives with the module object
// it was handed for (DESIGN §1.13), not in the registry entry: every
// shared_ptr<Module> a system hands out owns the block that holds the
// importer too, so a module may keep its importer for as long as it is alive,
// and the entry of an erased or failed key owns no importer.
//   - A default-created module (no factory): one block, a module_box, holds
//     the importer and the module (one std::make_shared, as for the module
//     alone); the system hands out aliasing shared_ptrs into it.
//   - A module made by the spec's factory or builder (the user's shared_ptr),
//     or a default-created one that derives from enable_shared_from_this (its
//     weak_this is set only by a shared_ptr that owns the Module itself): a
//     module_holder holds the importer and the user's shared_ptr, and the
//     system hands out aliasing shared_ptrs that own the holder. A builder's
//     holder is made before the builder runs (it receives the importer).
// The importer is declared before the module in both, so that it is destroyed
// after it: a module's destructor may import through the importer it kept.
//
// Thread-safety: pure functions; they call the spec's factory and the
// finder's optional not_found_hint. Cost: one allocation (the module with its
// importer); a factory's or builder's module, or one that derives from
// enable_shared_from_this: the holder besides what the factory allocates.
#pragma once

#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "../errors.hpp"
#include "../finders/finder_policy.hpp"
#include "../key_traits.hpp"
#include "../module_spec.hpp"

namespace importlock::detail {

template <class Key>
std::string key_name(const Key& key) {
    return key_traits<Key>::to_string(key);
}

// Throws import_error unless `spec` has a loader.
template <class Key, class Module>
void require_loader(const Key& key, const module_spec<Key, Module>& spec) {
    if (!spec.loader) {
        throw import_error(key_name(key),
                           "the spec found for '" + key_name(key) + "' has no loader");
    }
}

// A default-created module and its importer in one block (see above).
template <class Module, class Importer>
struct module_box {
    template <class System>
    explicit module_box(System& system) : importer(system), module() {}
    Importer importer;  // first: destroyed after the module
    Module module;      // value-initialised, as by make_shared<Module>()
};

// The importer beside a module the system did not allocate (see above).
template <class Module, class Importer>
struct module_holder {
    template <class System>
    explicit module_holder(System& system) noexcept : importer(system) {}
    Importer importer;  // first: destroyed after the module
    std::shared_ptr<Module> module;
};

// A module object and the importer that lives with it: `module` owns the
// block that holds `*importer`.
template <class Module, class Importer>
struct module_with_importer {
    std::shared_ptr<Module> module;
    Importer* importer;
};

// Returns a holder for the importer of a module still to be made (a
// single-phase builder's: the builder receives the importer).
template <class Importer, class Module, class System>
std::shared_ptr<module_holder<Module, Importer>> hold_importer(System& system) {
    return std::make_shared<module_holder<Module, Importer>>(system);
}

// Puts `module` into `holder`; returns it as a shared_ptr that owns the holder.
template <class Module, class Importer>
std::shared_ptr<Module> hold_module(std::shared_ptr<module_holder<Module, Importer>> holder,
                                    std::shared_ptr<Module> module) noexcept {
    Module* raw = module.get();
    holder->module = std::move(module);
    return std::shared_ptr<Module>(std::move(holder), raw);
}

// Whether Module derives from enable_shared_from_this (its weak_this is set
// only by a shared_ptr that owns a Module, not by an aliasing one).
template <class Module>
inline constexpr bool shares_from_this = requires(Module& m) { m.weak_from_this(); };

// Creates the module object with its importer (Importer(system)): the spec's
// factory, else a default-constructed Module.
template <class Importer, class Key, class Module, class System>
module_with_importer<Module, Importer> create_module(const Key& key,
                                                     const module_spec<Key, Module>& spec,
                                                     System& system) {
    if (spec.factory) {
        std::shared_ptr<Module> module = spec.factory(key);
        if (!module) {
            throw import_error(key_name(key),
                               "the module factory of '" + key_name(key) + "' returned null");
        }
        auto holder = hold_importer<Importer, Module>(system);
        Importer* importer = &holder->importer;
        return {hold_module(std::move(holder), std::move(module)), importer};
    } else if constexpr (std::is_default_constructible_v<Module> && shares_from_this<Module>) {
        auto holder = hold_importer<Importer, Module>(system);
        Importer* importer = &holder->importer;
        return {hold_module(std::move(holder), std::make_shared<Module>()), importer};
    } else if constexpr (std::is_default_constructible_v<Module>) {
        auto box = std::make_shared<module_box<Module, Importer>>(system);
        Importer* importer = &box->importer;
        Module* module = &box->module;
        return {std::shared_ptr<Module>(std::move(box), module), importer};
    } else {
        throw import_error(key_name(key), "'" + key_name(key) +
                                              "' has no module factory and the module type is "
                                              "not default-constructible");
    }
}

// Returns the error for a key no finder knows, with the finder's hint on how
// it could be found when the finder offers one (not_found_hint).
template <class Finder, class Key>
module_not_found_error not_found(const Finder& finder, const Key& key) {
    return module_not_found_error(key_name(key), not_found_hint_of(finder, key));
}

// Returns the spec to reload `key` with (§1.9): found, and with a loader (a
// single-phase builder cannot re-run on the same object).
template <class Finder, class Key>
auto find_reload_spec(const Finder& finder, const Key& key) {
    auto spec = finder.find_spec(key);
    if (!spec) throw not_found(finder, key);
    if (spec->builder) {
        throw import_error(key_name(key), "cannot reload '" + key_name(key) +
                                              "': it is a single-phase module; erase it and "
                                              "import it again");
    }
    require_loader(key, *spec);
    return std::move(*spec);
}

}  // namespace importlock::detail
