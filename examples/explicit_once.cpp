// SPDX-License-Identifier: BSL-1.0
// Explicit one-time initialisation instead of import side effects (42.33): a
// single-phase module (define_value) is a finished value, so no partial object
// exists and a cycle through it is a circular_import_error; contrasted with the
// two-phase default, whose registered object a cycle sees half-built (42.8).
#include <importlock/importlock.hpp>

#include <atomic>
#include <cstddef>
#include <cstdio>
#include <latch>
#include <string>
#include <thread>
#include <vector>

struct component {
    std::string name;
    int interval_ms = 0;
    bool ready = false;  // set last: false means "seen half-built"
};

using system_t = importlock::import_system<component>;

int main() {
    bool ok = true;

    std::puts("two-phase (define): telemetry's loader mutates a registered object");
    system_t two_phase;
    two_phase.finder().define("telemetry", [](component& t, auto& imp) {
        t.name = "telemetry";
        imp.import_module("exporter");  // exporter imports telemetry back
        t.interval_ms = 500;
        t.ready = true;
    });
    two_phase.finder().define("exporter", [&ok](component& e, auto& imp) {
        const auto t = imp.import_module("telemetry");  // the cycle: half-built telemetry
        std::printf("  exporter sees telemetry: name=%s interval_ms=%d ready=%d\n", t->name.c_str(),
                    t->interval_ms, t->ready);
        ok = ok && t->name == "telemetry" && !t->ready;
        e.name = "exporter";
        e.ready = true;
    });
    ok = ok && two_phase.import_module("telemetry")->ready;

    std::puts("single-phase (define_value): telemetry is built, then published");
    system_t one_phase;
    one_phase.finder().define_value("telemetry", [](auto& imp) {
        imp.import_module("exporter");  // the same cycle ...
        return component{"telemetry", 500, true};
    });
    one_phase.finder().define("exporter", [](component& e, auto& imp) {
        imp.import_module("telemetry");  // ... has no half-built object to return
        e.name = "exporter";
    });
    try {
        one_phase.import_module("telemetry");
        ok = false;
    } catch (const importlock::circular_import_error& e) {
        std::printf("  %s\n", e.what());
    }
    std::printf("  after the error: contains(telemetry) = %d, contains(exporter) = %d\n",
                one_phase.contains("telemetry"), one_phase.contains("exporter"));
    ok = ok && !one_phase.contains("telemetry") && !one_phase.contains("exporter");

    std::puts("single-phase without the cycle, initialised once from 4 threads");
    std::atomic<int> builds{0};
    one_phase.finder().define("exporter", [&ok](component& e, auto& imp) {
        // While telemetry is being built, nothing is registered for it.
        const bool visible = imp.get("telemetry") != nullptr;
        std::printf("  exporter: get(telemetry) during its build = %s\n",
                    visible ? "an object" : "null");
        ok = ok && !visible;
        e.name = "exporter";
        e.ready = true;
    });
    one_phase.finder().define_value("telemetry", [&builds](auto& imp) {
        ++builds;
        const auto& exporter = imp.import_ref("exporter");  // a dependency, imported first
        return component{"telemetry+" + exporter.name, 500, true};
    });
    const auto initialize_once = [&] { return &one_phase.import_ref("telemetry"); };
    std::latch start(4);
    std::vector<const component*> seen(4);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < seen.size(); ++i) {
        threads.emplace_back([&, i] {
            start.arrive_and_wait();
            seen[i] = initialize_once();
        });
    }
    for (auto& thread : threads) thread.join();
    bool same = true;
    for (const component* c : seen) same = same && c == seen[0] && c->ready;
    std::printf("  builds: %d, every thread got the finished %s (interval_ms=%d): %s\n",
                builds.load(), seen[0]->name.c_str(), seen[0]->interval_ms, same ? "yes" : "no");
    ok = ok && builds == 1 && same && one_phase.lock_count() == 0;

    std::puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
