// SPDX-License-Identifier: BSL-1.0
// importlock/detail/entry_importer.hpp: the importer a loader receives
// (DESIGN §1.13: importers outlive loaders).
//
// Purpose: each registry entry embeds one importer, so the importer handed to
// a key's loader lives as long as the system: a module may keep it for lazy
// imports, and a helper thread may use it after the loader returned. While a
// load of the key runs, a load_frame is attached and every import through the
// importer that SUCCEEDS is recorded in it (the key's dependencies); once the
// load ends the frame is detached and later imports are just imports.
//
// Thread-safety: any thread (a loader's helper threads included); `Guard` (a
// spin lock, or nothing for single-threaded policies) serialises recording
// and detaching, so that no recording into a frame runs once it is detached.
// Attaching is one release store: the frame is new, and a recording that
// sees it takes the guard first. Cost: one spin lock per import through the
// importer, on top of the import itself; attaching is a store, detaching a
// spin lock; 32 bytes per entry.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "../importer.hpp"
#include "wait_for_graph.hpp"

namespace importlock::detail {

template <class Key, class Module, class System, class Frame, class Guard>
class entry_importer final : public importer<Key, Module> {
public:
    explicit entry_importer(System& system) noexcept : system_(system) {}
    entry_importer(const entry_importer&) = delete;
    entry_importer& operator=(const entry_importer&) = delete;

    std::shared_ptr<Module> import_module(const Key& key) override {
        std::shared_ptr<Module> module = system_.import_module(key);
        record(key);
        return module;
    }
    Module& import_ref(const Key& key) override {
        Module& module = system_.import_ref(key);
        record(key);
        return module;
    }
    std::shared_ptr<Module> get(const Key& key) const override { return system_.get(key); }

    // Starts recording into `frame`.
    void attach(Frame* frame) noexcept { frame_.store(frame, std::memory_order_release); }
    // Stops recording; once it returns no recording into the frame runs.
    void detach() noexcept {
        std::lock_guard guard(guard_);
        frame_.store(nullptr, std::memory_order_relaxed);
    }

private:
    void record(const Key& key) {
        std::lock_guard guard(guard_);
        if (Frame* frame = frame_.load(std::memory_order_acquire)) frame->record(key);
    }

    System& system_;
    Guard guard_;  // recording and detach (spin_lock; null_guard for no_locks)
    std::atomic<Frame*> frame_{nullptr};
};

// What a system keeps in each registry entry besides the registration: the
// importer, and the key's module lock while one is held or awaited (owned by
// the lock protocol).
template <class Key, class Module, class System, class Frame, class Guard>
struct entry_extra {
    template <class Entry>
    entry_extra(Entry&, System& system) noexcept : importer(system) {}

    wait_node* lock = nullptr;
    entry_importer<Key, Module, System, Frame, Guard> importer;
};

}  // namespace importlock::detail
