// SPDX-License-Identifier: BSL-1.0
// A lock policy with an instrumented mutex (README "Writing a policy"; 42.28:
// find contention points): counting_mutex counts how often lock() found the
// import state taken. 8 threads import a small dependency graph; every loader
// runs once, and hits afterwards never touch the mutex.
#include <importlock/importlock.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// A mutex that tries try_lock() first and counts the failures. The system
// default-constructs its own instance, so the counters are static.
class counting_mutex {
public:
    void lock() {
        locks.fetch_add(1, std::memory_order_relaxed);
        if (mutex_.try_lock()) return;
        contended.fetch_add(1, std::memory_order_relaxed);
        mutex_.lock();
    }
    bool try_lock() {
        locks.fetch_add(1, std::memory_order_relaxed);
        return mutex_.try_lock();
    }
    void unlock() { mutex_.unlock(); }

    static inline std::atomic<long> locks{0};
    static inline std::atomic<long> contended{0};

private:
    std::mutex mutex_;
};

using counted_locks = importlock::basic_per_key_locks<counting_mutex, std::condition_variable_any>;

struct module {
    int value = 0;
};

int main() {
    importlock::basic_import_system<std::string, module, counted_locks> modules;
    std::atomic<int> runs[4] = {};
    const auto work = [] { std::this_thread::sleep_for(std::chrono::milliseconds(2)); };
    modules.finder().define("base", [&](module& m, auto&) {
        ++runs[0];
        work();
        m.value = 1;
    });
    modules.finder().define("left", [&](module& m, auto& imp) {
        ++runs[1];
        work();
        m.value = imp.import_ref("base").value + 1;
    });
    modules.finder().define("right", [&](module& m, auto& imp) {
        ++runs[2];
        work();
        m.value = imp.import_ref("base").value + 2;
    });
    modules.finder().define("app", [&](module& m, auto& imp) {
        ++runs[3];
        m.value = imp.import_ref("left").value + imp.import_ref("right").value;
    });

    constexpr int threads_n = 8;
    const char* const keys[] = {"app", "left", "right", "base"};
    std::latch start(threads_n);
    std::atomic<int> correct{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < threads_n; ++t) {
        threads.emplace_back([&, t] {
            start.arrive_and_wait();
            modules.import_module(keys[t % 4]);  // each thread starts somewhere else
            if (modules.import_ref("app").value == 5) ++correct;
        });
    }
    for (auto& thread : threads) thread.join();

    std::printf("%d threads imported app/left/right/base: %d saw app = 5\n", threads_n,
                correct.load());
    std::printf("state mutex: %ld lock() calls, %ld contended (try_lock failed first)\n",
                counting_mutex::locks.load(), counting_mutex::contended.load());
    bool ok = correct == threads_n && modules.lock_count() == 0;
    const char* const names[] = {"base", "left", "right", "app"};  // the order of runs[]
    for (int i = 0; i < 4; ++i) {
        std::printf("  %-5s loader runs: %d\n", names[i], runs[i].load());
        ok = ok && runs[i] == 1;
    }

    const long before = counting_mutex::locks;
    long sum = 0;
    for (int i = 0; i < 1000; ++i) sum += modules.import_ref("app").value;
    for (int i = 0; i < 1000; ++i) sum += modules.import_module("base")->value;
    std::printf("2000 hits afterwards took the mutex %ld times\n", counting_mutex::locks - before);
    ok = ok && sum == 6000 && counting_mutex::locks == before;

    std::puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
