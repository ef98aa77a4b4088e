// SPDX-License-Identifier: BSL-1.0
// tests/test_file_cache.cpp: importlock::file_cache across real processes.
//
// The other processes are the helper program (support/file_cache_helper.cpp,
// its path in IMPORTLOCK_FILE_CACHE_HELPER), started with posix_spawn; they
// are forced into the interleavings a case needs through pipes (ready / go
// bytes), never with sleeps. The one random sleep (the crash loop's delay
// before SIGKILL) only chooses where the kill lands.
#include <importlock/file_cache.hpp>

#include "support/catch.hpp"
#include "support/file_cache_artefact.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef IMPORTLOCK_FILE_CACHE_HELPER
#error "IMPORTLOCK_FILE_CACHE_HELPER must name the file_cache_helper program"
#endif

extern char** environ;

namespace {

namespace fs = std::filesystem;
using importlock::circular_import_error;
using importlock::file_cache;
using importlock::import_error;
using importlock::import_timeout_error;
using importlock_test::artefact;
using importlock_test::artefact_is_whole;
using importlock_test::read_file;
using importlock_test::watchdog;

// A fresh directory under $TMPDIR (or /tmp), removed afterwards.
struct temp_dir {
    fs::path path;
    temp_dir() {
        const char* base = std::getenv("TMPDIR");
        std::string pattern =
            std::string(base != nullptr && *base ? base : "/tmp") + "/importlock-file-cache-XXXXXX";
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = pattern;
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

// A pipe whose ends close with it (O_CLOEXEC: children get only what is dup2'ed).
struct pipe_pair {
    int read_end = -1;
    int write_end = -1;
    pipe_pair() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
        read_end = fds[0];
        write_end = fds[1];
    }
    pipe_pair(const pipe_pair&) = delete;
    pipe_pair& operator=(const pipe_pair&) = delete;
    ~pipe_pair() {
        close_read();
        close_write();
    }
    void close_read() {
        if (read_end >= 0) ::close(std::exchange(read_end, -1));
    }
    void close_write() {
        if (write_end >= 0) ::close(std::exchange(write_end, -1));
    }
};

// The descriptors a child gets: parent descriptor -> number in the child.
using fd_map = std::vector<std::pair<int, int>>;

// Starts the helper with `args`; returns its pid.
pid_t spawn_helper(const std::vector<std::string>& args, const fd_map& fds = {}) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    for (const auto& [from, to] : fds) posix_spawn_file_actions_adddup2(&actions, from, to);
    std::vector<std::string> all{IMPORTLOCK_FILE_CACHE_HELPER};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    const int rc =
        ::posix_spawn(&pid, IMPORTLOCK_FILE_CACHE_HELPER, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("posix_spawn failed: " + std::to_string(rc));
    return pid;
}

// Waits for `pid`; returns its wait status.
int wait_for(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) throw std::runtime_error("waitpid failed");
    }
    return status;
}

int exit_code(int status) {
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void read_byte(int fd) {
    char byte = 0;
    while (true) {
        const ssize_t n = ::read(fd, &byte, 1);
        if (n == 1) return;
        if (n < 0 && errno == EINTR) continue;
        throw std::runtime_error("a helper closed its pipe before signalling");
    }
}

void write_bytes(int fd, std::size_t count) {
    const std::string bytes(count, 'g');
    if (::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
        throw std::runtime_error("cannot write the go bytes");
    }
}

std::string read_all(int fd) {
    std::string out;
    char buffer[512];
    while (true) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n > 0) {
            out.append(buffer, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            return out;
        }
    }
}

// Lines of a count file.
std::vector<std::string> lines_of(const fs::path& path) {
    std::vector<std::string> out;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// Temporary files anywhere below `dir`.
std::vector<std::string> temporaries_in(const fs::path& dir) {
    std::vector<std::string> out;
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(".importlock-tmp.", 0) == 0) out.push_back(entry.path().string());
    }
    return out;
}

