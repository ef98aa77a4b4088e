// importlock/detail/lock_map.hpp: module locks created on demand.
//
// per_key: a map key -> module_lock whose records exist only while some
// thread holds or waits on them, so its size follows the imports in flight,
// never the keys ever seen (CPython's _module_locks with its weakref
// callback). global: one record shared by every key.
//
// Thread-safety: none; the import system's state mutex guards every call.
// Cost: lock_for O(1) expected, one allocation when the record is new;
// forget_if_unused O(1). References returned by lock_for stay valid until
// forget_if_unused erases that record.
#pragma once

#include <cstddef>
#include <unordered_map>

#include "../locking/lock_policy.hpp"

namespace importlock::detail {

template <lock_scope Scope, class Key, class Lock, class Hash, class KeyEqual>
class lock_map;

template <class Key, class Lock, class Hash, class KeyEqual>
class lock_map<lock_scope::per_key, Key, Lock, Hash, KeyEqual> {
public:
    // Returns the lock of `key`, creating a free one if none exists.
    Lock& lock_for(const Key& key) {
        auto& [stored_key, lock] = *locks_.try_emplace(key).first;
        lock.key = &stored_key;
        return lock;
    }

    // Erases the lock of `key` if nobody holds or waits on it.
    void forget_if_unused(const Key& key, const Lock& lock) {
        if (lock.unused()) locks_.erase(key);
    }

    // Returns the number of live locks.
    std::size_t size() const noexcept { return locks_.size(); }

    // Calls f(key, lock) for every live lock.
    template <class F>
    void for_each(F&& f) const {
        for (const auto& [key, lock] : locks_) f(key, lock);
    }

private:
    std::unordered_map<Key, Lock, Hash, KeyEqual> locks_;
};

template <class Key, class Lock, class Hash, class KeyEqual>
class lock_map<lock_scope::global, Key, Lock, Hash, KeyEqual> {
public:
    Lock& lock_for(const Key&) noexcept { return lock_; }
    void forget_if_unused(const Key&, const Lock&) noexcept {}

    // Returns 1 while the global lock is held or awaited, else 0.
    std::size_t size() const noexcept { return lock_.unused() ? 0 : 1; }

    template <class F>
    void for_each(F&&) const {}

private:
    Lock lock_;
};

}  // namespace importlock::detail
