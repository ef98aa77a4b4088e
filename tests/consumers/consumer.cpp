// SPDX-License-Identifier: BSL-1.0
// A program that uses importlock as a dependency, built by tools/test.sh's
// consumers stage through find_package, add_subdirectory and a Meson subproject.
#include <importlock/importlock.hpp>

#include <string>

struct module {
    int value = 0;
};

int main() {
    importlock::import_system<module> modules;
    modules.finder().define("a", [](module& m, auto&) { m.value = IMPORTLOCK_VERSION; });
    return modules.import_module("a")->value == IMPORTLOCK_VERSION ? 0 : 1;
}
