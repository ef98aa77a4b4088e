// SPDX-License-Identifier: BSL-1.0
// importlock/startup/observer_group.hpp: one observer that forwards every hook
// to several, so that a system (which has one observer) feeds a
// startup_profile, a trace_recorder and an import_time_recorder at once.
//
// Purpose: `system.set_observer(std::make_shared<observer_group<Key>>(a, b, c))`.
// Hooks are forwarded to the members in order. A member's throwing
// on_import_begin or on_wait propagates (aborting the import, as the hook
// contract says) after the members before it are told the import failed /
// the wait ended, so that every member sees balanced hooks; a member's
// throwing outcome hook is swallowed and the next members still hear it.
//
// Thread-safety: the member list is fixed at construction; hooks may run
// concurrently, each member must be thread-safe (observer.hpp).
// Cost: one virtual call per member per hook.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../observer.hpp"

namespace importlock {

template <class Key>
class observer_group : public import_observer<Key> {
public:
    using member_type = std::shared_ptr<import_observer<Key>>;

    // Forwards to `members` in order; null members are skipped.
    explicit observer_group(std::vector<member_type> members) : members_(std::move(members)) {
        std::erase(members_, nullptr);
    }
    template <class... Observers>
    explicit observer_group(std::shared_ptr<Observers>... members)
        : observer_group(std::vector<member_type>{member_type(std::move(members))...}) {}

    const std::vector<member_type>& members() const noexcept { return members_; }

    void on_import_begin(const Key& key) override {
        aborted() = nullptr;
        for (std::size_t i = 0; i < members_.size(); ++i) {
            try {
                members_[i]->on_import_begin(key);
            } catch (...) {
                // The members that saw the begin hear of the failure now; the
                // system's on_import_failed for this import is then skipped.
                const std::exception_ptr error = std::current_exception();
                for (std::size_t j = 0; j < i; ++j)
                    swallow([&] { members_[j]->on_import_failed(key, error); });
                aborted() = this;
                throw;
            }
        }
    }

    void on_import_end(const Key& key, std::chrono::nanoseconds elapsed) override {
        aborted() = nullptr;
        for (const member_type& m : members_) swallow([&] { m->on_import_end(key, elapsed); });
    }

    void on_import_failed(const Key& key, std::exception_ptr error) override {
        if (aborted() == this) {  // the failure of a begin this group aborted
            aborted() = nullptr;
            return;
        }
        for (const member_type& m : members_) swallow([&] { m->on_import_failed(key, error); });
    }

    void on_wait(const Key& key, std::thread::id holder) override {
        const auto start = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < members_.size(); ++i) {
            try {
                members_[i]->on_wait(key, holder);
            } catch (...) {
                // No on_wait_end follows a throwing on_wait: end it here for
                // the members that saw it.
                const auto waited = std::chrono::steady_clock::now() - start;
                for (std::size_t j = 0; j < i; ++j)
                    swallow([&] { members_[j]->on_wait_end(key, waited); });
                throw;
            }
        }
    }

    void on_wait_end(const Key& key, std::chrono::nanoseconds waited) override {
        for (const member_type& m : members_) swallow([&] { m->on_wait_end(key, waited); });
    }

    void on_cycle(const Key& key, const std::vector<std::string>& chain, bool partial) override {
        for (const member_type& m : members_) swallow([&] { m->on_cycle(key, chain, partial); });
    }

    void on_reload(const Key& key, std::chrono::nanoseconds elapsed, bool ok) override {
        for (const member_type& m : members_) swallow([&] { m->on_reload(key, elapsed, ok); });
    }

private:
    template <class Hook>
    static void swallow(Hook&& hook) noexcept {
        try {
            hook();
        } catch (...) {
        }
    }

    // The group whose on_import_begin threw last on this thread, until the
    // system reports that import's failure.
    static const observer_group*& aborted() noexcept {
        thread_local const observer_group* group = nullptr;
        return group;
    }

    std::vector<member_type> members_;
};

}  // namespace importlock
