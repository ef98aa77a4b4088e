// SPDX-License-Identifier: BSL-1.0
// examples/tracked_locks.cpp: the program's own locks and joins in the
// wait-for graph (chapter 42.23, 42.24).
//
// 42.24's registry holds its lock while it imports a plugin, and the plugin
// registers itself under the same lock. With std::mutex, a second thread
// that imports the plugin at the same moment hangs both threads forever.
// With importlock::tracked_mutex the wait that would close the cycle throws
// importlock::deadlock_error, naming the mutex and the import. The second
// part is 42.23: a loader that starts a thread and joins it while that
// thread imports the loader's own key.
#include <importlock/importlock.hpp>
#include <importlock/tracked_mutex.hpp>
#include <importlock/tracked_thread.hpp>

#include <atomic>
#include <cstdio>
#include <latch>
#include <map>
#include <mutex>
#include <string>
#include <thread>

struct plugin_module {
    std::string name;
};

int main() {
    importlock::import_system<plugin_module> system;

    // --- 42.24: a lock held while importing a plugin that takes the same lock
    importlock::tracked_mutex registry_lock{"registry"};
    std::map<std::string, int> handlers;
    std::latch in_plugin(1);  // script the interleaving that hangs with std::mutex
    std::latch resume(1);
    std::atomic<int> runs{0};
    system.finder().define("plugin", [&](plugin_module& m, auto&) {
        if (runs++ == 0) {
            in_plugin.count_down();
            resume.wait();
        }
        std::lock_guard guard(registry_lock);  // register(name, handler)
        handlers["plugin"] = 1;
        m.name = "plugin";
    });

    std::string other_thread;
    std::thread other([&] {  // imports the plugin first
        try {
            system.import_module("plugin");
            other_thread = "imported the plugin";
        } catch (const importlock::deadlock_error& e) {
            other_thread = e.what();
        }
    });
    in_plugin.wait();
    std::string this_thread;
    {
        std::lock_guard guard(registry_lock);  // `with lock: import plugin`
        std::thread resumer([&] {
            while (importlock::wait_graph_domain::process_wide().waiting_threads() == 0) {
                std::this_thread::yield();  // until this thread waits for the plugin
            }
            resume.count_down();
        });
        try {
            system.import_module("plugin");
            this_thread = "imported the plugin";
        } catch (const importlock::deadlock_error& e) {
            this_thread = e.what();
        }
        resumer.join();
    }
    other.join();
    std::printf("42.24, the other thread: %s\n", other_thread.c_str());
    std::printf("42.24, this thread:      %s\n", this_thread.c_str());
    // The fix the chapter recommends: do not hold the lock while importing.
    const std::string fixed = system.import_module("plugin")->name;
    std::printf("42.24, the fix:          imported '%s' (handlers registered: %zu)\n",
                fixed.c_str(), handlers.size());

    // --- 42.23: a loader that joins a thread which imports the loader's key
    importlock::tracked_thread kept;
    std::string join_result;
    system.finder().define("dead", [&](plugin_module& m, auto& imp) {
        importlock::tracked_thread helper([&imp] { imp.import_module("dead"); });
        while (importlock::wait_graph_domain::process_wide().waiting_threads() == 0) {
            std::this_thread::yield();  // until the helper waits for "dead"
        }
        try {
            helper.join();  // with std::thread: a hang
            join_result = "joined";
        } catch (const importlock::deadlock_error& e) {
            join_result = e.what();
        }
        m.name = "dead";
        kept = std::move(helper);  // joined after the loader returns
    });
    system.import_module("dead");
    kept.join();
    std::printf("42.23, the loader's join: %s\n", join_result.c_str());

    const bool ok =
        other_thread.find("deadlock: mutex 'registry' is held by thread") == 0 &&
        this_thread.find("this thread already holds mutex 'registry'") != std::string::npos &&
        join_result.find("(being joined), which waits for the import of 'dead'") !=
            std::string::npos &&
        handlers.size() == 1;
    return ok ? 0 : 1;
}