// Lock files that still record a builder of a key that is not published (a
// builder that died, not rebuilt since). A builder killed between its rename
// and clearing its record leaves a record beside a published file: harmless.
std::vector<std::string> recorded_builders(const fs::path& dir) {
    std::vector<std::string> out;
    const fs::path locks = dir / ".importlock" / "locks";
    for (const auto& entry : fs::recursive_directory_iterator(locks)) {
        if (entry.is_regular_file() && entry.file_size() != 0 &&
            !fs::exists(dir / fs::relative(entry.path(), locks))) {
            out.push_back(entry.path().string());
        }
    }
    return out;
}

// Nothing of an import is left: no temporary file, no wait-for record, no
// builder recorded in a lock file.
void expect_quiescent(const fs::path& dir) {
    CHECK(temporaries_in(dir).empty());
    CHECK_FALSE(fs::exists(dir / ".importlock" / "graph"));
    CHECK(recorded_builders(dir).empty());
}

bool contains_text(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// A builder writing the artefact of `key` by this process and counting itself.
struct counting_builder {
    std::string key;
    std::atomic<int>* builds;
    void operator()(const fs::path& temporary) const {
        ++*builds;
        std::ofstream(temporary, std::ios::binary) << artefact(key, ::getpid(), 10);
    }
};

long long self_pid() {
    return static_cast<long long>(::getpid());
}

}  // namespace

TEST_CASE("file_cache: bad keys are refused with an import_error naming the key", "[file_cache]") {
    watchdog dog("file_cache bad keys");
    temp_dir dir;
    file_cache cache(dir.path);
    const std::vector<std::pair<std::string, std::string>> bad{
        {"", "empty"},
        {"/etc/passwd", "absolute"},
        {"..", "'..'"},
        {"a/../../b", "'..'"},
        {"a//b", "empty path component"},
        {"a/", "empty path component"},
        {"./a", "'.' component"},
        {std::string("a\0b", 3), "NUL"},
        {".importlock/locks/x", "'.importlock'"},
        {"d/.importlock-tmp.1.x", "'.importlock'"},
    };
    for (const auto& [key, why] : bad) {
        INFO("key: " << importlock::detail::files::printable(key));
        std::atomic<int> builds{0};
        try {
            cache.import_file(key, counting_builder{key, &builds});
            FAIL("the key was accepted");
        } catch (const import_error& e) {
            CHECK(e.key() == importlock::detail::files::printable(key));
            CHECK(contains_text(e.what(), "'" + importlock::detail::files::printable(key) + "'"));
            CHECK(contains_text(e.what(), why));
        }
        CHECK(builds == 0);
        CHECK_THROWS_AS(cache.path_of(key), import_error);
        CHECK_THROWS_AS(cache.contains(key), import_error);
    }
    // Nothing was created for them: only the state directory exists.
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir.path)) {
        names.push_back(entry.path().filename().string());
    }
    CHECK(names == std::vector<std::string>{".importlock"});
    CHECK(fs::is_empty(dir.path / ".importlock" / "locks"));
}

