// SPDX-License-Identifier: BSL-1.0
// importlock/key_traits.hpp: how importlock hashes, compares, prints and
// climbs a key type.
//
// Specialise key_traits<Key> (or inherit key_traits<Key> and override one
// member) to teach importlock a key type. Every member is static and must be
// thread-safe: importlock calls them from any thread without locking.
#pragma once

#include <concepts>
#include <cstddef>
#include <limits>
#include <optional>
#include <ostream>
#include <streambuf>
// std::hash and std::equal_to: <string> declares them in libstdc++, libc++ and
// MSVC's STL; <functional> would add 11,600 lines to every unit with libstdc++ 12.
#include <string>
#include <string_view>
#include <type_traits>

namespace importlock {

namespace detail {

// A streambuf that appends to a std::string: operator<< formatting without <sstream>
// (which costs compile time in every translation unit, for a cold path).
class string_appender final : public std::streambuf {
public:
    explicit string_appender(std::string& out) noexcept : out_(out) {}

protected:
    int_type overflow(int_type c) override {
        if (!traits_type::eq_int_type(c, traits_type::eof())) {
            out_.push_back(traits_type::to_char_type(c));
        }
        return traits_type::not_eof(c);
    }
    std::streamsize xsputn(const char* s, std::streamsize n) override {
        out_.append(s, static_cast<std::size_t>(n));
        return n;
    }

private:
    std::string& out_;
};

// Returns what `write(os)` writes to a std::ostream.
template <class Write>
std::string write_to_string(Write&& write) {
    std::string out;
    string_appender buffer(out);
    std::ostream os(&buffer);
    write(os);
    return out;
}

template <class T>
concept ostream_printable = requires(std::ostream& os, const T& value) { os << value; };

// An integer type that operator<< prints as a number (not a character, not bool).
template <class T>
concept decimal_integer =
    std::integral<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char> &&
    !std::is_same_v<T, signed char> && !std::is_same_v<T, unsigned char> &&
    !std::is_same_v<T, wchar_t> && !std::is_same_v<T, char8_t> && !std::is_same_v<T, char16_t> &&
    !std::is_same_v<T, char32_t>;

// Parses what operator<< writes for a decimal_integer: an optional '-' (signed
// types only) and digits, nothing else; nullopt on anything else or overflow.
// No <charconv>: this header is in every translation unit.
template <decimal_integer T>
std::optional<T> parse_decimal(std::string_view text) noexcept {
    const bool negative = !text.empty() && text.front() == '-';
    if (negative) {
        if constexpr (std::is_unsigned_v<T>) return std::nullopt;
        text.remove_prefix(1);
    }
    if (text.empty()) return std::nullopt;
    using U = std::make_unsigned_t<T>;
    const U max = static_cast<U>(std::numeric_limits<T>::max());
    const U limit = negative ? static_cast<U>(max + 1u) : max;  // |min| = max + 1
    U value = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        const U digit = static_cast<U>(c - '0');
        if (value > static_cast<U>((limit - digit) / 10u)) return std::nullopt;
        value = static_cast<U>(value * 10u + digit);
    }
    if (!negative) return static_cast<T>(value);
    if (value == 0) return T{0};
    // -(value - 1) - 1 stays in T's range for value == |min|.
    return static_cast<T>(-static_cast<T>(value - 1u) - 1);
}

}  // namespace detail

// Describes a key type: hash, equality, printing and parent. The default has
// no hierarchy (every key is top level) and prints through operator<< when
// the key has one.
template <class Key>
struct key_traits {
    // The hash and equality the registry and lock map use.
    using hasher = std::hash<Key>;
    using key_equal = std::equal_to<Key>;

    // Formats a key for error messages and diagnostics.
    static std::string to_string(const Key& key) {
        if constexpr (std::is_convertible_v<const Key&, std::string>) {
            return std::string(key);
        } else if constexpr (detail::ostream_printable<Key>) {
            return detail::write_to_string([&key](std::ostream& out) { out << key; });
        } else {
            return "<unprintable key>";
        }
    }

    // Returns the key that must be imported before `key`, or nullopt for a
    // top-level key (CPython's `name.rpartition('.')[0]`).
    static std::optional<Key> parent(const Key&) { return std::nullopt; }

    // Optional member: reads back what to_string wrote, or nullopt when
    // `text` names no key (used to load a saved startup_profile). Provided
    // here for integer keys; specialisations provide it for their key type.
    static std::optional<Key> from_string(std::string_view text)
        requires detail::decimal_integer<Key>
    {
        return detail::parse_decimal<Key>(text);
    }
};

// Dotted names, as CPython's: the parent of "pkg.sub.mod" is "pkg.sub".
template <>
struct key_traits<std::string> {
    using hasher = std::hash<std::string>;
    using key_equal = std::equal_to<std::string>;

    // Returns the key itself.
    static std::string to_string(const std::string& key) { return key; }

    // Returns everything before the last dot, or nullopt when there is none
    // (or the key starts with its only dot, which has no meaningful parent).
    static std::optional<std::string> parent(const std::string& key) {
        const auto dot = key.rfind('.');
        if (dot == std::string::npos || dot == 0) return std::nullopt;
        return key.substr(0, dot);
    }

    // Returns `text` as a key: every string is one (startup_profile's load).
    static std::optional<std::string> from_string(std::string_view text) {
        return std::string(text);
    }

    // Returns how many parents parent() would climb through (the dots after
    // the first character), without copying: lets an import refuse a key
    // deeper than its limit at once.
    static std::size_t ancestor_count(const std::string& key) noexcept {
        std::size_t n = 0;
        for (std::size_t i = 1; i < key.size(); ++i) n += key[i] == '.' ? 1u : 0u;
        return n;
    }
};

// Holds when importlock can use Key with the traits `Traits`: copyable, and
// hashable and comparable through the traits' hasher and key_equal.
namespace detail {

// std::equal_to<Key>'s call operator is unconstrained: check operator== itself.
template <class Key, class KeyEqual>
concept usable_key_equal =
    !std::is_same_v<KeyEqual, std::equal_to<Key>> || std::equality_comparable<Key>;

}  // namespace detail

template <class Key, class Traits = key_traits<Key>>
concept import_key =
    detail::usable_key_equal<Key, typename Traits::key_equal> && std::copy_constructible<Key> &&
    std::default_initializable<typename Traits::hasher> &&
    std::default_initializable<typename Traits::key_equal> &&
    requires(const Key& key, const typename Traits::hasher& hash,
             const typename Traits::key_equal& equal) {
        { hash(key) } -> std::convertible_to<std::size_t>;
        { equal(key, key) } -> std::convertible_to<bool>;
        { Traits::to_string(key) } -> std::convertible_to<std::string>;
        { Traits::parent(key) } -> std::same_as<std::optional<Key>>;
    };

}  // namespace importlock
