// SPDX-License-Identifier: BSL-1.0
// importlock/module_traits.hpp: customisation points on the module type.
#pragma once

#include <memory>

namespace importlock {

// Describes what importlock does with a module object beyond storing it.
// Specialise module_traits<Module> to customise; the default does nothing.
template <class Module>
struct module_traits {
    // Offers a freshly loaded child to its parent, CPython's
    // `setattr(parent_module, child_name, module)`. Called on the importing
    // thread after the child's loader returned and before the child is marked
    // initialised; the parent may still be initialising (a package whose
    // loader imports its own submodule). If it throws, the child's import
    // fails like a failing loader.
    template <class Key>
    static void bind_child(Module& /*parent*/, const Key& /*child_key*/,
                           const std::shared_ptr<Module>& /*child*/) {}
};

}  // namespace importlock