TEST_CASE("file_cache: a miss builds once, a hit is a stat, builders nest", "[file_cache]") {
    watchdog dog("file_cache nesting");
    temp_dir dir;
    file_cache cache(dir.path);
    std::atomic<int> inner_builds{0};
    std::atomic<int> outer_builds{0};
    const auto outer = [&](const fs::path& temporary) {
        ++outer_builds;
        const fs::path a = cache.import_file("inner/a", counting_builder{"inner/a", &inner_builds});
        const fs::path b = cache.import_file("inner/b", counting_builder{"inner/b", &inner_builds});
        std::ofstream(temporary, std::ios::binary)
            << *read_file(a.string()) << *read_file(b.string());
    };
    CHECK_FALSE(cache.contains("outer"));
    const fs::path p = cache.import_file("outer", outer);
    CHECK(p == dir.path / "outer");
    CHECK(cache.contains("outer"));
    CHECK(outer_builds == 1);
    CHECK(inner_builds == 2);
    CHECK(*read_file(p.string()) ==
          artefact("inner/a", self_pid(), 10) + artefact("inner/b", self_pid(), 10));
    // Hits: no build, also through a second cache object on the same directory.
    CHECK(cache.import_file("outer", outer) == p);
    file_cache other(dir.path);
    CHECK(other.import_file("inner/a", counting_builder{"inner/a", &inner_builds}) ==
          dir.path / "inner/a");
    CHECK(outer_builds == 1);
    CHECK(inner_builds == 2);
    // A published file removed by hand is built again.
    fs::remove(dir.path / "inner/b");
    cache.import_file("inner/b", counting_builder{"inner/b", &inner_builds});
    CHECK(inner_builds == 3);
    // A builder importing its own key: circular_import_error, nothing left.
    try {
        cache.import_file("self", [&](const fs::path&) {
            cache.import_file("self", counting_builder{"self", &inner_builds});
        });
        FAIL("no circular_import_error");
    } catch (const circular_import_error& e) {
        CHECK(e.chain() == std::vector<std::string>{"self", "self"});
    }
    // The same through a second cache object (its own in-process system): the
    // file-side wait-for graph finds it.
    try {
        cache.import_file("self2", [&](const fs::path&) {
            other.import_file("self2", counting_builder{"self2", &inner_builds});
        });
        FAIL("no circular_import_error");
    } catch (const circular_import_error& e) {
        CHECK(e.chain() == std::vector<std::string>{"self2", "self2"});
        CHECK(contains_text(e.what(), "process " + std::to_string(self_pid()) + " (this one)"));
    }
    CHECK_FALSE(cache.contains("self"));
    CHECK_FALSE(cache.contains("self2"));
    expect_quiescent(dir.path);
}

TEST_CASE("file_cache: threads of one process are coalesced into one build", "[file_cache]") {
    watchdog dog("file_cache threads");
    temp_dir dir;
    file_cache cache(dir.path);
    constexpr int threads = 8;
    for (int round = 0; round < 4; ++round) {
        const std::string key = "shared" + std::to_string(round);
        std::atomic<int> builds{0};
        std::atomic<int> arrived{0};
        std::latch start(threads);
        std::vector<fs::path> results(threads);
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
                start.arrive_and_wait();
                ++arrived;
                results[static_cast<std::size_t>(t)] =
                    cache.import_file(key, [&](const fs::path& temporary) {
                        // Give the others the chance to queue up behind this build.
                        importlock_test::await([&] { return arrived.load() == threads; });
                        counting_builder{key, &builds}(temporary);
                    });
            });
        }
        for (auto& th : pool) th.join();
        CHECK(builds == 1);
        for (const auto& r : results) CHECK(r == dir.path / key);
        CHECK(artefact_is_whole(key, *read_file((dir.path / key).string())));
    }
    expect_quiescent(dir.path);
}

TEST_CASE("file_cache: a failing builder leaves nothing and the next process builds",
          "[file_cache][processes]") {
    watchdog dog("file_cache failing builder");
    temp_dir dir;
    const fs::path count = dir.path / "count";
    const fs::path cache_dir = dir.path / "cache";
    file_cache cache(cache_dir);
    // This process fails: the builder's own exception, no temporary file.
    CHECK_THROWS_AS(cache.import_file("k",
                                      [](const fs::path& temporary) {
                                          std::ofstream(temporary) << "half";
                                          throw std::domain_error("builder failed");
                                      }),
                    std::domain_error);
    CHECK_FALSE(cache.contains("k"));
    expect_quiescent(cache_dir);
    // Another process builds it (the lock was released)...
    CHECK(exit_code(wait_for(spawn_helper({"build", cache_dir.string(), "k", count.string()}))) ==
          0);
    CHECK(lines_of(count) == std::vector<std::string>{"k"});
    // ... and this process now hits.
    std::atomic<int> builds{0};
    cache.import_file("k", counting_builder{"k", &builds});
    CHECK(builds == 0);
    CHECK(artefact_is_whole("k", *read_file((cache_dir / "k").string())));
    // The other way round: another process's builder fails, this one builds.
    CHECK(exit_code(wait_for(spawn_helper({"fail", cache_dir.string(), "m"}))) == 0);
    CHECK_FALSE(cache.contains("m"));
    cache.import_file("m", counting_builder{"m", &builds});
    CHECK(builds == 1);
    CHECK(artefact_is_whole("m", *read_file((cache_dir / "m").string())));
    expect_quiescent(cache_dir);
}

