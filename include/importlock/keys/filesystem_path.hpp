// SPDX-License-Identifier: BSL-1.0
// importlock/keys/filesystem_path.hpp: std::filesystem::path keys, with the
// parent directory as parent ("plugins/audio/mp3" needs "plugins/audio").
#pragma once

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "../key_traits.hpp"

namespace importlock {

template <>
struct key_traits<std::filesystem::path> {
    // Hashes and compares paths lexically, as std::filesystem does.
    struct hasher {
        std::size_t operator()(const std::filesystem::path& key) const noexcept {
            return std::filesystem::hash_value(key);
        }
    };
    using key_equal = std::equal_to<std::filesystem::path>;

    // Returns the path in generic form ('/' separators).
    static std::string to_string(const std::filesystem::path& key) { return key.generic_string(); }

    // Returns the parent directory, or nullopt for a single component (and
    // for a child of the root: "/" is not imported).
    static std::optional<std::filesystem::path> parent(const std::filesystem::path& key) {
        std::filesystem::path up = key.parent_path();
        if (up.empty() || up == key || !up.has_relative_path()) return std::nullopt;
        return up;
    }

    // Reads back to_string's generic form (startup_profile's load); an empty
    // text is the empty path.
    static std::optional<std::filesystem::path> from_string(std::string_view text) {
        return std::filesystem::path(std::string(text));
    }
};

}  // namespace importlock
