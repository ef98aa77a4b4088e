// SPDX-License-Identifier: BSL-1.0
// A plugin system that separates import from registration (42.25): importing a
// plugin (keyed by its path, parent directories first, 42.12) only collects its
// `setup` callable; a separate, single-threaded phase then runs every setup in
// a defined order (parents first, siblings by name).
#include <importlock/importlock.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;

// What plugins register into during setup: the application's shared state.
struct host_registry {
    std::vector<std::string> entries;
};

// An imported plugin: what import produces, and nothing else.
struct plugin {
    fs::path path;
    std::function<void(host_registry&)> setup;
    std::mutex children_mutex;  // siblings may be imported (and bound) concurrently
    std::vector<std::shared_ptr<plugin>> children;
};

// Binds each loaded plugin into its parent directory's plugin, as CPython sets
// `package.child` (runs before the child is marked ready).
template <>
struct importlock::module_traits<plugin> {
    template <class Key>
    static void bind_child(plugin& parent, const Key&, const std::shared_ptr<plugin>& child) {
        std::lock_guard lock(parent.children_mutex);
        parent.children.push_back(child);
    }
};

using plugin_finder = importlock::function_finder<fs::path, plugin>;
using plugin_system =
    importlock::basic_import_system<fs::path, plugin, importlock::per_key_locks, plugin_finder>;

// The "installed" plugins; a real finder would look at the filesystem.
const std::set<fs::path> installed = {"plugins",           "plugins/audio",
                                      "plugins/audio/mp3", "plugins/audio/flac",
                                      "plugins/image",     "plugins/image/png"};

// Computes the spec of a plugin from its path: the loader only records what
// its setup will do.
std::optional<importlock::module_spec<fs::path, plugin>> find_plugin(const fs::path& path) {
    if (!installed.contains(path)) return std::nullopt;
    importlock::module_spec<fs::path, plugin> spec;
    spec.loader = [path](plugin& p, auto&) {
        p.path = path;
        p.setup = [path](host_registry& host) { host.entries.push_back(path.generic_string()); };
    };
    return spec;
}

// Runs setup for `p` and then its children, sorted by path: a defined order,
// whatever order the imports happened in.
void run_setup(plugin& p, host_registry& host) {
    p.setup(host);
    std::sort(p.children.begin(), p.children.end(),
              [](const auto& a, const auto& b) { return a->path < b->path; });
    for (const auto& child : p.children) run_setup(*child, host);
}

int main() {
    std::atomic<int> finds{0};
    plugin_system plugins(plugin_finder([&](const fs::path& path) {
        ++finds;
        return find_plugin(path);
    }));

    // Phase 1: import the requested plugins, concurrently and in any order.
    const std::vector<fs::path> requested = {"plugins/image/png", "plugins/audio/mp3",
                                             "plugins/audio/flac"};
    std::puts("phase 1: import (concurrently):");
    std::vector<std::thread> threads;
    for (const fs::path& path : requested) {
        threads.emplace_back([&plugins, path] { plugins.import_module(path); });
    }
    for (auto& thread : threads) thread.join();
    std::printf("  %zu plugins imported (parents included), %d finder calls\n", plugins.size(),
                finds.load());

    // A missing plugin: its parent directory is imported first, and is missing too.
    try {
        plugins.import_module("plugins/video/av1");
    } catch (const importlock::module_not_found_error& e) {
        std::printf("  import plugins/video/av1: %s\n", e.what());
    }

    // Phase 2: run setup in a controlled, single-threaded phase.
    std::puts("phase 2: setup (in order):");
    host_registry host;
    run_setup(plugins.import_ref("plugins"), host);
    for (const std::string& entry : host.entries) std::printf("  setup %s\n", entry.c_str());

    const std::vector<std::string> expected = {
        "plugins",           "plugins/audio", "plugins/audio/flac",
        "plugins/audio/mp3", "plugins/image", "plugins/image/png"};
    const bool ok =
        host.entries == expected && plugins.size() == 6 && finds == 7 && plugins.lock_count() == 0;
    std::puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