TEST_CASE("file_cache: 8 processes x 100 keys, each built once, identical for every reader",
          "[file_cache][processes]") {
    watchdog dog("file_cache race");
    temp_dir dir;
    const fs::path cache_dir = dir.path / "cache";
    const fs::path count = dir.path / "count";
    constexpr int processes = 8;
    constexpr int keys = 100;
    pipe_pair ready;
    pipe_pair go;
    struct child {
        pid_t pid;
        std::unique_ptr<pipe_pair> out;
    };
    std::vector<child> children;
    for (int i = 0; i < processes; ++i) {
        auto out = std::make_unique<pipe_pair>();
        const pid_t pid = spawn_helper(
            {"race", cache_dir.string(), std::to_string(keys), count.string(), "200", "201"},
            {{ready.write_end, 200}, {go.read_end, 201}, {out->write_end, 1}});
        out->close_write();
        children.push_back({pid, std::move(out)});
    }
    for (int i = 0; i < processes; ++i) read_byte(ready.read_end);  // all started
    write_bytes(go.write_end, processes);                           // race
    std::set<std::string> digests;
    for (auto& c : children) {
        const std::string digest = read_all(c.out->read_end);
        CHECK(exit_code(wait_for(c.pid)) == 0);
        CHECK(digest.size() == 17);
        digests.insert(digest);
    }
    CHECK(digests.size() == 1);  // every reader saw the same bytes
    const auto built = lines_of(count);
    CHECK(built.size() == static_cast<std::size_t>(keys));  // each key built exactly once
    CHECK(std::set<std::string>(built.begin(), built.end()).size() ==
          static_cast<std::size_t>(keys));
    expect_quiescent(cache_dir);
}

TEST_CASE("file_cache: SIGKILL during builds never publishes a partial artefact",
          "[file_cache][processes]") {
    watchdog dog("file_cache crash loop", std::chrono::seconds(240));
    temp_dir dir;
    file_cache cache(dir.path);
    constexpr int rounds = 200;
    std::mt19937 rng(importlock_test::catch_seed());
    std::uniform_int_distribution<int> delay_us(0, 1500);
    int kills = 0, finished = 0, published_at_kill = 0, orphans = 0, checked = 0;
    int partial = 0, stale_locks = 0, leftover_temporaries = 0;
    for (int round = 0; round < rounds; ++round) {
        const std::string key = "k" + std::to_string(round);
        pipe_pair started;
        const pid_t pid =
            spawn_helper({"crash", dir.path.string(), key, "200"}, {{started.write_end, 200}});
        started.close_write();
        read_byte(started.read_end);  // the builder runs
        const int delay = round % 8 == 0 ? 0 : delay_us(rng);
        if (delay > 0) std::this_thread::sleep_for(std::chrono::microseconds(delay));
        ::kill(pid, SIGKILL);
        const int status = wait_for(pid);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ++kills;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) ++finished;
        const fs::path path = dir.path / key;
        if (fs::exists(path)) {  // published before the kill: must be whole
            ++published_at_kill;
            ++checked;
            if (!artefact_is_whole(key, *read_file(path.string()))) ++partial;
        }
        orphans += static_cast<int>(temporaries_in(dir.path).size());
        // The next import never waits for the dead builder: a zero timeout.
        std::atomic<int> builds{0};
        try {
            cache.import_file_for(key, counting_builder{key, &builds}, std::chrono::seconds(0));
        } catch (const import_timeout_error& e) {
            ++stale_locks;
            WARN(e.what());
        }
        ++checked;
        if (!artefact_is_whole(key, read_file(path.string()).value_or(""))) ++partial;
        leftover_temporaries += static_cast<int>(temporaries_in(dir.path).size());
    }
    std::printf(
        "file_cache crash loop: %d rounds, %d killed mid-import, %d finished first, %d "
        "published before the kill, %d orphaned temporaries cleaned, %d artefacts "
        "checked, defects: %d partial, %d stale locks, %d temporaries left\n",
        rounds, kills, finished, published_at_kill, orphans, checked, partial, stale_locks,
        leftover_temporaries);
    CHECK(kills + finished == rounds);
    CHECK(partial == 0);
    CHECK(stale_locks == 0);
    CHECK(leftover_temporaries == 0);
    CHECK(kills > rounds / 2);  // the loop really kills builds
    // A builder killed after publishing, before releasing, leaves its "holds"
    // record (its key is then a hit, which writes nothing): only records of
    // dead processes may remain, and the next import that writes the graph
    // drops them.
    const auto graph_text = read_file((dir.path / ".importlock" / "graph").string());
    for (const auto& r : importlock::detail::files::decode_records(graph_text.value_or(""))) {
        CHECK_FALSE(importlock::detail::files::process_exists(r.node.pid));
    }
    std::atomic<int> builds{0};
    cache.import_file("after", counting_builder{"after", &builds});
    expect_quiescent(dir.path);
}

