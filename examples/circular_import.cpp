// SPDX-License-Identifier: BSL-1.0
// Circular imports (42.7, 42.8): the default policy hands the inner import the
// partially initialised module, as CPython does; the strict policy refuses.
#include <importlock/importlock.hpp>

#include <cstdio>
#include <memory>
#include <string>

struct module {
    int value = 0;  // set last by each loader, so 0 means "partial"
    std::shared_ptr<module> peer;
};

template <class System>
void define_cycle(System& system) {
    system.finder().define("a", [](module& a, auto& imp) {
        a.peer = imp.import_module("b");  // a imports b ...
        a.value = 1;
    });
    system.finder().define("b", [](module& b, auto& imp) {
        auto a = imp.import_module("a");  // ... and b imports a, still initialising
        std::printf("  b sees a.value = %d (partially initialised)\n", a->value);
        b.value = 2;
    });
}

int main() {
    std::puts("per_key_locks (CPython's behaviour):");
    importlock::import_system<module> lenient;
    define_cycle(lenient);
    const auto a = lenient.import_module("a");
    std::printf("  a.value = %d, a.peer->value = %d\n", a->value, a->peer->value);
    a->peer.reset();  // break the a <-> b ownership cycle the loaders built

    std::puts("strict_per_key_locks:");
    importlock::basic_import_system<std::string, module, importlock::strict_per_key_locks> strict;
    define_cycle(strict);
    try {
        strict.import_module("a");
        return 1;
    } catch (const importlock::circular_import_error& e) {
        std::printf("  %s\n", e.what());
    }
    std::printf("  after the error: contains(a) = %d, contains(b) = %d\n", strict.contains("a"),
                strict.contains("b"));
    return strict.contains("a") || strict.contains("b") ? 1 : 0;
}
