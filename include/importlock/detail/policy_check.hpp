// SPDX-License-Identifier: BSL-1.0
// importlock/detail/policy_check.hpp: one readable error per broken template
// argument of basic_import_system.
//
// Each check static_asserts every requirement with a message that names the
// missing member and the header documenting it, then yields a valid stand-in
// so that the compiler stops at that message instead of a cascade.
#pragma once

#include <cstddef>
#include <mutex>
#include <optional>
#include <type_traits>

#include "../finders/finder_policy.hpp"
#include "../finders/registry_finder.hpp"
#include "../key_traits.hpp"
#include "../locking/lock_policy.hpp"
#include "../locking/per_key_locks.hpp"
#include "chrono.hpp"

namespace importlock::detail {

template <class P>
struct checked_lock_policy {
    static_assert(has_mutex_type<P>,
                  "importlock: the LockPolicy has no `using mutex_type = ...;` "
                  "(see importlock/locking/lock_policy.hpp)");
    static_assert(has_condition_variable_type<P>,
                  "importlock: the LockPolicy has no `using condition_variable_type = ...;` "
                  "(see importlock/locking/lock_policy.hpp)");
    static_assert(has_scope<P>,
                  "importlock: the LockPolicy has no `static constexpr lock_scope scope` "
                  "(see importlock/locking/lock_policy.hpp)");
    static_assert(has_on_cycle<P>,
                  "importlock: the LockPolicy has no `static constexpr cycle_resolution on_cycle` "
                  "(see importlock/locking/lock_policy.hpp)");
    static_assert(!has_mutex_type<P> || lockable_mutex<P>,
                  "importlock: the LockPolicy's mutex_type needs lock() and unlock() "
                  "(see importlock/locking/lock_policy.hpp)");
    static_assert(!(has_mutex_type<P> && has_condition_variable_type<P>) || waitable_condition<P>,
                  "importlock: the LockPolicy's condition_variable_type needs "
                  "wait(std::unique_lock<mutex_type>&) and notify_all(); with a custom mutex "
                  "use std::condition_variable_any (see importlock/locking/lock_policy.hpp)");
    static constexpr bool value = true;
};

// The policy itself, or a stand-in after checked_lock_policy reported what is
// missing. Kept apart from checked_lock_policy: a class whose static_assert
// failed may lose its members (clang).
template <class P>
using lock_policy_or_default = std::conditional_t<lock_policy<P>, P, per_key_locks>;

// Whether the policy's condition variable can wait until a deadline (timed imports).
template <class P>
inline constexpr bool has_timed_waits = requires(
    typename P::condition_variable_type& cv, std::unique_lock<typename P::mutex_type>& lock,
    std::chrono::steady_clock::time_point deadline) { cv.wait_until(lock, deadline); };

// Whether one key's failed import is handed to the threads waiting for it. A
// global lock is shared by every key: its waiters never share one key's failure.
template <class P>
inline constexpr bool shares_failures =
    failure_mode_of<P>() == failure_mode::waiters_share_failure && P::scope == lock_scope::per_key;

template <class F, class Key, class Module>
struct checked_finder {
    static_assert(finder_policy<F, Key, Module>,
                  "importlock: the FinderPolicy needs `std::optional<module_spec<Key, Module>> "
                  "find_spec(const Key&) const` (see importlock/finders/finder_policy.hpp)");
    using type = std::conditional_t<finder_policy<F, Key, Module>, F, registry_finder<Key, Module>>;
};

// Stands in for a finder when the key type is unusable, so that the default
// registry_finder<Key, Module> is never instantiated with a broken key.
template <class Key, class Module>
struct null_finder {
    std::optional<module_spec<Key, Module>> find_spec(const Key&) const { return std::nullopt; }
};

template <class Module>
struct checked_module {
    static_assert(std::is_object_v<Module> && !std::is_array_v<Module> &&
                      !std::is_const_v<Module> && !std::is_volatile_v<Module>,
                  "importlock: the Module must be a non-const, non-array object type; the "
                  "registry holds std::shared_ptr<Module> (see importlock/import_system.hpp)");
    static constexpr bool value = true;
};

// Stands in for a key's hash and equality when they are unusable, after the
// static_assert below has reported it.
struct unusable_key_function {
    template <class... Args>
    std::size_t operator()(const Args&...) const noexcept {
        return 0;
    }
};

template <class Key>
struct checked_key {
    static constexpr bool ok = import_key<Key, key_traits<Key>>;
    static_assert(std::copy_constructible<Key>,
                  "importlock: the Key must be copy-constructible (see importlock/key_traits.hpp)");
    static_assert(!std::copy_constructible<Key> || ok,
                  "importlock: the Key needs a hash and an equality: specialise std::hash<Key> "
                  "and operator==, or importlock::key_traits<Key> with hasher, key_equal, "
                  "to_string(key) and parent(key) (see importlock/key_traits.hpp)");
};

// The key's hash and equality, or stand-ins when they are unusable. Kept apart
// from checked_key: a class whose static_assert failed may lose its members.
template <class Key, bool Ok = import_key<Key, key_traits<Key>>>
struct key_functions {
    using hasher = typename key_traits<Key>::hasher;
    using key_equal = typename key_traits<Key>::key_equal;
};

template <class Key>
struct key_functions<Key, false> {
    using hasher = unusable_key_function;
    using key_equal = unusable_key_function;
};

}  // namespace importlock::detail
