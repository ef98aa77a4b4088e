// SPDX-License-Identifier: BSL-1.0
// importlock/detail/tracked_wait.hpp: a wait of the program's own (a
// tracked_mutex's lock, a tracked_thread's join) as an edge of a
// wait_graph_domain's wait-for graph (chapter 42.23, 42.24).
//
// Purpose: before a thread blocks on a tracked node, walk the graph from the
// node, through module locks and tracked nodes alike, exactly as an import
// does before it waits for a module lock; if the walk returns to this thread,
// blocking would never end: throw deadlock_error naming the cycle instead.
// The check and the registration of the wait happen in one step under the
// domain's mutex, so exactly one thread of a cycle finds it (the last one to
// wait), whether it waits for an import or for a tracked node.
//
// Thread-safety: any thread. Cost: the domain's mutex twice and O(chain) for
// the walk, only when the thread really has to wait.
#pragma once

#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../errors.hpp"
#include "../wait_graph_domain.hpp"
#include "scope_exit.hpp"
#include "wait_for_graph.hpp"

namespace importlock::detail {

// The graph and mutex of a domain, for the tracked primitives.
struct domain_access {
    static std::mutex& mutex(wait_graph_domain& d) noexcept { return d.mutex_; }
    static wait_for_graph<wait_node>& graph(wait_graph_domain& d) noexcept { return d.graph_; }
};

// A graph node with a name: a tracked_mutex, or a tracked_thread's end.
struct named_node : wait_node {
    std::string name;
};

inline std::string thread_label(std::thread::id thread) {
    return import_timeout_error::describe(thread);
}

// Names `node` in a sentence: "the import of 'plugin'", "the global import
// lock", "mutex 'registry'", "the end of thread 3".
inline std::string deadlock_phrase(const wait_node& node) {
    switch (node.kind) {
        case wait_kind::module_lock: return "the import of '" + node.describe(node) + "'";
        case wait_kind::global_lock: return "the global import lock";
        case wait_kind::mutex:
        case wait_kind::thread: break;
    }
    return node.describe(node);
}

// Returns the message of a cycle `chain` from the node this thread wants to
// the one it holds: "deadlock: mutex 'registry' is held by thread 2, which
// waits for the import of 'plugin', which this thread holds"; a joined
// thread reads "thread 2 (being joined), which waits for ...".
inline std::string deadlock_message(const std::vector<const wait_node*>& chain) {
    if (chain.size() == 1)
        return "deadlock: this thread already holds " + deadlock_phrase(*chain[0]);
    const auto holder = [](const wait_node* n) {
        return thread_label(n->holder.load(std::memory_order_acquire));
    };
    std::string out =
        chain[0]->kind == wait_kind::thread
            ? "deadlock: thread " + holder(chain[0]) + " (being joined)"
            : "deadlock: " + deadlock_phrase(*chain[0]) + " is held by thread " + holder(chain[0]);
    for (std::size_t i = 1; i < chain.size(); ++i) {
        out += ", which waits for " + deadlock_phrase(*chain[i]);
        if (i + 1 < chain.size() && chain[i]->kind != wait_kind::thread) {
            out += ", held by thread " + holder(chain[i]);
        }
    }
    return out + ", which this thread holds";
}

// Runs `block()` (which blocks until `node` is free, or its thread ended) as
// a wait of this thread on `node` in `domain`, unless waiting would close a
// cycle: then throws deadlock_error and does not call `block`.
template <class Block>
void tracked_wait(wait_graph_domain& domain, const wait_node& node, Block&& block) {
    const std::thread::id self = std::this_thread::get_id();
    {
        std::lock_guard graph_lock(domain_access::mutex(domain));
        auto& graph = domain_access::graph(domain);
        const std::vector<const wait_node*> cycle = graph.find_cycle(self, &node);
        if (!cycle.empty()) {
            std::vector<std::string> names;
            for (const wait_node* n : cycle) names.push_back(deadlock_phrase(*n));
            throw deadlock_error(deadlock_message(cycle), std::move(names));
        }
        graph.add_wait(self, &node);
    }
    scope_exit unwait([&]() noexcept {
        std::lock_guard graph_lock(domain_access::mutex(domain));
        domain_access::graph(domain).remove_wait(self);
    });
    std::forward<Block>(block)();
}

}  // namespace importlock::detail
