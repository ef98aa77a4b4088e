// SPDX-License-Identifier: BSL-1.0
// tests/support/file_cache_helper.cpp: the other processes of
// tests/test_file_cache.cpp, started with posix_spawn (never a fork without
// exec). One mode per scenario; descriptors are inherited numbers.
//
//   race  DIR KEYS COUNT_FILE READY_FD GO_FD   import key000..KEYS-1 in an order
//         of its own after the go byte; each build appends "<key>\n" to
//         COUNT_FILE; then reads every artefact back, checks it and prints the
//         FNV-1a digest of them all
//   crash DIR KEY STARTED_FD                   build KEY slowly, after writing a
//         byte to STARTED_FD (the test kills it somewhere in the build)
//   fail  DIR KEY                              a builder that throws: exit 0 when
//         the exception came back and no temporary file is left
//   cycle DIR MINE OTHER READY_FD GO_FD        build MINE; its builder reports
//         ready, waits for the go byte and imports OTHER: exit 0, or 3 printing
//         the circular_import_error
//   hold  DIR KEY READY_FD GO_FD               build KEY; its builder reports
//         ready and waits for the go byte
//   build DIR KEY COUNT_FILE                   import KEY, counting a build
//
// Exit status: 0 success, 3 circular_import_error (cycle), 2 usage, 1 failure.
#include <importlock/file_cache.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "file_cache_artefact.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace {

using importlock_test::artefact;

int to_fd(const char* text) {
    return std::atoi(text);
}

void signal_byte(int fd) {
    const char byte = 'r';
    while (::write(fd, &byte, 1) < 0) {
        if (errno != EINTR) throw std::runtime_error("helper: cannot write the ready byte");
    }
}

void await_byte(int fd) {
    char byte = 0;
    while (true) {
        const ssize_t n = ::read(fd, &byte, 1);
        if (n == 1) return;
        if (n < 0 && errno == EINTR) continue;
        throw std::runtime_error("helper: the go pipe closed");
    }
}

// Appends one line with a single write(2) (O_APPEND: lines never interleave).
void count_build(const std::string& count_file, const std::string& key) {
    const int fd = ::open(count_file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error("helper: cannot open the count file");
    const std::string line = key + "\n";
    const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::close(fd);
    if (!ok) throw std::runtime_error("helper: cannot append to the count file");
}

void write_text(const std::filesystem::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw std::runtime_error("helper: cannot write " + path.string());
}

long long self() {
    return static_cast<long long>(::getpid());
}

std::string key_name(int i) {
    char buffer[16];
    std::snprintf(buffer, sizeof buffer, "key%03d", i);
    return buffer;
}

int race(const std::string& dir, int keys, const std::string& count_file, int ready, int go) {
    importlock::file_cache cache(dir);
    std::vector<int> order(static_cast<std::size_t>(keys));
    for (int i = 0; i < keys; ++i) order[static_cast<std::size_t>(i)] = i;
    std::mt19937 rng(static_cast<std::uint32_t>(self()));
    std::shuffle(order.begin(), order.end(), rng);
    signal_byte(ready);
    await_byte(go);
    for (const int i : order) {
        const std::string key = key_name(i);
        cache.import_file(key, [&](const std::filesystem::path& temporary) {
            count_build(count_file, key);
            write_text(temporary, artefact(key, self(), 200));
        });
    }
    std::uint64_t digest = importlock_test::fnv1a("");
    for (int i = 0; i < keys; ++i) {
        const std::string key = key_name(i);
        const auto content = importlock_test::read_file((cache.directory() / key).string());
        if (!content || !importlock_test::artefact_is_whole(key, *content)) {
            std::fprintf(stderr, "helper %lld: artefact %s is not whole\n", self(), key.c_str());
            return 1;
        }
        digest = importlock_test::fnv1a(*content, digest);
    }
    std::printf("%016llx\n", static_cast<unsigned long long>(digest));
    return 0;
}

int crash(const std::string& dir, const std::string& key, int started) {
    importlock::file_cache cache(dir);
    cache.import_file(key, [&](const std::filesystem::path& temporary) {
        signal_byte(started);
        const std::string text = artefact(key, self(), 4000);
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        // Eight pieces, each flushed and followed by ~50 us of work, so that
        // a kill can land between any two of them.
        const std::size_t piece = text.size() / 8 + 1;
        for (std::size_t at = 0; at < text.size(); at += piece) {
            out.write(text.data() + at,
                      static_cast<std::streamsize>(std::min(piece, text.size() - at)));
            out.flush();
            const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
            while (std::chrono::steady_clock::now() < until) {
            }
        }
        out.close();
        if (!out) throw std::runtime_error("helper: cannot write the artefact");
    });
    return 0;
}

bool no_temporary_in(const std::string& dir) {
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        if (entry.path().filename().string().rfind(".importlock-tmp.", 0) == 0) return false;
    }
    return true;
}

int fail(const std::string& dir, const std::string& key) {
    importlock::file_cache cache(dir);
    try {
        cache.import_file(key, [&](const std::filesystem::path& temporary) {
            write_text(temporary, "half an artefact");
            throw std::domain_error("helper: the builder fails");
        });
    } catch (const std::domain_error&) {
        return no_temporary_in(dir) ? 0 : 1;
    }
    return 1;
}

int cycle(const std::string& dir, const std::string& mine, const std::string& other, int ready,
          int go) {
    importlock::file_cache cache(dir);
    try {
        cache.import_file(mine, [&](const std::filesystem::path& temporary) {
            signal_byte(ready);
            await_byte(go);
            cache.import_file(other, [&](const std::filesystem::path& t) {
                write_text(t, artefact(other, self(), 10));
            });
            write_text(temporary, artefact(mine, self(), 10));
        });
    } catch (const importlock::circular_import_error& e) {
        std::printf("%s\n", e.what());
        return 3;
    }
    return 0;
}

int hold(const std::string& dir, const std::string& key, int ready, int go) {
    importlock::file_cache cache(dir);
    cache.import_file(key, [&](const std::filesystem::path& temporary) {
        signal_byte(ready);
        await_byte(go);
        write_text(temporary, artefact(key, self(), 10));
    });
    return 0;
}

int build(const std::string& dir, const std::string& key, const std::string& count_file) {
    importlock::file_cache cache(dir);
    cache.import_file(key, [&](const std::filesystem::path& temporary) {
        count_build(count_file, key);
        write_text(temporary, artefact(key, self(), 10));
    });
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> a(argv, argv + argc);
    try {
        if (argc == 7 && a[1] == "race") {
            return race(a[2], std::atoi(argv[3]), a[4], to_fd(argv[5]), to_fd(argv[6]));
        }
        if (argc == 5 && a[1] == "crash") return crash(a[2], a[3], to_fd(argv[4]));
        if (argc == 4 && a[1] == "fail") return fail(a[2], a[3]);
        if (argc == 7 && a[1] == "cycle") {
            return cycle(a[2], a[3], a[4], to_fd(argv[5]), to_fd(argv[6]));
        }
        if (argc == 6 && a[1] == "hold") return hold(a[2], a[3], to_fd(argv[4]), to_fd(argv[5]));
        if (argc == 5 && a[1] == "build") return build(a[2], a[3], a[4]);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "file_cache_helper %s: %s\n", argc > 1 ? argv[1] : "", e.what());
        return 1;
    }
    std::fprintf(stderr, "usage: see tests/support/file_cache_helper.cpp\n");
    return 2;
}
