// SPDX-License-Identifier: BSL-1.0
// benchmarks/file_cache_bench.cpp: importlock::file_cache (include/importlock/
// file_cache.hpp) against what it replaces.
//
// Rows:
//   hit                  import_file of a published key, against a plain
//                        stat(2) of the same path (the ratio is the cost of
//                        the key check and the path; target <= 1.5x)
//   cold, empty builder  one process publishing K keys whose builder writes
//                        a few bytes: the per-artefact cost of the protocol
//                        (lock file, wait-for records, two fsyncs, rename)
//   cold, 1 process      one process builds K artefacts of `work` CPU time each
//                        (fixed CPU work, calibrated at start-up; not a wall-clock spin)
//   cold, 8 processes    8 processes (this program, spawned) import the same K
//                        keys in orders of their own: each artefact built once
//                        (checked through a side file), against the same work
//                        done by one process; the bound is max(K x work / cores,
//                        the empty-builder row), the ideal on this machine
// The parallel headroom (two threads of fixed CPU work against one) is
// measured before and after; below 1.8x the run is flagged [unreliable].
// Exit status 1 only when an invariant breaks (an artefact built other than
// once, an import failed); a MISS does not change it.
//
//   file_cache_bench           7 repetitions, K = 64
//   file_cache_bench --quick   3 repetitions, K = 32 (a smoke run, under 10 s)
#include <importlock/file_cache.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

namespace fs = std::filesystem;

constexpr auto work = std::chrono::milliseconds(10);  // CPU time of one artefact's build

std::string key_name(int i) {
    return "artefact" + std::to_string(i) + ".bin";
}

// Appends one line with one write(2): the side file that counts builds.
void count_build(const fs::path& count, const std::string& key) {
    const int fd = ::open(count.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) std::abort();
    const std::string line = key + "\n";
    if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::abort();
    ::close(fd);
}

// Spins for `iterations` steps of an LCG: fixed CPU work, which (unlike a
// wall-clock spin) takes longer when processes share a core.
std::uint64_t cpu_work(std::uint64_t iterations) {
    std::uint64_t x = 88172645463325252ull;
    for (std::uint64_t i = 0; i < iterations; ++i) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
    }
    return x;
}

// Builds every key of [0, keys) in an order seeded by `seed`; each build costs
// `iterations` of cpu_work.
void build_all(const fs::path& dir, int keys, unsigned seed, std::uint64_t iterations) {
    importlock::file_cache cache(dir / "cache");
    std::vector<int> order(static_cast<std::size_t>(keys));
    for (int i = 0; i < keys; ++i) order[static_cast<std::size_t>(i)] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937(seed));
    for (const int i : order) {
        const std::string key = key_name(i);
        cache.import_file(key, [&](const fs::path& temporary) {
            count_build(dir / "count", key);
            bench::do_not_optimize(cpu_work(iterations));
            std::ofstream(temporary, std::ios::binary) << key << " built\n";
        });
    }
}

// Returns whether every key was built exactly once.
bool built_once(const fs::path& dir, int keys) {
    std::ifstream in(dir / "count");
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines.size() == static_cast<std::size_t>(keys) &&
           std::set<std::string>(lines.begin(), lines.end()).size() == lines.size();
}

