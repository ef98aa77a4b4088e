// SPDX-License-Identifier: BSL-1.0
// importlock/wait_graph_domain.hpp: the threads whose waits are checked for
// cycles together.
#pragma once

#include <cstddef>
#include <mutex>

#include "detail/wait_for_graph.hpp"

namespace importlock {

namespace detail {
template <class Key, class Policy, class Entry>
class lock_protocol;
struct domain_access;
}  // namespace detail

// A wait-for graph shared by the import systems that are given it (DESIGN
// §1.10). A cycle of waits is detected when every lock in it belongs to
// systems of one domain: give systems whose loaders import from each other
// the same domain. The default, process_wide(), is what every system uses
// unless told otherwise, so cycles through loaders of different systems are
// detected out of the box; a separate domain isolates a group of systems
// (e.g. a test) from the rest of the process.
//
// tracked_mutex and tracked_thread (tracked_mutex.hpp, tracked_thread.hpp)
// join the same graph, so that cycles through the program's own locks and
// joins are found too. The domain is touched only when a thread has to wait
// (for an import, a tracked mutex or a join): an uncontended import or lock
// never takes its mutex. Thread-safety: any
// thread. Precondition: a domain outlives the systems that use it (the
// process-wide one is never destroyed).
class wait_graph_domain {
public:
    wait_graph_domain() = default;
    wait_graph_domain(const wait_graph_domain&) = delete;
    wait_graph_domain& operator=(const wait_graph_domain&) = delete;

    // Returns the domain of every system not given another one.
    static wait_graph_domain& process_wide() {
        static wait_graph_domain* const domain = new wait_graph_domain;  // never destroyed
        return *domain;
    }

    // Returns the number of threads blocked on a lock of this domain's systems,
    // a tracked_mutex or a tracked_thread's join.
    std::size_t waiting_threads() const {
        std::lock_guard lock(mutex_);
        return graph_.size();
    }

private:
    template <class Key, class Policy, class Entry>
    friend class detail::lock_protocol;
    friend struct detail::domain_access;  // tracked_mutex, tracked_thread

    mutable std::mutex mutex_;  // guards graph_ and every domain lock's holder
    detail::wait_for_graph<detail::wait_node> graph_;
};

}  // namespace importlock
