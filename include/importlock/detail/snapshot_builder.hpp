// SPDX-License-Identifier: BSL-1.0
// importlock/detail/snapshot_builder.hpp: assembles an import_snapshot.
//
// Purpose: collects, from the lock protocol, each thread's import stack and
// each live lock with its holder and waiters, into the rows of an
// import_snapshot, one row per thread however it takes part.
//
// Thread-safety: none (a local object of snapshot()). Cost: O(threads x
// waiters) for the rows; everything else O(1) per call.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../snapshot.hpp"
#include "wait_for_graph.hpp"

namespace importlock::detail {

class snapshot_builder {
public:
    // Adds a thread's import stack (outermost first).
    void add_stack(std::thread::id thread, std::vector<std::string> keys) {
        row(thread).importing = std::move(keys);
    }

    // Adds a live lock; returns its index for add_waiter.
    std::size_t add_lock(
        std::string key, std::thread::id holder, std::size_t depth,
        import_snapshot::node_kind kind = import_snapshot::node_kind::module_lock) {
        import_snapshot::lock_state l;
        l.key = std::move(key);
        l.owner = holder;
        l.depth = depth;
        l.kind = kind;
        out_.locks.push_back(std::move(l));
        return out_.locks.size() - 1;
    }

    // Records that `thread` waits on the lock `lock` (an add_lock index).
    void add_waiter(std::size_t lock, std::thread::id thread) {
        import_snapshot::lock_state& l = out_.locks[lock];
        l.waiters.push_back(thread);
        import_snapshot::thread_state& t = row(thread);
        t.waiting_for = l.key;
        t.waiting_for_thread = l.owner;
    }

    // Returns the snapshot.
    import_snapshot take() { return std::move(out_); }

    // Builds the snapshot of a lock protocol (lock_protocol.hpp): its import
    // stacks, its live locks and the domain's threads waiting on them. The
    // caller holds the system's state mutex; this takes the domain's.
    template <class Protocol>
    static import_snapshot of(const Protocol& protocol) {
        snapshot_builder out;
        protocol.for_each_stack([&](std::thread::id thread, const auto& stack) {
            std::vector<std::string> keys;
            for (const auto* e : stack) keys.push_back(Protocol::name(e->key));
            out.add_stack(thread, std::move(keys));
        });
        std::vector<const void*> locks;
        protocol.for_each_lock([&](const auto& lock) {
            out.add_lock(Protocol::describe(lock), lock.holder_id(), lock.depth);
            locks.push_back(&lock);
        });
        protocol.for_each_waiter([&](std::thread::id thread, const auto& lock) {
            for (std::size_t i = 0; i < locks.size(); ++i) {
                if (locks[i] == &lock) out.add_waiter(i, thread);
            }
        });
        // Tracked mutexes and joins of the domain that threads wait on.
        std::vector<const void*> tracked;
        std::vector<std::size_t> index;
        protocol.for_each_tracked_wait([&](std::thread::id thread, const wait_node& node) {
            std::size_t i = 0;
            while (i < tracked.size() && tracked[i] != &node) ++i;
            if (i == tracked.size()) {
                tracked.push_back(&node);
                index.push_back(out.add_lock(
                    node.describe(node), node.holder.load(std::memory_order_acquire), 1,
                    node.kind == wait_kind::mutex ? import_snapshot::node_kind::mutex
                                                  : import_snapshot::node_kind::thread));
            }
            out.add_waiter(index[i], thread);
        });
        return out.take();
    }

private:
    import_snapshot::thread_state& row(std::thread::id thread) {
        auto it = std::find_if(out_.threads.begin(), out_.threads.end(),
                               [&](const auto& t) { return t.thread == thread; });
        if (it != out_.threads.end()) return *it;
        out_.threads.emplace_back();
        out_.threads.back().thread = thread;
        return out_.threads.back();
    }

    import_snapshot out_;
};

}  // namespace importlock::detail