TEST_CASE("file_cache: a cross-process cycle refuses exactly one import, naming both keys",
          "[file_cache][processes]") {
    watchdog dog("file_cache cycle");
    temp_dir dir;
    for (int round = 0; round < 3; ++round) {
        const fs::path cache_dir = dir.path / std::to_string(round);
        pipe_pair ready_a, ready_b, go_a, go_b, out_a, out_b;
        const pid_t a =
            spawn_helper({"cycle", cache_dir.string(), "x", "y", "200", "201"},
                         {{ready_a.write_end, 200}, {go_a.read_end, 201}, {out_a.write_end, 1}});
        const pid_t b =
            spawn_helper({"cycle", cache_dir.string(), "y", "x", "200", "201"},
                         {{ready_b.write_end, 200}, {go_b.read_end, 201}, {out_b.write_end, 1}});
        out_a.close_write();
        out_b.close_write();
        read_byte(ready_a.read_end);  // A holds x
        read_byte(ready_b.read_end);  // B holds y
        // Release them in a different order each round.
        write_bytes(round % 2 == 0 ? go_a.write_end : go_b.write_end, 1);
        write_bytes(round % 2 == 0 ? go_b.write_end : go_a.write_end, 1);
        const std::string said_a = read_all(out_a.read_end);
        const std::string said_b = read_all(out_b.read_end);
        const int code_a = exit_code(wait_for(a));
        const int code_b = exit_code(wait_for(b));
        INFO("A said: " << said_a << "B said: " << said_b);
        CHECK(((code_a == 3 && code_b == 0) || (code_a == 0 && code_b == 3)));
        const std::string& said = code_a == 3 ? said_a : said_b;
        const pid_t refused = code_a == 3 ? a : b;
        const pid_t other = code_a == 3 ? b : a;
        CHECK(contains_text(said, "circular import: "));
        CHECK(contains_text(said, "'x'"));
        CHECK(contains_text(said, "'y'"));
        CHECK(contains_text(said, "process " + std::to_string(refused) + " (this one)"));
        CHECK(contains_text(said, "process " + std::to_string(other)));
        // The released one finished both artefacts.
        CHECK(artefact_is_whole("x", read_file((cache_dir / "x").string()).value_or("")));
        CHECK(artefact_is_whole("y", read_file((cache_dir / "y").string()).value_or("")));
        expect_quiescent(cache_dir);
    }
}

