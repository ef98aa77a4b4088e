// SPDX-License-Identifier: BSL-1.0
// benchmarks/bench_support.hpp: timing, statistics, thread and table helpers
// for importlock_bench.cpp. Standard library only.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace bench {

using clock_type = std::chrono::steady_clock;

inline clock_type::time_point now() noexcept {
    return clock_type::now();
}

inline double ns_between(clock_type::time_point a, clock_type::time_point b) noexcept {
    return std::chrono::duration<double, std::nano>(b - a).count();
}

// Keeps `value` (and everything it depends on) alive without emitting code.
template <class T>
inline void do_not_optimize(const T& value) noexcept {
    asm volatile("" : : "r,m"(value) : "memory");
}

// A last resort against dead-code elimination: results end up here (never in
// a timed loop: loops accumulate locally and call do_not_optimize).
inline std::atomic<std::uint64_t> g_sink{0};

inline void sink(std::uint64_t v) noexcept {
    g_sink.fetch_add(v, std::memory_order_relaxed);
}

// Parses the arguments of a benchmark that takes only `--quick`: returns whether it was
// given, or prints the usage and returns nullopt for anything else (exit status 2).
inline std::optional<bool> quick_flag(int argc, char** argv) {
    bool quick = false;
    for (int i = 1; i < argc; ++i) {
        if (std::string_view(argv[i]) == "--quick") {
            quick = true;
        } else {
            std::fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            return std::nullopt;
        }
    }
    return quick;
}

// Spins (no sleep) for `d`: a CPU-bound loader.
inline void busy_wait(std::chrono::nanoseconds d) noexcept {
    const auto until = now() + d;
    while (now() < until) {
    }
}

// ---------------------------------------------------------------- statistics

struct stats {
    double median = 0;
    double min = 0;
    double max = 0;
    std::size_t n = 0;
};

inline stats summarize(std::vector<double> v) {
    stats s;
    if (v.empty()) return s;
    std::sort(v.begin(), v.end());
    s.n = v.size();
    s.min = v.front();
    s.max = v.back();
    const std::size_t mid = v.size() / 2;
    s.median = v.size() % 2 == 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
    return s;
}

// ---------------------------------------------------------------- key order

// `length` indices over [0, count), every index equally often (up to one),
// shuffled with a fixed seed: the lookup order, generated before timing.
inline std::vector<std::uint32_t> shuffled_order(std::uint32_t count, std::size_t length,
                                                 std::uint64_t seed) {
    std::vector<std::uint32_t> order(length);
    for (std::size_t i = 0; i < length; ++i) order[i] = static_cast<std::uint32_t>(i % count);
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    return order;
}

// ---------------------------------------------------------------- threads

// The index (0 .. threads-1) of the calling thread inside run_parallel's body; 0
// elsewhere. For rows whose objects are per thread (shared_module_handle).
inline thread_local unsigned thread_slot = 0;

// Runs body(t) on `threads` new threads released together by a spin barrier;
// returns the wall time in ns from the first thread's start to the last
// thread's end (thread creation is not timed). Before the barrier each thread
// spins for 2 ms, so that the scheduler has spread the threads over the cores
// before timing starts (a new thread may first share its parent's core).
template <class Body>
double run_parallel(unsigned threads, Body&& body) {
    std::atomic<unsigned> arrived{0};
    std::vector<clock_type::time_point> start(threads), end(threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            if (threads > 1) busy_wait(std::chrono::milliseconds(2));
            arrived.fetch_add(1, std::memory_order_acq_rel);
            while (arrived.load(std::memory_order_acquire) < threads) std::this_thread::yield();
            thread_slot = t;
            start[t] = now();
            body(t);
            end[t] = now();
        });
    }
    for (auto& th : pool) th.join();
    return ns_between(*std::min_element(start.begin(), start.end()),
                      *std::max_element(end.begin(), end.end()));
}

