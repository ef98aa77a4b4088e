// importlock/module_spec.hpp: what a finder returns for a key.
#pragma once

#include <functional>
#include <memory>

#include "importer.hpp"

namespace importlock {

// Says how to build one module: CPython's ModuleSpec with its loader.
//
// `loader` runs once per successful import, with the module object already
// registered as initialising; it may import other keys through the importer.
// `factory`, when set, creates the module object (CPython's create_module);
// when empty the object is `std::make_shared<Module>()`.
template <class Key, class Module>
struct module_spec {
    using loader_type = std::function<void(Module&, importer<Key, Module>&)>;
    using factory_type = std::function<std::shared_ptr<Module>(const Key&)>;

    loader_type loader;
    factory_type factory;
};

}  // namespace importlock