struct scratch {
    fs::path path;
    explicit scratch(const fs::path& base, int n) : path(base / ("run" + std::to_string(n))) {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~scratch() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

double ms(double ns) {
    return ns / 1e6;
}

// A fixed amount of CPU work: about 20 ms.
std::uint64_t fixed_work() {
    return cpu_work(40'000'000);
}

// Returns how many cpu_work iterations take `d` on one free core.
std::uint64_t iterations_for(std::chrono::nanoseconds d) {
    constexpr std::uint64_t probe = 20'000'000;
    double best = 1e300;
    for (int i = 0; i < 3; ++i) {  // the fastest of three: the least disturbed
        const auto start = bench::now();
        bench::do_not_optimize(cpu_work(probe));
        best = std::min(best, bench::ns_between(start, bench::now()));
    }
    return static_cast<std::uint64_t>(static_cast<double>(probe) * static_cast<double>(d.count()) /
                                      best);
}

// Two threads doing fixed_work against one doing it twice: 2.00x when both
// cores are free for this program. The cold 8-process row needs both.
double parallel_headroom() {
    auto start = bench::now();
    bench::do_not_optimize(fixed_work());
    bench::do_not_optimize(fixed_work());
    const double serial = bench::ns_between(start, bench::now());
    start = bench::now();
    std::thread other([] { bench::do_not_optimize(fixed_work()); });
    bench::do_not_optimize(fixed_work());
    other.join();
    return serial / bench::ns_between(start, bench::now());
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 6 && std::strcmp(argv[1], "--worker") == 0) {
        build_all(argv[2], std::atoi(argv[3]), static_cast<unsigned>(std::atoi(argv[4])),
                  std::strtoull(argv[5], nullptr, 10));
        return 0;
    }
    const std::optional<bool> quick_arg = bench::quick_flag(argc, argv);
    if (!quick_arg) return 2;
    const bool quick = *quick_arg;
    const int repetitions = quick ? 3 : 7;
    const int keys = quick ? 32 : 64;
    constexpr int processes = 8;
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());

