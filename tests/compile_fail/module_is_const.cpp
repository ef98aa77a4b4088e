// SPDX-License-Identifier: BSL-1.0
// A const module type: loaders need a mutable object to initialise.
// expect: the Module must be a non-const, non-array object type
#include <importlock/importlock.hpp>

#include <string>

struct module {};

int main() {
    importlock::basic_import_system<std::string, const module> system;
    return static_cast<int>(system.size());
}
