// SPDX-License-Identifier: BSL-1.0
// importlock/module_spec.hpp: what a finder returns for a key.
#pragma once

#include <memory>

#include "detail/function.hpp"
#include "importer.hpp"

namespace importlock {

// Says how to build one module: CPython's ModuleSpec with its loader. A spec
// has either a loader (two-phase) or a builder (single-phase).
//
// Two-phase (CPython's): `factory`, when set, creates the module object
// (create_module; when empty the object is a value-initialised Module,
// allocated in one block with the importer its loader receives); the
// object is registered as initialising; then `loader` runs on it (exec_module)
// and may import other keys through the importer. A circular import sees the
// partially initialised object, as the lock policy allows.
//
// Single-phase: `builder` returns the finished module; nothing is registered
// until it returns, so no partial object exists and every cycle through the
// key throws circular_import_error, whatever the lock policy. Such a module
// cannot be reloaded in place.
//
// The three members are copyable type-erased callables with std::function's
// interface (detail/function.hpp): assign a lambda, a function or nullptr, test
// them with `if (spec.loader)`. They take no pointers to members.
template <class Key, class Module>
struct module_spec {
    using loader_type = detail::function<void(Module&, importer<Key, Module>&)>;
    using factory_type = detail::function<std::shared_ptr<Module>(const Key&)>;
    using builder_type =
        detail::function<std::shared_ptr<Module>(const Key&, importer<Key, Module>&)>;

    loader_type loader;
    factory_type factory;
    builder_type builder;
};

}  // namespace importlock