TEST_CASE("file_cache: import_file_for gives up, naming the holder's process",
          "[file_cache][processes]") {
    watchdog dog("file_cache timeout");
    temp_dir dir;
    file_cache cache(dir.path);
    pipe_pair ready, go;
    const pid_t holder = spawn_helper({"hold", dir.path.string(), "held", "200", "201"},
                                      {{ready.write_end, 200}, {go.read_end, 201}});
    read_byte(ready.read_end);  // the other process holds "held" and builds it
    std::atomic<int> builds{0};
    try {
        cache.import_file_for("held", counting_builder{"held", &builds},
                              std::chrono::milliseconds(30));
        FAIL("no import_timeout_error");
    } catch (const import_timeout_error& e) {
        CHECK(e.key() == "held");
        CHECK(e.holder_process() == static_cast<long long>(holder));
        CHECK(contains_text(e.what(), "'held'"));
        CHECK(contains_text(e.what(), "process " + std::to_string(holder)));
    }
    write_bytes(go.write_end, 1);
    CHECK(exit_code(wait_for(holder)) == 0);
    cache.import_file("held", counting_builder{"held", &builds});
    CHECK(builds == 0);  // built by the other process
    // Waiting for another thread of this process: its pid and thread.
    std::latch inside(1);
    std::latch release(1);
    std::thread slow([&] {
        cache.import_file("slow", [&](const fs::path& temporary) {
            inside.count_down();
            release.wait();
            counting_builder{"slow", &builds}(temporary);
        });
    });
    inside.wait();
    try {
        cache.import_file_for("slow", counting_builder{"slow", &builds},
                              std::chrono::milliseconds(30));
        FAIL("no import_timeout_error");
    } catch (const import_timeout_error& e) {
        CHECK(e.holder_process() == self_pid());
        CHECK(contains_text(e.what(), "process " + std::to_string(self_pid())));
        CHECK(contains_text(e.what(), "thread"));
    }
    release.count_down();
    slow.join();
    CHECK(builds == 1);
    expect_quiescent(dir.path);
}

TEST_CASE("file_cache: a cycle through threads of one process and another process is refused",
          "[file_cache][processes]") {
    // T1 holds x and waits in-process for T2's import of y; T2 holds y and
    // waits for z, held by process H; H's builder of z needs x. The wait
    // between T1 and T2 is in no file lock: the in-process system's on_wait
    // hook records it, so whichever of T1, T2, H waits last is refused.
    watchdog dog("file_cache mixed cycle");
    temp_dir dir;
    file_cache cache(dir.path);
    pipe_pair ready, go, out;
    const pid_t h = spawn_helper({"cycle", dir.path.string(), "z", "x", "200", "201"},
                                 {{ready.write_end, 200}, {go.read_end, 201}, {out.write_end, 1}});
    out.close_write();
    read_byte(ready.read_end);  // H holds z
    std::atomic<int> builds{0};
    std::latch t2_inside(1), t2_go(1), t1_inside(1);
    std::string t1_error, t2_error;
    std::thread t2([&] {
        try {
            cache.import_file("y", [&](const fs::path& temporary) {
                t2_inside.count_down();
                t2_go.wait();
                cache.import_file("z", counting_builder{"z", &builds});
                counting_builder{"y", &builds}(temporary);
            });
        } catch (const circular_import_error& e) {
            t2_error = e.what();
        }
    });
    t2_inside.wait();
    std::thread t1([&] {
        try {
            cache.import_file("x", [&](const fs::path& temporary) {
                t1_inside.count_down();
                cache.import_file("y", counting_builder{"y", &builds});  // waits for T2
                counting_builder{"x", &builds}(temporary);
            });
        } catch (const circular_import_error& e) {
            t1_error = e.what();
        }
    });
    t1_inside.wait();
    t2_go.count_down();            // T2 goes on to z (held by H)
    write_bytes(go.write_end, 1);  // H goes on to x (held by T1)
    t1.join();
    t2.join();
    const std::string h_error = read_all(out.read_end);
    const int h_code = exit_code(wait_for(h));
    INFO("T1: " << t1_error << "\nT2: " << t2_error << "\nH: " << h_error);
    CHECK((h_code == 0 || h_code == 3));
    CHECK((h_code == 3) + !t1_error.empty() + !t2_error.empty() == 1);  // exactly one refused
    const std::string& said = h_code == 3 ? h_error : !t1_error.empty() ? t1_error : t2_error;
    for (const char* key : {"'x'", "'y'", "'z'"}) CHECK(contains_text(said, key));
    CHECK(contains_text(said, "process " + std::to_string(h)));
    CHECK(contains_text(said, "process " + std::to_string(self_pid())));
    // Everything that was not refused got built.
    CHECK(artefact_is_whole("z", read_file((dir.path / "z").string()).value_or("")));
    expect_quiescent(dir.path);
}

