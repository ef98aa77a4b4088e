// SPDX-License-Identifier: BSL-1.0
// importlock/tracked_thread.hpp: a std::jthread whose join() is checked for
// deadlocks together with imports (chapter 42.23, "Import Lock and Dead
// Imports").
#pragma once

#if __has_include(<version>)
#include <version>
#endif

#include <memory>
#include <system_error>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#if defined(__cpp_lib_jthread)
#include <stop_token>
#endif

#include "detail/scope_exit.hpp"
#include "detail/tracked_wait.hpp"
#include "wait_graph_domain.hpp"

namespace importlock {

// Like std::jthread (a thread that joins on destruction), but join() is a
// wait in a wait_graph_domain's wait-for graph: while the thread runs it
// "holds" its own end, so a loader that joins a thread which (transitively)
// waits for an import or tracked_mutex the loader's thread holds does not
// hang. Whichever wait closes the cycle is released: join() throws
// deadlock_error naming the cycle; an import gets its lock policy's
// resolution (the partial module or circular_import_error).
//
// With a standard library that has std::stop_token (__cpp_lib_jthread),
// request_stop() and get_stop_token() work as for std::jthread, and a
// callable whose first parameter is a std::stop_token receives it.
//
// Thread-safety: as std::jthread (one thread may join). Cost: std::thread's
// plus one allocation (the graph node); join() takes the domain's mutex
// twice. The destructor joins; if that join would close a cycle the
// deadlock_error escapes the destructor and std::terminate is called, which
// at least names the cycle instead of hanging silently. Precondition: the
// domain outlives the thread.
class tracked_thread {
public:
    using id = std::thread::id;

    // No thread.
    tracked_thread() noexcept = default;

    // Starts a thread running f(args...) (or f(stop_token, args...)) in the
    // process-wide domain.
    template <class F, class... Args>
        requires(!std::is_same_v<std::remove_cvref_t<F>, tracked_thread> &&
                 !std::is_same_v<std::remove_cvref_t<F>, wait_graph_domain>)
    explicit tracked_thread(F&& f, Args&&... args)
        : tracked_thread(wait_graph_domain::process_wide(), std::forward<F>(f),
                         std::forward<Args>(args)...) {}

    // Starts a thread running f(args...) whose joins are checked in `domain`.
    template <class F, class... Args>
    tracked_thread(wait_graph_domain& domain, F&& f, Args&&... args)
        : state_(std::make_unique<state>(domain)) {
        state* s = state_.get();
        thread_ = std::thread(
            [s](auto fn, auto... a) {
                // The thread holds its own end while it runs.
                s->node.holder.store(std::this_thread::get_id(), std::memory_order_release);
                detail::scope_exit ended([s]() noexcept {
                    s->node.holder.store(std::thread::id{}, std::memory_order_release);
                });
#if defined(__cpp_lib_jthread)
                if constexpr (std::is_invocable_v<decltype(fn), std::stop_token, decltype(a)...>) {
                    // std::apply calls as std::invoke does (pointers to members
                    // too), without <functional>.
                    std::apply(std::move(fn),
                               std::forward_as_tuple(s->stop.get_token(), std::move(a)...));
                } else {
                    std::apply(std::move(fn), std::forward_as_tuple(std::move(a)...));
                }
#else
                std::apply(std::move(fn), std::forward_as_tuple(std::move(a)...));
#endif
            },
            std::forward<F>(f), std::forward<Args>(args)...);
        // Held from here on even if the thread has not run yet; when it has
        // already ended, the stale holder waits for nothing and closes no cycle.
        std::thread::id none{};
        s->node.holder.compare_exchange_strong(none, thread_.get_id(), std::memory_order_acq_rel);
    }

    tracked_thread(tracked_thread&&) noexcept = default;
    // Joins the current thread (as the destructor does), then takes `other`'s.
    tracked_thread& operator=(tracked_thread&& other) {
        if (this != &other) {
            finish();
            state_ = std::move(other.state_);
            thread_ = std::move(other.thread_);
        }
        return *this;
    }
    tracked_thread(const tracked_thread&) = delete;
    tracked_thread& operator=(const tracked_thread&) = delete;

    // Requests stop (when available) and joins.
    ~tracked_thread() { finish(); }

    // Returns whether there is a thread to join.
    bool joinable() const noexcept { return thread_.joinable(); }
    // Returns the thread's id, or id{}.
    id get_id() const noexcept { return thread_.get_id(); }

    // Waits for the thread to end; throws deadlock_error when it never would
    // (see the class comment), std::system_error as std::thread::join does
    // (not joinable, or joining itself).
    void join() {
        if (!joinable()) {
            throw std::system_error(std::make_error_code(std::errc::invalid_argument),
                                    "importlock::tracked_thread::join: not joinable");
        }
        if (get_id() == std::this_thread::get_id()) {
            throw std::system_error(
                std::make_error_code(std::errc::resource_deadlock_would_occur),
                "importlock::tracked_thread::join: a thread cannot join itself");
        }
        detail::tracked_wait(*state_->domain, state_->node, [&] { thread_.join(); });
    }

#if defined(__cpp_lib_jthread)
    // Asks the thread to stop (its std::stop_token); returns whether this call did.
    bool request_stop() noexcept { return state_ != nullptr && state_->stop.request_stop(); }
    // Returns the thread's stop source (no state: an empty one).
    std::stop_source get_stop_source() noexcept {
        return state_ != nullptr ? state_->stop : std::stop_source(std::nostopstate);
    }
    // Returns the token the thread's callable receives.
    std::stop_token get_stop_token() const noexcept {
        return state_ != nullptr ? state_->stop.get_token() : std::stop_token();
    }
#endif

private:
    struct state {
        explicit state(wait_graph_domain& d) : domain(&d) {
            node.kind = detail::wait_kind::thread;
            node.describe = [](const detail::wait_node& n) {
                const std::thread::id h = n.holder.load(std::memory_order_acquire);
                return h == std::thread::id{} ? std::string("the end of a thread")
                                              : "the end of thread " + detail::thread_label(h);
            };
        }
        detail::named_node node;  // held by the thread while it runs
        wait_graph_domain* domain;
#if defined(__cpp_lib_jthread)
        std::stop_source stop;
#endif
    };

    void finish() {
        if (!joinable()) return;
#if defined(__cpp_lib_jthread)
        request_stop();
#endif
        join();
    }

    std::unique_ptr<state> state_;
    std::thread thread_;
};

}  // namespace importlock
