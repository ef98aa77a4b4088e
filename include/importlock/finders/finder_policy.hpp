// SPDX-License-Identifier: BSL-1.0
// importlock/finders/finder_policy.hpp: what makes a type a finder policy.
//
// A finder policy turns a key into a module_spec (CPython's find_spec):
//
//   member                                              meaning
//   std::optional<module_spec<Key, Module>>             the spec for `key`, or
//     find_spec(const Key& key) const                   nullopt when unknown
//                                                       (module_not_found_error)
//
// find_spec runs on the importing thread while it holds `key`'s module lock
// and no other import lock of the system; it may be called concurrently for
// different keys, so it must be thread-safe (CPython 42.14: custom finders
// run under import synchronisation).
//
// Optional member:
//
//   std::string not_found_hint(const Key& key) const    what the user could do
//                                                       so that `key` is found
//
// When a finder has it and find_spec returns nullopt, the import system appends
// the hint to the module_not_found_error message ("no module named 'db'; define it
// with finder().define(\"db\", ...)"). It must be thread-safe like find_spec and
// may return an empty string (no hint). has_not_found_hint<F, Key> tells whether a
// finder has it; not_found_hint_of(finder, key) returns the hint or "".
#pragma once

#include <concepts>
#include <optional>
#include <string>

#include "../module_spec.hpp"

namespace importlock {

// Holds when F has the optional `std::string not_found_hint(const Key&) const`.
template <class F, class Key>
concept has_not_found_hint = requires(const F& finder, const Key& key) {
    { finder.not_found_hint(key) } -> std::convertible_to<std::string>;
};

// Returns finder.not_found_hint(key) when F has it, else an empty string.
template <class F, class Key>
std::string not_found_hint_of(const F& finder, const Key& key) {
    if constexpr (has_not_found_hint<F, Key>) {
        return std::string(finder.not_found_hint(key));
    } else {
        return std::string();
    }
}

// Holds when F can find specs for Key and Module.
template <class F, class Key, class Module>
concept finder_policy = requires(const F& finder, const Key& key) {
    { finder.find_spec(key) } -> std::convertible_to<std::optional<module_spec<Key, Module>>>;
};

}  // namespace importlock
