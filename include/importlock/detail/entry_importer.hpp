// SPDX-License-Identifier: BSL-1.0
// importlock/detail/entry_importer.hpp: the importer a loader receives
// (DESIGN §1.13: importers outlive loaders).
//
// Purpose: the importer handed to a key's loader (and to its reloads). It
// lives with the module object it was handed for, in the block the system's
// shared_ptrs to that module own (module_factory.hpp): a module may keep it
// for lazy imports, and a helper thread may use it after the loader returned,
// for as long as the module is alive through a shared_ptr the system handed
// out (and the system is alive). While a load of the key runs, a load_frame
// is attached and every import through the importer that SUCCEEDS is
// recorded in it (the key's dependencies); once the load ends the frame is
// detached and later imports are just imports. A reload attaches the same
// importer again (it re-runs the loader on the same module object); a new
// module object of the key (after erase, or a failed load) gets a new
// importer, so that a kept importer of an earlier module never records into
// the load of a later one.
//
// Thread-safety: any thread (a loader's helper threads included). Unless
// `Guard` is null_guard (single-threaded policies), a lock bit in the word
// that holds the frame serialises recording, attaching and detaching, so that
// no recording into a frame runs once it is detached. Cost: one compare-and-
// swap and one store per import through the importer, on top of the import
// itself, and the same to attach (the first attach: one store) or detach;
// 24 bytes beside each module object, in its allocation (the vtable pointer,
// the system, and the frame with its lock and a flag in one word), and one
// pointer in the registry entry (entry_extra).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <type_traits>

#include "../importer.hpp"
#include "registry_entry.hpp"
#include "scope_exit.hpp"
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

    // Starts recording into `frame`. The first attach is a plain store.
    // Precondition: no other thread uses the importer during its first attach
    // (a system hands it only to the loaders it attached it for). Later attaches
    // take the word's lock (an RMW): a helper thread of an earlier load may be
    // inside record() holding it.
    void attach(Frame* frame) noexcept {
        const std::uintptr_t attached = reinterpret_cast<std::uintptr_t>(frame) | handed_out;
        if constexpr (guarded) {
            if (word_.load(std::memory_order_relaxed) != 0) lock_word();
        }
        word_.store(attached, std::memory_order_release);
    }
    // Stops recording; once it returns no recording into the frame runs.
    void detach() noexcept {
        if constexpr (guarded) lock_word();
        word_.store(handed_out, std::memory_order_release);
    }

private:
    // The attached frame's address (0: none) and two flags in its low bits (a
    // frame is at least 4-aligned), so that the importer costs one word: for a
    // guarded importer `busy`, the lock that serialises recording, attaching
    // and detaching; `handed_out`, set by the first attach and kept, once a
    // loader may hold the importer.
    static constexpr bool guarded = !std::is_same_v<Guard, null_guard>;
    static constexpr std::uintptr_t busy = 1;
    static constexpr std::uintptr_t handed_out = 2;
    static constexpr std::uintptr_t flags = busy | handed_out;
    static_assert(alignof(Frame) > flags, "the frame's low address bits hold the flags");
    static Frame* frame_in(std::uintptr_t w) noexcept {
        return reinterpret_cast<Frame*>(w & ~flags);
    }

    // Takes the word's lock (spinning, as spin_lock does); returns the frame.
    std::uintptr_t lock_word() noexcept {
        std::uintptr_t w = word_.load(std::memory_order_relaxed);
        for (;;) {
            if ((w & busy) != 0) {
                std::this_thread::yield();
                w = word_.load(std::memory_order_relaxed);
            } else if (word_.compare_exchange_weak(w, w | busy, std::memory_order_acquire,
                                                   std::memory_order_relaxed)) {
                return w;
            }
        }
    }

    void record(const Key& key) {
        if constexpr (guarded) {
            const std::uintptr_t frame = lock_word();
            // Released (the frame put back) however record() leaves.
            const scope_exit unlock(
                [&]() noexcept { word_.store(frame, std::memory_order_release); });
            if (Frame* f = frame_in(frame)) f->record(key);
        } else {
            if (Frame* f = frame_in(word_.load(std::memory_order_relaxed))) f->record(key);
        }
    }

    System& system_;
    std::atomic<std::uintptr_t> word_{0};
};

// What a system keeps in each registry entry besides the registration: the
// address of the importer of the module the entry holds (the importer lives
// with the module, module_factory.hpp), so that a reload attaches the importer
// the first load attached. Written by the thread holding the key's claim when
// it registers a module (null again when that load fails), read only by a
// thread holding the claim (its happens-before); meaningful only while the
// entry holds that module. (The key's module lock record, while one is held
// or awaited, is linked from the entry's claim word: lock_protocol.hpp.)
template <class Importer>
struct entry_extra {
    // The entry and the system that inserts it (registry::find_or_insert's
    // arguments); neither is kept.
    template <class Entry, class System>
    entry_extra(Entry&, System&) noexcept {}

    Importer* importer = nullptr;
};

}  // namespace importlock::detail
