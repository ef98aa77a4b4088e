// SPDX-License-Identifier: BSL-1.0
// importlock/detail/lock_map.hpp: module locks created on demand.
//
// per_key: key -> module_lock records that exist only while some thread
// holds or waits on them, so the map's size follows the imports in flight,
// never the keys ever seen (CPython's _module_locks with its weakref
// callback). global: one record shared by every key.
//
// Thread-safety: none; the import system's state mutex guards every call.
// Cost: lock_for O(1) expected, one allocation when the record is new;
// forget_if_unused O(1) and noexcept: it never hashes or compares keys (the
// record carries its hash), so a throwing hash cannot strand a record.
// References returned by lock_for stay valid until forget_if_unused drops
// that record.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../locking/lock_policy.hpp"

namespace importlock::detail {

template <lock_scope Scope, class Key, class Lock, class KeyEqual>
class lock_map;

template <class Key, class Lock, class KeyEqual>
class lock_map<lock_scope::per_key, Key, Lock, KeyEqual> {
public:
    // Returns the lock of `key` (whose hash is `hash`), creating a free one if
    // none exists. Strong guarantee.
    Lock& lock_for(const Key& key, std::size_t hash) {
        std::vector<std::unique_ptr<record>>& bucket = buckets_[hash];
        for (const auto& r : bucket) {
            if (equal_(r->key, key)) return r->lock;
        }
        try {
            bucket.reserve(bucket.size() + 1);
            auto r = std::make_unique<record>(key);
            r->lock.key = &r->key;
            r->lock.hash = hash;
            bucket.push_back(std::move(r));
        } catch (...) {
            if (bucket.empty()) buckets_.erase(hash);
            throw;
        }
        ++size_;
        return bucket.back()->lock;
    }

    // Drops `lock` if nobody holds or waits on it.
    void forget_if_unused(const Lock& lock) noexcept {
        if (!lock.unused()) return;
        const auto it = buckets_.find(lock.hash);
        if (it == buckets_.end()) return;
        auto& bucket = it->second;
        const auto r = std::find_if(bucket.begin(), bucket.end(),
                                    [&](const auto& p) { return &p->lock == &lock; });
        if (r == bucket.end()) return;
        bucket.erase(r);
        if (bucket.empty()) buckets_.erase(it);
        --size_;
    }

    // Returns the number of live locks.
    std::size_t size() const noexcept { return size_; }

    // Calls f(lock) for every live lock.
    template <class F>
    void for_each(F&& f) const {
        for (const auto& [hash, bucket] : buckets_) {
            for (const auto& r : bucket) f(std::as_const(r->lock));
        }
    }
    template <class F>
    void for_each(F&& f) {
        for (auto& [hash, bucket] : buckets_) {
            for (auto& r : bucket) f(r->lock);
        }
    }

private:
    struct record {
        explicit record(const Key& k) : key(k) {}
        Key key;
        Lock lock;
    };

    [[no_unique_address]] KeyEqual equal_{};
    // Keyed by hash: hashing a size_t cannot throw; collisions share a bucket.
    std::unordered_map<std::size_t, std::vector<std::unique_ptr<record>>> buckets_;
    std::size_t size_ = 0;
};

template <class Key, class Lock, class KeyEqual>
class lock_map<lock_scope::global, Key, Lock, KeyEqual> {
public:
    Lock& lock_for(const Key&, std::size_t) noexcept { return lock_; }
    void forget_if_unused(const Lock&) noexcept {}

    // Returns 1 while the global lock is held or awaited, else 0.
    std::size_t size() const noexcept { return lock_.unused() ? 0 : 1; }

    template <class F>
    void for_each(F&& f) const {
        if (!lock_.unused()) f(lock_);
    }
    template <class F>
    void for_each(F&& f) {
        if (!lock_.unused()) f(lock_);
    }

private:
    Lock lock_;
};

}  // namespace importlock::detail
