// SPDX-License-Identifier: BSL-1.0
// A loader that takes only the module (the importer parameter is missing).
// expect: importlock: a loader must be callable as void(Module&, importer<Key, Module>&)
#include <importlock/importlock.hpp>

struct module {
    int value = 0;
};

int main() {
    importlock::import_system<module> system;
    system.finder().define("a", [](module& m) { m.value = 1; });
    return static_cast<int>(system.size());
}
