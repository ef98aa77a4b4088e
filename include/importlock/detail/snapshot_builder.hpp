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

#include <atomic>
#include <cstddef>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../snapshot.hpp"
#include "algorithm.hpp"
#include "wait_for_graph.hpp"

namespace importlock::detail {

// A class template only so that its members are compiled in the units that take
// a snapshot: as a plain class, every unit that includes the core would compile
// them, with four std::vector instantiations (benchmarks/README.md, "Compile
// time"). Use snapshot_builder.
template <class ThreadId = std::thread::id>
class basic_snapshot_builder {
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

    // An uncontended claim (lock_protocol.hpp): held, with no record and
    // no waiter; also a frame of its thread's stack.
    struct claim_row {
        std::thread::id thread;
        std::size_t depth;  // thread_import_depth() when the claim began
        std::string key;
    };

    // Builds the snapshot of one system from its lock protocols (one per
    // shard, lock_protocol.hpp) and its uncontended claims: each thread's
    // import stack over all of them, their live locks, and the domain's
    // threads waiting on those locks and on tracked mutexes and thread ends.
    // The caller holds every protocol's state mutex; this takes the domain's
    // once. O(frames log frames + locks + waits x locks).
    template <class Protocol>
    static import_snapshot of(const std::vector<const Protocol*>& protocols,
                              std::vector<claim_row> claims = {}) {
        basic_snapshot_builder out;
        using frame_row = claim_row;
        std::vector<frame_row> frames = claims;
        for (const Protocol* p : protocols) {
            p->for_each_frame([&](const auto& f) {
                frames.push_back({f.thread, f.depth, Protocol::name(f.entry->key)});
            });
        }
        detail::sort(frames.begin(), frames.end(), [](const frame_row& a, const frame_row& b) {
            return a.thread != b.thread ? a.thread < b.thread : a.depth < b.depth;
        });
        for (std::size_t i = 0; i < frames.size();) {
            std::vector<std::string> keys;
            const std::thread::id thread = frames[i].thread;
            for (; i < frames.size() && frames[i].thread == thread; ++i) {
                keys.push_back(std::move(frames[i].key));
            }
            out.add_stack(thread, std::move(keys));
        }
        std::vector<const wait_node*> locks;
        for (const Protocol* p : protocols) {
            p->for_each_lock([&](const auto& lock) {
                out.add_lock(Protocol::describe(lock), lock.holder_id(), lock.depth);
                locks.push_back(static_cast<const wait_node*>(&lock));
            });
        }
        for (claim_row& c : claims) out.add_lock(std::move(c.key), c.thread, 1);
        // Waits on these locks, and on the domain's tracked mutexes and joins.
        std::vector<const wait_node*> tracked;
        std::vector<std::size_t> index;
        protocols.front()->for_each_domain_wait([&](std::thread::id thread, const wait_node& node) {
            for (std::size_t i = 0; i < locks.size(); ++i) {
                if (locks[i] == &node) {
                    out.add_waiter(i, thread);
                    return;
                }
            }
            if (node.kind != wait_kind::mutex && node.kind != wait_kind::thread) return;
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

    // The snapshot of a single lock protocol.
    template <class Protocol>
    static import_snapshot of(const Protocol& protocol) {
        return of(std::vector<const Protocol*>{&protocol});
    }

private:
    import_snapshot::thread_state& row(std::thread::id thread) {
        auto it = detail::find_if(out_.threads.begin(), out_.threads.end(),
                                  [&](const auto& t) { return t.thread == thread; });
        if (it != out_.threads.end()) return *it;
        out_.threads.emplace_back();
        out_.threads.back().thread = thread;
        return out_.threads.back();
    }

    import_snapshot out_;
};

using snapshot_builder = basic_snapshot_builder<>;

}  // namespace importlock::detail
