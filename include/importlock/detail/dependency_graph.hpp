// SPDX-License-Identifier: BSL-1.0
// importlock/detail/dependency_graph.hpp: queries over the recorded
// dependency graph (an edge a -> b when a's loader imported b).
//
// Thread-safety: none; the caller holds every shard's state mutex, which
// guard the entries' dependencies. Cost: O(modules + edges).
#pragma once

#include <ostream>
#include <vector>

#include "dot_quote.hpp"
#include "module_factory.hpp"
#include "registry_entry.hpp"

namespace importlock::detail {

// Returns the registered keys whose loaders imported `key`.
template <class Registry, class Key, class KeyEqual>
std::vector<Key> dependents_of(const Registry& registry, const Key& key, const KeyEqual& equal) {
    std::vector<Key> out;
    registry.for_each([&](const auto& e) {
        if (!settled_with_module(e.current_state())) return;  // initialising: none yet
        for (const Key& dependency : e.dependencies) {
            if (equal(dependency, key)) {
                out.push_back(e.key);
                return;
            }
        }
    });
    return out;
}

// Writes the graph of the registered modules in Graphviz DOT; modules still
// initialising are dashed.
template <class Registry>
void write_dependency_dot(std::ostream& out, const Registry& registry) {
    out << "digraph imports {\n";
    registry.for_each([&](const auto& e) {
        const entry_state s = e.current_state();
        if (!holds_module(s)) return;
        const std::string from = dot_quote(key_name(e.key));
        out << "  " << from << (s == entry_state::ready ? ";\n" : " [style=dashed];\n");
        if (!settled_with_module(s)) return;  // initialising: no dependencies yet
        for (const auto& to : e.dependencies) {
            out << "  " << from << " -> " << dot_quote(key_name(to)) << ";\n";
        }
    });
    out << "}\n";
}

}  // namespace importlock::detail
