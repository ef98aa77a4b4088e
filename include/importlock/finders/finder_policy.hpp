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
#pragma once

#include <concepts>
#include <optional>

#include "../module_spec.hpp"

namespace importlock {

// Holds when F can find specs for Key and Module.
template <class F, class Key, class Module>
concept finder_policy = requires(const F& finder, const Key& key) {
    { finder.find_spec(key) } -> std::convertible_to<std::optional<module_spec<Key, Module>>>;
};

}  // namespace importlock
