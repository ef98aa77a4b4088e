// SPDX-License-Identifier: BSL-1.0
// A finder with the wrong member name.
// expect: the FinderPolicy needs `std::optional<module_spec<Key, Module>> find_spec
#include <importlock/importlock.hpp>

#include <optional>
#include <string>

struct module {};

struct wrong_finder {
    std::optional<importlock::module_spec<std::string, module>> find(const std::string&) const {
        return std::nullopt;
    }
};

int main() {
    importlock::basic_import_system<std::string, module, importlock::per_key_locks, wrong_finder>
        system;
    return static_cast<int>(system.size());
}
