// SPDX-License-Identifier: BSL-1.0
// importlock/snapshot.hpp: a picture of the imports in flight, a thread dump
// for imports (basic_import_system::snapshot).
#pragma once

#include <cstddef>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "detail/dot_quote.hpp"
#include "key_traits.hpp"

namespace importlock {

// What one import system's imports in flight were doing at one moment. A
// value: print it, inspect it, keep it.
struct import_snapshot {
    // What a lock_state is: a module lock, or a node of the program's own
    // waits (tracked_mutex.hpp, tracked_thread.hpp) that a thread waits on.
    enum class node_kind { module_lock, mutex, thread };

    // One module lock in use, or a tracked mutex or thread end waited for.
    struct lock_state {
        node_kind kind = node_kind::module_lock;
        std::string key;                       // formatted key ("<global import lock>",
                                               // "mutex 'registry'", "the end of thread 3")
        std::thread::id owner;                 // the thread holding it
        std::size_t depth = 0;                 // re-entrant acquisitions by owner
        std::vector<std::thread::id> waiters;  // threads blocked on it
    };
    // One thread taking part.
    struct thread_state {
        std::thread::id thread;
        std::vector<std::string> importing;                 // keys it holds, outermost first
        std::optional<std::string> waiting_for;             // key it is blocked on
        std::optional<std::thread::id> waiting_for_thread;  // that key's holder
    };

    std::vector<lock_state> locks;
    std::vector<thread_state> threads;

    // Returns whether no import was in flight.
    bool empty() const noexcept { return locks.empty() && threads.empty(); }

    // Writes one line per thread: what it imports and whom it waits for.
    void write_text(std::ostream& out) const {
        if (empty()) {
            out << "no import in flight\n";
            return;
        }
        for (const thread_state& t : threads) {
            out << "thread " << t.thread << ":";
            if (!t.importing.empty()) {
                out << " importing";
                for (std::size_t i = 0; i < t.importing.size(); ++i) {
                    out << (i == 0 ? " " : " -> ") << t.importing[i];
                }
            }
            if (t.waiting_for) {
                out << (t.importing.empty() ? "" : ";") << " waiting for " << *t.waiting_for
                    << " (held by thread " << *t.waiting_for_thread << ")";
            }
            out << "\n";
        }
    }

    // Returns write_text's output.
    std::string to_text() const {
        return detail::write_to_string([this](std::ostream& out) { write_text(out); });
    }

    // Writes a Graphviz DOT graph: thread -> key it waits for, key -> thread
    // that holds it (module locks are boxes, tracked mutexes octagons, thread
    // ends dotted ellipses).
    void write_dot(std::ostream& out) const {
        out << "digraph imports_in_flight {\n";
        for (const lock_state& l : locks) {
            out << "  " << detail::dot_quote(l.key)
                << (l.kind == node_kind::module_lock ? " [shape=box];\n"
                    : l.kind == node_kind::mutex     ? " [shape=octagon];\n"
                                                     : " [shape=ellipse, style=dotted];\n");
            out << "  " << detail::dot_quote(l.key) << " -> "
                << detail::dot_quote(thread_name(l.owner)) << " [label=\"held by\"];\n";
            for (const std::thread::id& w : l.waiters) {
                out << "  " << detail::dot_quote(thread_name(w)) << " -> "
                    << detail::dot_quote(l.key) << " [label=\"waits for\", style=dashed];\n";
            }
        }
        out << "}\n";
    }

    // Returns write_dot's output.
    std::string to_dot() const {
        return detail::write_to_string([this](std::ostream& out) { write_dot(out); });
    }

private:
    static std::string thread_name(std::thread::id id) {
        return detail::write_to_string([id](std::ostream& out) { out << "thread " << id; });
    }
};

}  // namespace importlock
