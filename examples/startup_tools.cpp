// SPDX-License-Identifier: BSL-1.0
// Start-up tools (42.26-42.28): record a threaded start-up of 21 modules (real
// nesting, contested imports, one circular import) with a startup_profile, a
// trace_recorder and an import_time_recorder at once (observer_group); save
// the profile, load it back and preload a fresh system from it on 2 threads;
// then let import_watchdog catch a hung import.
//
// Writes into the directory given as argv[1] (default: the current one):
//   startup.profile        the profile text (diff it between releases)
//   trace.json             the recorded start-up, for ui.perfetto.dev / chrome://tracing
//   timeline.svg           the same, drawn by trace_recorder::write_svg
//   preload_trace.json     the preload from the profile
//   preload_timeline.svg
//   deps.dot               the dependency graph (system.write_dependency_dot):
//                          dot -Tsvg deps.dot -o deps.svg
//   import_time.txt        the -X importtime style report
#include <importlock/importlock.hpp>
#include <importlock/startup/import_watchdog.hpp>
#include <importlock/startup/observer_group.hpp>
#include <importlock/startup/preload.hpp>
#include <importlock/startup/startup_profile.hpp>
#include <importlock/startup/trace_recorder.hpp>

#include <atomic>
#include <barrier>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using key = std::string;

struct module {
    int loads = 0;
};

using system_type = importlock::import_system<module>;

// The start-up: name, self cost (µs of CPU spinning), imports.
struct spec {
    const char* name;
    int cost_us;
    std::vector<key> imports;
};

const std::vector<spec>& modules() {
    static const std::vector<spec> all = {
        {"config", 300, {}},
        {"log", 150, {"config"}},
        {"metrics", 200, {"log"}},
        {"db", 400, {"config", "log", "orm"}},
        {"orm", 300, {"models"}},
        {"models", 600, {"orm", "schema"}},  // orm <-> models: a circular import
        {"schema", 250, {"config"}},
        {"cache", 350, {"config", "metrics"}},
        {"crypto", 900, {}},
        {"auth", 400, {"db", "cache", "crypto"}},
        {"templates", 700, {"config"}},
        {"static", 400, {}},
        {"web", 300, {"templates", "static"}},
        {"serializers", 300, {"models"}},
        {"api", 300, {"auth", "orm", "web", "serializers"}},
        {"queue", 500, {"config", "metrics"}},
        {"jobs", 250, {"db", "queue"}},
        {"mail", 450, {"templates", "queue"}},
        {"plugins", 150, {"plugins.search"}},
        {"plugins.search", 600, {"cache"}},
        {"cli", 200, {"config", "plugins"}},
    };
    return all;
}

void spin(std::chrono::microseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    while (std::chrono::steady_clock::now() < until) {
    }
}

// Defines every module in `system`. With `contest`, config's loader holds on
// (up to 50 ms) until the other thread waits for one of its imports, so that the
// recorded start-up shows a wait every time.
void define_modules(system_type& system, bool contest) {
    for (const spec& s : modules()) {
        const key name = s.name;
        const auto cost = std::chrono::microseconds(s.cost_us);
        const std::vector<key> imports = s.imports;
        system.finder().define(name, [&system, name, cost, imports, contest](
                                         module& m, importlock::importer<key, module>& imp) {
            if (contest && name == "config") {
                const auto give_up = std::chrono::steady_clock::now() + 50ms;
                const auto someone_waits = [&system] {
                    for (const auto& t : system.snapshot().threads) {
                        if (t.waiting_for) return true;
                    }
                    return false;
                };
                while (!someone_waits() && std::chrono::steady_clock::now() < give_up) {
                    std::this_thread::yield();
                }
            }
            for (const key& k : imports) imp.import_module(k);
            spin(cost);
            ++m.loads;
        });
    }
}

void write_file(const std::filesystem::path& path, const std::string& text) {
    std::ofstream out(path);
    out << text;
}

template <class Write>
std::string text_of(Write&& write) {
    std::ostringstream out;
    write(out);
    return out.str();
}

}  // namespace

