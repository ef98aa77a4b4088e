// SPDX-License-Identifier: BSL-1.0
// importlock/keys/path_keys.hpp: path keys (std::filesystem::path, or any type
// with its interface), with the parent directory as parent ("plugins/audio/mp3"
// needs "plugins/audio"), without including <filesystem>.
//
// key_traits is specialised for every type that has std::filesystem::path's
// interface (detail::path_like below): std::filesystem::path, and a type that
// mimics it. The
// specialisation names no std::filesystem type, so this header costs a unit
// that never uses path keys nothing of <filesystem> (about 10,000 preprocessed
// lines with libstdc++ 12, <sstream> and <locale> among them): the umbrella
// header includes it. A unit that uses std::filesystem::path keys includes
// <filesystem> itself, as it must to name the type, or
// keys/filesystem_path.hpp, which includes both.
#pragma once

#include <concepts>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "../key_traits.hpp"

namespace importlock {
namespace detail {

// A path type: what the key_traits below use of std::filesystem::path, and
// its `format` enumeration (std::filesystem::path::format::generic_format),
// so that a type matches only when it mimics std::filesystem::path on
// purpose: another class with parent_path() is not taken for a path, and
// gets the generic traits (or its own specialisation, which always wins). The
// hash is found by argument-dependent lookup (std::filesystem::hash_value).
template <class Path>
concept path_like = requires(const Path& p, const std::string& text) {
    typename Path::string_type;
    typename Path::value_type;
    Path::format::generic_format;
    { p.generic_string() } -> std::convertible_to<std::string>;
    { p.parent_path() } -> std::same_as<Path>;
    { p.has_relative_path() } -> std::convertible_to<bool>;
    { p.empty() } -> std::convertible_to<bool>;
    { p == p } -> std::convertible_to<bool>;
    { hash_value(p) } -> std::convertible_to<std::size_t>;
    Path(text);
};

}  // namespace detail

template <class Path>
    requires detail::path_like<Path>
struct key_traits<Path> {
    // Hashes and compares paths lexically, as std::filesystem does.
    struct hasher {
        std::size_t operator()(const Path& key) const noexcept {
            return static_cast<std::size_t>(hash_value(key));
        }
    };
    struct key_equal {
        bool operator()(const Path& a, const Path& b) const noexcept { return a == b; }
    };

    // Returns the path in generic form ('/' separators).
    static std::string to_string(const Path& key) { return key.generic_string(); }

    // Returns the parent directory, or nullopt for a single component (and
    // for a child of the root: "/" is not imported).
    static std::optional<Path> parent(const Path& key) {
        Path up = key.parent_path();
        if (up.empty() || up == key || !up.has_relative_path()) return std::nullopt;
        return up;
    }

    // Reads back to_string's generic form (startup_profile's load); an empty
    // text is the empty path.
    static std::optional<Path> from_string(std::string_view text) {
        return Path(std::string(text));
    }
};

}  // namespace importlock
