// SPDX-License-Identifier: BSL-1.0
// Giving up on a slow import held by another thread (42.21, 42.27: a hang
// during import becomes an error): import_module_for times out, and
// import_module(key, stop_token) is cancelled; neither interrupts the loader,
// whose import finishes and is seen by every later import.
#include <importlock/importlock.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <latch>
#include <string>
#include <thread>
#include <version>
#if defined(__cpp_lib_jthread)
#include <stop_token>
#endif

struct model {
    int weights = 0;
};

int main() {
    std::latch release(1);  // main lets the slow loader finish
    importlock::import_system<model> models;
    std::atomic<int> runs{0};
    models.finder().define("big_model", [&](model& m, auto&) {
        ++runs;
        release.wait();  // slow: until main says so
        m.weights = 42;
    });
    bool ok = true;

    int slow_weights = 0;
    std::thread loading([&] { slow_weights = models.import_module("big_model")->weights; });
    while (!models.is_initializing("big_model")) std::this_thread::yield();
    std::puts("a thread is loading big_model (its loader waits for main)");

    // 1. A timed import gives up after a few milliseconds.
    const auto begin = std::chrono::steady_clock::now();
    try {
        models.import_module_for("big_model", std::chrono::milliseconds(5));
        ok = false;
    } catch (const importlock::import_timeout_error& e) {
        const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - begin);
        std::printf("import_module_for(5 ms) after %lld ms: %s\n",
                    static_cast<long long>(waited.count()), e.what());
        ok = ok && e.holder() == loading.get_id();
    }

#if defined(__cpp_lib_jthread)
    // 2. An import cancelled from another thread through its stop_token.
    std::stop_source stop;
    std::thread waiting([&] {
        try {
            models.import_module("big_model", stop.get_token());
            ok = false;
        } catch (const importlock::import_cancelled_error& e) {
            std::printf("import_module(stop_token) cancelled: %s\n", e.what());
        }
    });
    while (models.waiter_count("big_model") != 1) std::this_thread::yield();
    std::puts("one thread waits for big_model; main requests stop");
    stop.request_stop();
    waiting.join();

#else
    std::puts("import_module(stop_token) skipped: this standard library has no std::stop_token");
#endif

    // 3. The slow import was never interrupted: it finishes, and later imports see it.
    std::printf("loader still running: %d; main releases it\n",
                models.is_initializing("big_model"));
    ok = ok && models.is_initializing("big_model");
    release.count_down();
    loading.join();
    const auto later = models.import_module_for("big_model", std::chrono::milliseconds(5));
    std::printf("slow import got weights = %d; a later timed import gets weights = %d\n",
                slow_weights, later->weights);
    std::printf("loader runs: %d, lock_count() = %zu\n", runs.load(), models.lock_count());
    ok = ok && slow_weights == 42 && later->weights == 42 && runs == 1 && models.lock_count() == 0;

    std::puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