int main(int argc, char** argv) {
    const std::filesystem::path dir = argc > 1 ? argv[1] : ".";
    std::filesystem::create_directories(dir);
    bool ok = true;

    // 1. Record a threaded start-up: two threads import their entry points.
    auto profile = std::make_shared<importlock::startup_profile<key>>();
    auto trace = std::make_shared<importlock::trace_recorder<key>>();
    auto times = std::make_shared<importlock::import_time_recorder<key>>();
    std::string deps_dot;
    {
        system_type system;
        define_modules(system, true);
        system.set_observer(
            std::make_shared<importlock::observer_group<key>>(profile, trace, times));
        // Two threads on a 2-core machine: more would measure preemption.
        std::barrier start(2);
        const auto run = [&](const char* track, std::vector<key> entries) {
            trace->name_thread(track);
            start.arrive_and_wait();
            for (const key& k : entries) system.import_module(k);
        };
        std::thread http(run, "http", std::vector<key>{"api"});
        std::thread jobs(run, "jobs", std::vector<key>{"jobs", "cli", "mail"});
        http.join();
        jobs.join();
        profile->add_dependencies(system);  // also the imports that were hits
        deps_dot = text_of([&](std::ostream& out) { system.write_dependency_dot(out); });
        for (const spec& s : modules()) ok = ok && system.get(s.name)->loads == 1;
    }
    write_file(dir / "startup.profile", profile->to_string());
    write_file(dir / "trace.json", trace->to_json());
    write_file(dir / "timeline.svg", text_of([&](std::ostream& out) { trace->write_svg(out); }));
    write_file(dir / "deps.dot", deps_dot);
    write_file(dir / "import_time.txt", times->to_string());
    std::cout << "1. recorded start-up, 2 threads; import time:\n" << times->to_string();
    std::cout << "\nprofile (" << dir / "startup.profile" << "):\n" << profile->to_string();

    // 2. Next run: load the profile and preload a fresh system on 2 threads
    //    before any worker starts.
    std::ifstream saved(dir / "startup.profile");
    const auto loaded = importlock::startup_profile<key>::load(saved);
    auto preload_trace = std::make_shared<importlock::trace_recorder<key>>();
    {
        system_type system;
        define_modules(system, false);
        system.set_observer(preload_trace);
        const auto report = importlock::preload(system, loaded, 2);
        std::cout << "\n2. preload from the profile:\n" << report.to_string();
        ok = ok && report.ok() && report.imported.size() == modules().size();
        for (const spec& s : modules()) ok = ok && system.get(s.name)->loads == 1;
    }
    write_file(dir / "preload_trace.json", preload_trace->to_json());
    write_file(dir / "preload_timeline.svg",
               text_of([&](std::ostream& out) { preload_trace->write_svg(out); }));

    // 3. A hang: an import that blocks (on a latch here; a lock or a socket in
    //    real life) and a thread waiting for it. The watchdog reports both once.
    {
        system_type system;
        std::latch release(1);
        system.finder().define("plugins.legacy", [&](module&, auto&) { release.wait(); });
        system.finder().define("plugins", [](module&, auto&) {});
        std::mutex mutex;
        std::size_t reported = 0;
        importlock::import_watchdog watchdog(
            100ms,
            [&](const importlock::watchdog_report& report) {
                std::lock_guard lock(mutex);
                std::cout << "\n3. watchdog report:\n";
                report.write_text(std::cout);
                reported += report.stuck.size();
            },
            10ms);
        watchdog.watch(system, "services");
        std::thread stuck([&] { system.import_module("plugins.legacy"); });
        while (!system.is_initializing("plugins.legacy")) std::this_thread::yield();
        std::thread waiter([&] { system.import_module("plugins.legacy"); });
        const auto give_up = std::chrono::steady_clock::now() + 10s;
        while (watchdog.reported() < 2 && std::chrono::steady_clock::now() < give_up) {
            std::this_thread::sleep_for(1ms);
        }
        release.count_down();
        stuck.join();
        waiter.join();
        ok = ok && watchdog.reported() == 2;
    }

    std::cout << "\nwrote startup.profile, trace.json, timeline.svg, preload_trace.json, "
                 "preload_timeline.svg, deps.dot, import_time.txt to "
              << dir << "\n";
    return ok ? 0 : 1;
}
