// SPDX-License-Identifier: BSL-1.0
// A startup_profile of a key type whose key_traits cannot read a key back.
// expect: key_traits<Key>::from_string
#include <importlock/startup/startup_profile.hpp>

#include <cstddef>
#include <functional>
#include <sstream>

struct point {
    int x = 0;
    bool operator==(const point&) const = default;
};

template <>
struct std::hash<point> {
    std::size_t operator()(const point& p) const noexcept { return std::hash<int>{}(p.x); }
};

int main() {
    importlock::startup_profile<point> profile;
    profile.add_key(point{1});
    std::ostringstream out;
    profile.save(out);
    return 0;
}