TEST_CASE("file_cache: a failing system call names the key and the errno text", "[file_cache]") {
    watchdog dog("file_cache syscall errors");
    temp_dir dir;
    file_cache cache(dir.path);
    std::atomic<int> builds{0};
    cache.import_file("plain", counting_builder{"plain", &builds});
    // A key below a published file: stat fails with ENOTDIR.
    try {
        cache.import_file("plain/below", counting_builder{"plain/below", &builds});
        FAIL("no import_error");
    } catch (const import_error& e) {
        CHECK(e.key() == "plain/below");
        CHECK(contains_text(e.what(), "'plain/below'"));
        CHECK(contains_text(e.what(), "Not a directory (errno " + std::to_string(ENOTDIR) + ")"));
    }
    // A directory where the artefact should be.
    fs::create_directories(dir.path / "a_directory");
    try {
        cache.import_file("a_directory", counting_builder{"a_directory", &builds});
        FAIL("no import_error");
    } catch (const import_error& e) {
        CHECK(e.key() == "a_directory");
        CHECK(contains_text(e.what(), "is not a regular file"));
    }
    // A builder that removes its temporary file: the reopen fails, naming the key.
    try {
        cache.import_file("vanishing", [](const fs::path& temporary) { fs::remove(temporary); });
        FAIL("no import_error");
    } catch (const import_error& e) {
        CHECK(e.key() == "vanishing");
        CHECK(contains_text(e.what(), "No such file or directory"));
    }
    CHECK(builds == 1);
    CHECK_FALSE(cache.contains("vanishing"));
    expect_quiescent(dir.path);
}

TEST_CASE("file_cache: wait-for records of a killed process are ignored",
          "[file_cache][processes]") {
    // H2 holds a and waits for b (held by H1); H2 is killed and left a zombie
    // (its pid still exists): its records stay in the graph file, but its
    // "holds a" no longer counts (a's lock is free) and nothing reaches its
    // "waits for b".
    watchdog dog("file_cache stale records");
    temp_dir dir;
    file_cache cache(dir.path);
    pipe_pair ready1, go1, ready2, go2;
    const pid_t h1 = spawn_helper({"hold", dir.path.string(), "b", "200", "201"},
                                  {{ready1.write_end, 200}, {go1.read_end, 201}});
    read_byte(ready1.read_end);  // H1 holds b
    const pid_t h2 = spawn_helper({"cycle", dir.path.string(), "a", "b", "200", "201"},
                                  {{ready2.write_end, 200}, {go2.read_end, 201}});
    read_byte(ready2.read_end);  // H2 holds a
    write_bytes(go2.write_end, 1);
    const std::string wait_line = "W " + std::to_string(h2) + " ";
    importlock_test::await([&] {  // H2 registered its wait for b
        return contains_text(read_file((dir.path / ".importlock" / "graph").string()).value_or(""),
                             wait_line);
    });
    ::kill(h2, SIGKILL);
    siginfo_t info{};
    ::waitid(P_PID, static_cast<id_t>(h2), &info, WEXITED | WNOWAIT);  // dead, not reaped
    std::atomic<int> builds{0};
    cache.import_file_for("a", counting_builder{"a", &builds}, std::chrono::seconds(0));
    CHECK(builds == 1);  // at once: the dead holder's lock went with it
    try {
        cache.import_file_for("b", counting_builder{"b", &builds}, std::chrono::seconds(0));
        FAIL("no import_timeout_error");
    } catch (const import_timeout_error& e) {
        CHECK(e.holder_process() == static_cast<long long>(h1));  // not the dead H2
    }
    CHECK(contains_text(read_file((dir.path / ".importlock" / "graph").string()).value_or(""),
                        wait_line));  // still there while the zombie exists, and ignored
    CHECK(WTERMSIG(wait_for(h2)) == SIGKILL);
    write_bytes(go1.write_end, 1);
    CHECK(exit_code(wait_for(h1)) == 0);
    CHECK(builds == 1);
    expect_quiescent(dir.path);  // the last store dropped the dead process's records
}
