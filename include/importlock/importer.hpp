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
//
// Lifetime (DESIGN §1.13): the importer a loader receives stays valid while
// the load runs, and for as long as the module object it was handed for is
// alive through any std::shared_ptr the system handed out (import_module,
// get, a partial module seen through a cycle, bind_child's owner, handles)
// and the system is alive. So a module may keep it for lazy imports, and a
// helper thread the loader started may use it after the loader returned
// while the module is alive, also after its key was erased. A reload hands
// the loader the same importer again. Once nobody holds the module (after a
// failed load, or an erase, or teardown) the importer is gone. While the load
// (or a reload) runs, the imports through it that succeed are recorded as
// the key's dependencies, also those of helper threads; imports after it
// ended are just imports.
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
