// SPDX-License-Identifier: BSL-1.0
// tests/support/file_cache_artefact.hpp: the artefacts the file_cache tests
// build, shared by tests/test_file_cache.cpp and its helper program.
//
// An artefact is a payload ("<key> built by process <pid>\n" and filler
// bytes derived from the key) followed by a checksum line "#<fnv-1a hex>\n":
// a file is whole exactly when its checksum matches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

namespace importlock_test {

// Returns the 64-bit FNV-1a hash of `bytes`.
inline std::uint64_t fnv1a(std::string_view bytes, std::uint64_t hash = 14695981039346656037ull) {
    for (const char c : bytes) {
        hash ^= static_cast<unsigned char>(c);
        hash *= 1099511628211ull;
    }
    return hash;
}

// Returns the checksum line of `payload`.
inline std::string checksum_line(std::string_view payload) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "#%016llx\n",
                  static_cast<unsigned long long>(fnv1a(payload)));
    return buffer;
}

// Returns the payload of `key` built by `pid`, `size` bytes of filler.
inline std::string artefact_payload(const std::string& key, long long pid, std::size_t size) {
    std::string out = key + " built by process " + std::to_string(pid) + "\n";
    std::uint64_t state = fnv1a(key);
    for (std::size_t i = 0; i < size; ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        out += static_cast<char>('a' + static_cast<int>((state >> 33) % 26));
    }
    out += '\n';
    return out;
}

// Returns the whole artefact (payload and checksum line).
inline std::string artefact(const std::string& key, long long pid, std::size_t size) {
    std::string payload = artefact_payload(key, pid, size);
    return payload + checksum_line(payload);
}

// Returns the file's bytes, or nullopt when it cannot be opened.
inline std::optional<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Returns whether `content` is a whole artefact of `key`: it starts with the
// key's line and ends with the checksum of everything before it.
inline bool artefact_is_whole(const std::string& key, const std::string& content) {
    constexpr std::size_t line = 18;  // "#" + 16 hex digits + "\n"
    if (content.size() <= line || content.compare(0, key.size() + 1, key + " ") != 0) return false;
    const std::string_view payload(content.data(), content.size() - line);
    return content.compare(content.size() - line, line, checksum_line(payload)) == 0;
}

}  // namespace importlock_test
