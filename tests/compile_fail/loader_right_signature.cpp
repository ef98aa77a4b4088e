// SPDX-License-Identifier: BSL-1.0
// The positive control of loader_wrong_signature.cpp: the same program with a loader
// of the right signature, in each form define() accepts, must compile (with
// -Wall -Wextra -Werror), so that the failure above is the signature's alone.
// expect: <compiles>
#include <importlock/importlock.hpp>

#include <functional>
#include <memory>
#include <string>

struct module {
    int value = 0;
};

int main() {
    importlock::import_system<module> system;
    system.finder().define("a", [](module& m, auto&) { m.value = 1; });
    system.finder().define("b", [](module& m, importlock::importer<std::string, module>& imp) {
        m.value = imp.import_module("a")->value + 1;
    });
    std::function<void(module&, importlock::importer<std::string, module>&)> loader =
        [](module& m, auto&) { m.value = 3; };
    system.finder().define("c", loader);
    system.finder().define(
        "d", [](module& m, auto&) { m.value = 4; },
        [](const std::string&) { return std::make_shared<module>(); });
    return system.import_module("b")->value == 2 ? 0 : 1;
}
