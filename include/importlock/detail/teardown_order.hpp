// SPDX-License-Identifier: BSL-1.0
// importlock/detail/teardown_order.hpp: dependents before dependencies
// (§1.11; folly's singleton teardown).
//
// Purpose: given the registered modules in the order they first became ready
// and each one's dependencies (indices into that order), returns an order in
// which every module comes before the modules it imported. Modules not
// ordered by the graph go newest first. A reload keeps a module's place,
// since the order of first readiness is what the caller passes.
//
// Thread-safety: a pure function. Cost: O(nodes + edges) time and space; no
// recursion (an iterative depth-first search), so a chain of 10^6 modules
// needs no native stack. Cycles (modules that saw each other partially) are
// broken where the search meets them.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

namespace importlock::detail {

// `deps[i]` lists the dependencies of node i (nodes in first-ready order).
inline std::vector<std::size_t> teardown_order(const std::vector<std::vector<std::size_t>>& deps) {
    const std::size_t n = deps.size();
    std::vector<unsigned char> mark(n, 0);  // 0 new, 1 on the stack, 2 done
    std::vector<std::size_t> postorder;
    postorder.reserve(n);
    std::vector<std::pair<std::size_t, std::size_t>> stack;  // node, next edge
    // Roots oldest first: the reversed postorder then puts the newest first.
    for (std::size_t root = 0; root < n; ++root) {
        if (mark[root] != 0) continue;
        mark[root] = 1;
        stack.push_back({root, 0});
        while (!stack.empty()) {
            auto& [node, edge] = stack.back();
            if (edge < deps[node].size()) {
                const std::size_t next = deps[node][edge++];
                if (next < n && mark[next] == 0) {
                    mark[next] = 1;
                    stack.push_back({next, 0});
                }
            } else {
                mark[node] = 2;
                postorder.push_back(node);
                stack.pop_back();
            }
        }
    }
    for (std::size_t i = 0, j = postorder.size(); i + 1 < j; ++i, --j) {
        std::swap(postorder[i], postorder[j - 1]);
    }
    return postorder;
}

}  // namespace importlock::detail

#include "algorithm.hpp"
#include "registry_entry.hpp"

namespace importlock::detail {

// Returns `nodes` (registered entries, each with ready_order and
// dependencies) in teardown order: dependents first (teardown_order above).
// `find(key)` returns the entry of a dependency, or null. O(n log n + edges).
template <class Entry, class Find>
std::vector<Entry*> teardown_plan(std::vector<Entry*> nodes, Find&& find) {
    const auto older = [](const Entry* a, const Entry* b) {
        return a->ready_order < b->ready_order;
    };
    detail::sort(nodes.begin(), nodes.end(), older);
    std::vector<std::vector<std::size_t>> deps(nodes.size());
    for (std::size_t i = 0; i < nodes.size(); ++i) {
        for (const auto& key : nodes[i]->dependencies) {
            Entry* target = find(key);
            if (target == nullptr) continue;
            const auto it = detail::lower_bound(nodes.begin(), nodes.end(), target, older);
            if (it != nodes.end() && *it == target) {
                deps[i].push_back(static_cast<std::size_t>(it - nodes.begin()));
            }
        }
    }
    std::vector<Entry*> out;
    out.reserve(nodes.size());
    for (const std::size_t i : teardown_order(deps)) out.push_back(nodes[i]);
    return out;
}

// Unregisters every settled module of `registry` (ready, its import not
// claimed: `claimed(entry)`) and every block; calls `dropped(entry)` for each
// module unregistered; returns the modules in teardown order for the caller
// to destroy outside its mutex, and counts the blocks in `blocks`. The caller
// holds every shard's state mutex. O(n log n + edges).
template <class Registry, class Find, class Claimed, class Dropped>
auto take_settled(Registry& registry, Find&& find, Claimed&& claimed, Dropped&& dropped,
                  std::size_t& blocks) {
    using entry = typename Registry::entry_type;
    std::vector<entry*> nodes;
    registry.for_each([&](entry& e) {
        const entry_state s = e.current_state();
        if (s == entry_state::ready && !claimed(e)) {
            nodes.push_back(&e);
        } else if (s == entry_state::blocked) {
            e.drop();
            ++blocks;
        }
    });
    std::vector<decltype(nodes.front()->drop())> doomed;
    doomed.reserve(nodes.size());
    for (entry* e : teardown_plan(std::move(nodes), find)) {
        doomed.push_back(e->drop());
        dropped(*e);
    }
    return doomed;
}

}  // namespace importlock::detail
