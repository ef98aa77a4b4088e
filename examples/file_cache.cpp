// SPDX-License-Identifier: BSL-1.0
// examples/file_cache.cpp: compile once per machine.
//
// Four copies of this program start at once (it spawns them: `file_cache`
// runs the demo in a fresh directory, `file_cache DIR` uses DIR) and each
// needs the same three compiled shaders; "program.spv" links the other two, so
// its builder imports them (a nested import). Whichever process asks first
// compiles a shader; the others wait for it or find it published, and no
// process ever reads a half-written file. A compile that crashed would leave
// no lock behind: the next process would compile again.
//
// Expected output (pids and order vary):
//   worker 4242: compiled common.spv
//   worker 4243: compiled lighting.spv
//   worker 4242: compiled program.spv
//   worker 4244: found lighting.spv, compiled by another process
//   ...
//   4 processes, 3 shaders, 3 compiles: each shader compiled once
#include <importlock/file_cache.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

namespace fs = std::filesystem;

// Pretends to compile `source` into `out` (20 ms of work).
void compile(const std::string& source, const std::string& extra, const fs::path& out) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::ofstream(out, std::ios::binary) << "spirv(" << source << extra << ")\n";
}

std::string slurp(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Appends one line to the compile log (O_APPEND: lines never interleave).
void log_compile(const fs::path& log, const std::string& shader) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    const std::string line = shader + "\n";
    (void)!::write(fd, line.data(), line.size());
    ::close(fd);
}

// One process: import the three shaders.
int worker(const fs::path& dir) {
    importlock::file_cache cache(dir / "shaders");
    const fs::path log = dir / "compiles.log";
    const auto say = [](const std::string& what) {
        std::printf("worker %d: %s\n", static_cast<int>(::getpid()), what.c_str());
        std::fflush(stdout);
    };
    std::set<std::string> built_here;
    const auto shader = [&](const std::string& name) {
        return [&, name](const fs::path& temporary) {
            log_compile(log, name);
            compile(name, "", temporary);
            built_here.insert(name);
            say("compiled " + name);
        };
    };
    const auto program = [&](const fs::path& temporary) {
        // Linking needs the other two: nested imports, each compiled once too.
        const fs::path common = cache.import_file("common.spv", shader("common.spv"));
        const fs::path lighting = cache.import_file("lighting.spv", shader("lighting.spv"));
        log_compile(log, "program.spv");
        compile("program.spv", " + " + slurp(common) + " + " + slurp(lighting), temporary);
        built_here.insert("program.spv");
        say("compiled program.spv");
    };
    for (const std::string name : {"lighting.spv", "program.spv", "common.spv"}) {
        const fs::path path = name == "program.spv" ? cache.import_file(name, program)
                                                    : cache.import_file(name, shader(name));
        if (slurp(path).rfind("spirv(", 0) != 0) return 1;  // always whole
        if (built_here.count(name) == 0) say("found " + name + ", compiled by another process");
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--worker") return worker(argv[2]);

    fs::path dir;
    bool remove_after = false;
    if (argc == 2) {
        dir = argv[1];
    } else {
        std::string pattern = (fs::temp_directory_path() / "importlock-shaders-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) return 1;
        dir = pattern;
        remove_after = true;
    }
    fs::create_directories(dir);
    fs::remove(dir / "compiles.log");

    // Start four copies of this program at once.
    constexpr int processes = 4;
    std::vector<pid_t> pids;
    for (int i = 0; i < processes; ++i) {
        std::string self = argv[0], flag = "--worker", where = dir.string();
        char* child_argv[] = {self.data(), flag.data(), where.data(), nullptr};
        pid_t pid = -1;
        if (::posix_spawn(&pid, argv[0], nullptr, nullptr, child_argv, environ) != 0) return 1;
        pids.push_back(pid);
    }
    bool ok = true;
    for (const pid_t pid : pids) {
        int status = 0;
        ::waitpid(pid, &status, 0);
        ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }

    // Each shader was compiled once, by whichever process asked first.
    std::ifstream log(dir / "compiles.log");
    std::vector<std::string> compiled;
    for (std::string line; std::getline(log, line);) compiled.push_back(line);
    std::printf("%d processes, 3 shaders, %zu compiles: %s\n", processes, compiled.size(),
                compiled.size() == 3 ? "each shader compiled once" : "UNEXPECTED");
    if (remove_after) fs::remove_all(dir);
    return ok && compiled.size() == 3 ? 0 : 1;
}
