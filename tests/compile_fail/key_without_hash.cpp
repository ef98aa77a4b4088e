// SPDX-License-Identifier: BSL-1.0
// A key type with no std::hash and no key_traits.
// expect: the Key needs a hash and an equality
#include <importlock/importlock.hpp>

struct point {
    int x = 0;
    int y = 0;
    bool operator==(const point&) const = default;
};

struct module {};

int main() {
    importlock::basic_import_system<point, module> system;
    return static_cast<int>(system.size());
}
