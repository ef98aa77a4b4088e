// SPDX-License-Identifier: BSL-1.0
// importlock/importer.hpp: the interface a loader imports through.
#pragma once

#include <memory>

namespace importlock {

// Imports keys on behalf of a running loader: every basic_import_system with
// this Key and Module is an importer, whatever its policies, so loaders can be
// written once and used with any lock or finder policy.
//
// Thread-safety: every member may be called from any thread; the semantics are
// those of the basic_import_system that handed the importer to the loader.
template <class Key, class Module>
class importer {
public:
    using key_type = Key;
    using module_type = Module;

    // Imports `key` (nested imports are re-entrant and cycle-aware) and returns
    // the module, partially initialised when the import closed a cycle.
    virtual std::shared_ptr<Module> import_module(const Key& key) = 0;

    // Imports `key` like import_module and returns a reference that stays
    // valid until `key` is erased or blocked, or the system is destroyed.
    virtual Module& import_ref(const Key& key) = 0;

    // Returns the registered module for `key` (even while it initialises), or
    // null; never imports.
    virtual std::shared_ptr<Module> get(const Key& key) const = 0;

protected:
    importer() = default;
    importer(const importer&) = default;
    importer& operator=(const importer&) = default;
    ~importer() = default;
};

}  // namespace importlock
