// SPDX-License-Identifier: BSL-1.0
// importlock/detail/module_factory.hpp: from a spec to a module object
// (CPython's module_from_spec) and the errors of that step.
//
// Thread-safety: pure functions; they call the spec's factory and the
// finder's optional not_found_hint. Cost: one allocation (the module) unless
// the spec's factory does otherwise.
#pragma once

#include <memory>
#include <string>
#include <type_traits>

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

// Creates the module object: the spec's factory, else make_shared<Module>().
template <class Key, class Module>
std::shared_ptr<Module> create_module(const Key& key, const module_spec<Key, Module>& spec) {
    if (spec.factory) {
        std::shared_ptr<Module> module = spec.factory(key);
        if (!module) {
            throw import_error(key_name(key),
                               "the module factory of '" + key_name(key) + "' returned null");
        }
        return module;
    } else if constexpr (std::is_default_constructible_v<Module>) {
        return std::make_shared<Module>();
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
