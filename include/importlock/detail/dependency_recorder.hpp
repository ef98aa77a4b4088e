// SPDX-License-Identifier: BSL-1.0
// importlock/detail/dependency_recorder.hpp: the keys a running loader
// imported, the edges of the dependency graph (§1.11, §1.13).
//
// Purpose: a load_frame lives on the loading thread's stack while a loader
// runs; the key's importer appends to it each key whose import through the
// importer SUCCEEDED (a failed import is no dependency). After the loader
// returns the frame is detached, so imports through a kept importer are no
// longer recorded. take() returns each key once, in first-import order.
//
// Thread-safety: record() may be called from any thread (a loader's helper
// threads) while the frame is attached; the attaching importer serialises
// it. take() on the loading thread after detaching. Cost: record O(1)
// amortised; take O(n) expected (one hash set over the recorded keys), so a
// loader that imports N keys pays O(N) in all.
#pragma once

#include <cstddef>
#include <functional>
#include <unordered_set>
#include <vector>

namespace importlock::detail {

template <class Key, class Hash, class KeyEqual>
class load_frame {
public:
    // Records a successful import of `key` (a copy).
    void record(const Key& key) { imported_.push_back(key); }

    // Returns whether nothing was recorded.
    bool empty() const noexcept { return imported_.empty(); }

    // Returns the recorded keys without duplicates, first-import order kept.
    std::vector<Key> take() {
        if (imported_.size() < 2) return std::move(imported_);
        struct ref_hash {
            std::size_t operator()(const Key* k) const { return Hash{}(*k); }
        };
        struct ref_equal {
            bool operator()(const Key* a, const Key* b) const { return KeyEqual{}(*a, *b); }
        };
        std::unordered_set<const Key*, ref_hash, ref_equal> seen;
        seen.reserve(imported_.size());
        std::vector<Key> out;
        for (const Key& key : imported_) {
            if (seen.insert(&key).second) out.push_back(key);
        }
        imported_.clear();
        return out;
    }

private:
    std::vector<Key> imported_;
};

}  // namespace importlock::detail