// ---------------------------------------------------------------- formatting

inline std::string fmt(const char* format, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

// Three significant digits, no exponent for the magnitudes printed here.
inline std::string num(double v) {
    const double a = v < 0 ? -v : v;
    if (a >= 1000) return fmt("%.0f", v);
    if (a >= 100) return fmt("%.1f", v);
    if (a >= 10) return fmt("%.2f", v);
    return fmt("%.3f", v);
}

inline std::string ratio_str(double r) {
    return fmt("%.2fx", r);
}

struct row {
    std::string name;
    stats s;
    std::optional<double> ratio;  // printed as "1.23x"
    std::string note;
};

// Prints one table: implementation | median | min-max | ratio | note.
inline void print_table(const std::string& title, const std::string& unit,
                        const std::string& ratio_header, const std::vector<row>& rows) {
    std::size_t name_w = 14;
    for (const auto& r : rows) name_w = std::max(name_w, r.name.size());
    std::printf("\n%s\n", title.c_str());
    const std::string med = "median " + unit;
    std::printf("  %-*s  %14s  %23s  %10s  %s\n", static_cast<int>(name_w), "implementation",
                med.c_str(), "min - max", ratio_header.c_str(), "");
    for (const auto& r : rows) {
        const std::string range = num(r.s.min) + " - " + num(r.s.max);
        const std::string ratio = r.ratio ? ratio_str(*r.ratio) : std::string("-");
        std::printf("  %-*s  %14s  %23s  %10s  %s\n", static_cast<int>(name_w), r.name.c_str(),
                    num(r.s.median).c_str(), range.c_str(), ratio.c_str(), r.note.c_str());
    }
}

// ---------------------------------------------------------------- machine info

inline std::string read_first_line(const char* path) {
    std::ifstream in(path);
    std::string line;
    if (in) std::getline(in, line);
    return line;
}

inline std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0) {
            const auto colon = line.find(':');
            if (colon != std::string::npos) {
                auto first = line.find_first_not_of(" \t", colon + 1);
                return first == std::string::npos ? std::string() : line.substr(first);
            }
        }
    }
    return "unknown";
}

inline std::string machine_arch() {
    std::string arch = read_first_line("/proc/sys/kernel/arch");
    if (!arch.empty()) return arch;
#if defined(__x86_64__)
    return "x86_64";
#elif defined(__aarch64__)
    return "aarch64";
#else
    return "unknown-arch";
#endif
}

inline std::string utc_date() {
    const std::time_t t = std::time(nullptr);
    char buf[64];
    std::tm tm{};
    if (const std::tm* g = std::gmtime(&t)) tm = *g;
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

inline std::string compiler_id() {
#if defined(__clang__)
    return std::string("clang++ ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("g++ ") + __VERSION__;
#else
    return "unknown compiler";
#endif
}

// What the preprocessor can tell about the flags; IMPORTLOCK_BENCH_FLAGS, when
// defined by the build, is printed verbatim.
inline std::string compile_flags() {
    std::string f;
#if defined(IMPORTLOCK_BENCH_FLAGS)
    f += IMPORTLOCK_BENCH_FLAGS;
    f += "; ";
#endif
    f += "C++ " + std::to_string(__cplusplus);
#if defined(__OPTIMIZE__)
    f += ", optimised (__OPTIMIZE__)";
#else
    f += ", NOT optimised (-O0: numbers are meaningless)";
#endif
#if defined(NDEBUG)
    f += ", NDEBUG";
#else
    f += ", assertions on (no NDEBUG)";
#endif
#if defined(_GLIBCXX_RELEASE)
    f += ", libstdc++ " + std::to_string(_GLIBCXX_RELEASE);
#endif
#if defined(_LIBCPP_VERSION)
    f += ", libc++ " + std::to_string(_LIBCPP_VERSION);
#endif
    return f;
}

}  // namespace bench
