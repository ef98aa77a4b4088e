// SPDX-License-Identifier: BSL-1.0
// Front-loading (42.26): import the major dependencies during single-threaded
// startup, then start the workers; they only hit the registry (import_ref on a
// loaded key takes no lock) and never run a loader. Lazy startup, for
// contrast, runs every loader on some worker thread.
#include <importlock/importlock.hpp>

#include <atomic>
#include <cstdio>
#include <latch>
#include <string>
#include <thread>
#include <vector>

struct component {
    std::string name;
    int version = 0;
};

thread_local bool on_worker = false;  // set by each worker thread

struct loader_counts {
    std::atomic<int> total{0};
    std::atomic<int> on_workers{0};
};

void define_app(importlock::import_system<component>& app, loader_counts& runs) {
    const auto count = [&runs] {
        ++runs.total;
        if (on_worker) ++runs.on_workers;
    };
    app.finder().define("logging", [count](component& c, auto&) {
        count();
        c.name = "logging";
        c.version = 1;
    });
    app.finder().define("database", [count](component& c, auto& imp) {
        count();
        c.name = "database";
        c.version = imp.import_ref("logging").version + 1;
    });
    app.finder().define("server", [count](component& c, auto& imp) {
        count();
        c.name = "server";
        c.version = imp.import_ref("database").version + imp.import_ref("logging").version;
    });
}

// Starts `n` workers that each look the three components up `lookups` times;
// returns how many lookups found the expected versions.
int run_workers(importlock::import_system<component>& app, int n, int lookups) {
    std::atomic<int> good{0};
    std::latch start(n);
    std::vector<std::thread> threads;
    for (int w = 0; w < n; ++w) {
        threads.emplace_back([&] {
            on_worker = true;
            start.arrive_and_wait();
            for (int i = 0; i < lookups; ++i) {
                const int v = app.import_ref("server").version +
                              app.import_ref("database").version +
                              app.import_ref("logging").version;
                if (v == 3 + 2 + 1) ++good;
            }
        });
    }
    for (auto& thread : threads) thread.join();
    return good;
}

int main() {
    constexpr int workers = 4;
    constexpr int lookups = 1000;

    std::puts("lazy: workers import on first use");
    importlock::import_system<component> lazy;
    loader_counts lazy_runs;
    define_app(lazy, lazy_runs);
    const int lazy_good = run_workers(lazy, workers, lookups);
    std::printf("  loaders run: %d, of which on worker threads: %d\n", lazy_runs.total.load(),
                lazy_runs.on_workers.load());

    std::puts("front-loaded: main imports the dependencies, then starts workers");
    importlock::import_system<component> app;
    loader_counts runs;
    define_app(app, runs);
    app.import_module("logging");  // configure process, import dependencies ...
    app.import_module("database");
    app.import_module("server");
    std::printf("  startup ran %d loaders on the main thread\n", runs.total.load());
    const int good = run_workers(app, workers, lookups);  // ... then start the workers
    std::printf("  workers: %d x %d lookups of 3 import_ref hits, %d correct\n", workers, lookups,
                good);
    std::printf("  loaders run: %d, of which on worker threads: %d\n", runs.total.load(),
                runs.on_workers.load());

    const bool ok = lazy_runs.total == 3 && lazy_runs.on_workers == 3 &&
                    lazy_good == workers * lookups && runs.total == 3 && runs.on_workers == 0 &&
                    good == workers * lookups && app.lock_count() == 0 && lazy.lock_count() == 0;
    std::puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
