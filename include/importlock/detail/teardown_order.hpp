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
#include <cstdint>
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
// `find(key)` returns the entry of a dependency, or null. O((n + edges) log n)
// time (a binary search per edge). The usual case skips the O(n log n) sort
// and the search of teardown_order: the nodes come in first-ready
// order (one registry walked in insertion order, without nested imports; the
// sort is skipped) and every dependency became ready before its dependent
// (no reload since), where teardown_order's answer is the nodes newest first
// (the depth-first search is skipped). The sort and the binary searches run
// over (ready_order, entry) pairs copied once, not over the entries: at
// 100,000 entries a heap sort that read each compared entry's order spent
// most of a clear() in cache misses.
template <class Entry, class Find>
std::vector<Entry*> teardown_plan(std::vector<Entry*> nodes, Find&& find) {
    using ordered = std::pair<std::uint64_t, Entry*>;
    const auto older = [](const ordered& a, const ordered& b) { return a.first < b.first; };
    std::vector<ordered> by_age;
    by_age.reserve(nodes.size());
    bool sorted = true;
    for (Entry* e : nodes) {
        if (!by_age.empty() && e->ready_order < by_age.back().first) sorted = false;
        by_age.push_back({e->ready_order, e});
    }
    if (!sorted) detail::sort(by_age.begin(), by_age.end(), older);
    // The edges (dependent, dependency) between nodes, by position in by_age.
    std::vector<std::pair<std::size_t, std::size_t>> edges;
    bool newer_dependency = false;  // an edge to a node that became ready later
    for (std::size_t i = 0; i < by_age.size(); ++i) {
        for (const auto& key : by_age[i].second->dependencies) {
            // Only a ready (or reloading) target may be among `nodes`; the
            // acquire load of its state orders its ready_order before the
            // read (a target still loading writes it without the mutex).
            const Entry* target = find(key);
            if (target == nullptr || !settled_with_module(target->current_state())) continue;
            const ordered wanted{target->ready_order, nullptr};
            const auto it = detail::lower_bound(by_age.begin(), by_age.end(), wanted, older);
            if (it == by_age.end() || it->second != target) continue;
            const auto j = static_cast<std::size_t>(it - by_age.begin());
            if (j > i) newer_dependency = true;
            edges.push_back({i, j});
        }
    }
    nodes.clear();
    if (!newer_dependency) {  // newest first (teardown_order's answer)
        for (std::size_t i = by_age.size(); i-- > 0;) nodes.push_back(by_age[i].second);
        return nodes;
    }
    std::vector<std::vector<std::size_t>> deps(by_age.size());
    for (const auto& [from, to] : edges) deps[from].push_back(to);
    for (const std::size_t i : teardown_order(deps)) nodes.push_back(by_age[i].second);
    return nodes;
}

// Unregisters every settled module of `registry` (ready, its import not
// claimed: `claimed(entry)`) and every block; calls `dropped(entry)` for each
// module unregistered; returns the modules in teardown order for the caller
// to destroy outside its mutex, and counts the blocks in `blocks`. The caller
// holds every shard's state mutex. O((n + edges) log n) (teardown_plan).
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
