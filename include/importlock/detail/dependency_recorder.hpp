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
// amortised; take O(n log n) (a sort by hash; a hash set would cost every unit
// that includes the core <unordered_set> and a hash-table instantiation), so a
// loader that imports N keys pays O(N log N) in all.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "algorithm.hpp"
#include "key_list.hpp"

namespace importlock::detail {

template <class Key, class Hash, class KeyEqual>
class load_frame {
public:
    // Records a successful import of `key` (a copy).
    void record(const Key& key) { imported_.push_back(key); }

    // Returns whether nothing was recorded.
    bool empty() const noexcept { return imported_.empty(); }

    // Returns the recorded keys without duplicates, first-import order kept.
    key_list<Key> take() {
        if (imported_.size() < 2) {
            key_list<Key> out(std::move(imported_));
            imported_.clear();
            return out;
        }
        // (hash, position) pairs sorted: equal keys are neighbours within a run of
        // equal hashes, their first import first. (Pairs of size_t and a vector of
        // size_t, the types teardown_order.hpp instantiates anyway: each new
        // std::vector type costs every unit that uses a system compile time.)
        std::vector<std::pair<std::size_t, std::size_t>> order;
        order.reserve(imported_.size());
        for (std::size_t i = 0; i < imported_.size(); ++i)
            order.push_back({Hash{}(imported_[i]), i});
        detail::sort(order.begin(), order.end(), pair_less{});
        std::vector<std::size_t> duplicate(imported_.size(), 0);
        std::size_t kept = imported_.size();
        for (std::size_t run = 0; run < order.size();) {
            std::size_t end = run + 1;
            while (end < order.size() && order[end].first == order[run].first) ++end;
            // Within a run, each key is compared with the kept keys before it: O(run)
            // per distinct key, as a hash set's bucket would be.
            for (std::size_t i = run + 1; i < end; ++i) {
                for (std::size_t k = run; k < i; ++k) {
                    if (duplicate[order[k].second] == 0 &&
                        KeyEqual{}(imported_[order[k].second], imported_[order[i].second])) {
                        duplicate[order[i].second] = 1;
                        --kept;
                        break;
                    }
                }
            }
            run = end;
        }
        key_list<Key> out(imported_, kept, [&](std::size_t i) { return duplicate[i] == 0; });
        imported_.clear();
        return out;
    }

private:
    std::vector<Key> imported_;
};

}  // namespace importlock::detail