    std::string pattern = (fs::temp_directory_path() / "importlock-fc-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) return 1;
    const fs::path base = pattern;

    std::printf("importlock file_cache benchmark, %s\n", bench::utc_date().c_str());
    std::printf("machine: %s, %s, %u hardware threads; cache in %s\n", bench::cpu_model().c_str(),
                bench::machine_arch().c_str(), cores, base.c_str());
    std::printf("compiler: %s; %s\n", bench::compiler_id().c_str(), bench::compile_flags().c_str());

    const double headroom_before = parallel_headroom();
    const std::uint64_t work_iterations = iterations_for(work);
    bool ok = true;
    // --- Hit against stat ------------------------------------------------------------
    std::vector<double> hit_ns, stat_ns;
    {
        importlock::file_cache cache(base / "hits");
        const fs::path path = cache.import_file(
            "shaders/blur.spv", [](const fs::path& t) { std::ofstream(t) << "spirv\n"; });
        const std::string text = path.string();
        // Alternating blocks of n, so that a noisy moment hits both rows alike.
        constexpr int n = 5000;
        for (int r = 0; r < 4 * repetitions + 1; ++r) {
            std::size_t sum = 0;
            auto start = bench::now();
            for (int i = 0; i < n; ++i) {
                const fs::path p = cache.import_file("shaders/blur.spv", [](const fs::path&) {});
                sum += p.native().size();
            }
            hit_ns.push_back(bench::ns_between(start, bench::now()) / n);
            start = bench::now();
            for (int i = 0; i < n; ++i) {
                struct stat st{};
                sum += static_cast<std::size_t>(::stat(text.c_str(), &st) == 0 ? st.st_size : 0);
            }
            stat_ns.push_back(bench::ns_between(start, bench::now()) / n);
            bench::do_not_optimize(sum);
        }
    }

    // --- Cold builds ---------------------------------------------------------------
    std::vector<double> empty_ns, one_ns, many_ns;
    for (int r = 0; r < repetitions; ++r) {
        {
            scratch s(base, r);
            const auto start = bench::now();
            build_all(s.path, keys, 1, 0);
            empty_ns.push_back(bench::ns_between(start, bench::now()) / keys);
            ok = built_once(s.path, keys) && ok;
        }
        {
            scratch s(base, r);
            const auto start = bench::now();
            build_all(s.path, keys, 1, work_iterations);
            one_ns.push_back(bench::ns_between(start, bench::now()));
            ok = built_once(s.path, keys) && ok;
        }
        {
            scratch s(base, r);
            std::vector<pid_t> pids;
            const auto start = bench::now();
            for (int p = 0; p < processes; ++p) {
                std::string self = argv[0], flag = "--worker", where = s.path.string(),
                            count = std::to_string(keys), seed = std::to_string(p + 1),
                            iterations = std::to_string(work_iterations);
                char* child[] = {self.data(), flag.data(),       where.data(), count.data(),
                                 seed.data(), iterations.data(), nullptr};
                pid_t pid = -1;
                if (::posix_spawn(&pid, argv[0], nullptr, nullptr, child, environ) != 0) return 1;
                pids.push_back(pid);
            }
            for (const pid_t pid : pids) {
                int status = 0;
                ::waitpid(pid, &status, 0);
                ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
            }
            many_ns.push_back(bench::ns_between(start, bench::now()));
            ok = built_once(s.path, keys) && ok;
        }
    }
    fs::remove_all(base);
    const double headroom_after = parallel_headroom();
    const bool reliable = std::min(headroom_before, headroom_after) >= 1.8 || cores < 2;

    const auto hit = bench::summarize(hit_ns);
    const auto st = bench::summarize(stat_ns);
    const auto empty = bench::summarize(empty_ns);
    const auto one = bench::summarize(one_ns);
    const auto many = bench::summarize(many_ns);
    const double work_ns = std::chrono::duration<double, std::nano>(work).count();
    // The CPU work spread over the cores, or the protocol's own cost (mostly
    // fsync, which this disk serialises), whichever is larger.
    const double bound = std::max({keys * work_ns / cores, work_ns, empty.median * keys});

    std::printf("\nhit (median of %d alternating blocks of 5000)\n", 4 * repetitions + 1);
    std::printf("  %-38s %10s %22s\n", "implementation", "median ns", "min - max");
    std::printf("  %-38s %10.0f %10.0f - %9.0f\n", "file_cache::import_file, published", hit.median,
                hit.min, hit.max);
    std::printf("  %-38s %10.0f %10.0f - %9.0f\n", "stat(2) of the same path", st.median, st.min,
                st.max);
    const double hit_ratio = hit.median / st.median;
    std::printf("%s  hit / stat: %.2fx (target <= 1.5x)\n", hit_ratio <= 1.5 ? "PASS" : "MISS",
                hit_ratio);

    std::printf("\ncold builds of %d artefacts, %.1f ms of CPU work each (median of %d)\n", keys,
                work_ns / 1e6, repetitions);
    std::printf("  %-38s %10s %22s\n", "implementation", "median ms", "min - max");
    std::printf(
        "  %-38s %10.2f %10.2f - %9.2f   per artefact: %.0f us (lock, records, 2 fsyncs, "
        "rename)\n",
        "1 process, empty builder", ms(empty.median * keys), ms(empty.min * keys),
        ms(empty.max * keys), empty.median / 1e3);
    std::printf("  %-38s %10.2f %10.2f - %9.2f\n", "1 process", ms(one.median), ms(one.min),
                ms(one.max));
    std::printf("  %-38s %10.2f %10.2f - %9.2f   (process start-up included)\n",
                "8 processes, each importing every key", ms(many.median), ms(many.min),
                ms(many.max));
    std::printf("  %-38s %10.2f   max(K x work / cores = %.2f, the empty-builder row)\n", "bound",
                ms(bound), ms(keys * work_ns / cores));
    const double speedup = one.median / many.median;
    std::printf(
        "%s  8 processes / 1 process: %.2fx faster (bound %.2fx at %u cores; target >= "
        "%.2fx)\n",
        speedup >= 0.8 * std::min<double>(cores, processes) ? "PASS" : "MISS", speedup,
        one.median / bound, cores, 0.8 * std::min<double>(cores, processes));
    std::printf("parallel headroom: %.2fx before, %.2fx after (ideal 2.00x)%s\n", headroom_before,
                headroom_after,
                reliable ? "" : " [unreliable: another program used a core; rerun when quiet]");
    if (!ok) std::printf("FAIL  an artefact was built other than once, or a worker failed\n");
    return ok ? 0 : 1;
}
