// SPDX-License-Identifier: BSL-1.0
// importlock/keys/name_sequence.hpp: std::vector<std::string> keys, a dotted
// name already split: {"pkg", "sub"} has the parent {"pkg"}.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "../key_traits.hpp"

namespace importlock {

template <>
struct key_traits<std::vector<std::string>> {
    // Combines the components' hashes (boost::hash_combine's mixing).
    struct hasher {
        std::size_t operator()(const std::vector<std::string>& key) const noexcept {
            std::size_t seed = key.size();
            for (const std::string& part : key) {
                seed ^= std::hash<std::string>{}(part) + 0x9e3779b97f4a7c15ull + (seed << 6) +
                        (seed >> 2);
            }
            return seed;
        }
    };
    using key_equal = std::equal_to<std::vector<std::string>>;

    // Returns the components joined with dots: "pkg.sub".
    static std::string to_string(const std::vector<std::string>& key) {
        std::string out;
        for (const std::string& part : key) {
            if (!out.empty()) out += '.';
            out += part;
        }
        return out;
    }

    // Returns the key without its last component, or nullopt for one component.
    static std::optional<std::vector<std::string>> parent(const std::vector<std::string>& key) {
        if (key.size() <= 1) return std::nullopt;
        return std::vector<std::string>(key.begin(), key.end() - 1);
    }

    // Splits `text` at its dots (startup_profile's load): the inverse of
    // to_string for components without a dot; "" is the empty sequence. A
    // key that does not round-trip ({"a.b"}, {""}) is refused by
    // startup_profile::save.
    static std::optional<std::vector<std::string>> from_string(std::string_view text) {
        std::vector<std::string> key;
        if (text.empty()) return key;
        for (std::size_t start = 0;;) {
            const std::size_t dot = text.find('.', start);
            key.emplace_back(text.substr(start, dot == std::string_view::npos ? dot : dot - start));
            if (dot == std::string_view::npos) return key;
            start = dot + 1;
        }
    }
};

}  // namespace importlock
