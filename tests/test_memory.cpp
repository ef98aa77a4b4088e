// SPDX-License-Identifier: BSL-1.0
// Memory follows the live keys (issue 10, target 3): after erases, failed imports,
// clear() and handles, the registry frees what nothing refers to any more, and a
// lock-free hit that may still read an entry delays its freeing until it leaves.
//
// The heap is measured by replacing the global operator new and delete with ones that
// count the live bytes (a 16-byte header holds each block's size). ThreadSanitizer's
// runtime defines operator new itself, so there the byte counts are not checked (the
// behaviour is: entry_count() and the hit-versus-erase interleaving).
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/policies.hpp"
#include "support/watchdog.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <latch>
#include <memory>
#include <new>
#include <optional>
#include <semaphore>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#define IMPORTLOCK_TEST_COUNTS_BYTES 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define IMPORTLOCK_TEST_COUNTS_BYTES 0
#endif
#endif
#ifndef IMPORTLOCK_TEST_COUNTS_BYTES
#define IMPORTLOCK_TEST_COUNTS_BYTES 1
#endif

namespace {
std::atomic<long long> live_bytes{0};
}  // namespace

#if IMPORTLOCK_TEST_COUNTS_BYTES
// The replacements pair malloc with free by design; g++ cannot see that once
// operator new is inlined into its callers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
constexpr std::size_t header = 16;  // keeps the default new alignment (16)
void* counted_allocate(std::size_t size) {
    void* raw = std::malloc(size + header);
    if (raw == nullptr) return nullptr;
    *static_cast<std::size_t*>(raw) = size;
    live_bytes.fetch_add(static_cast<long long>(size), std::memory_order_relaxed);
    return static_cast<unsigned char*>(raw) + header;
}
void counted_free(void* p) noexcept {
    if (p == nullptr) return;
    void* raw = static_cast<unsigned char*>(p) - header;
    live_bytes.fetch_sub(static_cast<long long>(*static_cast<std::size_t*>(raw)),
                         std::memory_order_relaxed);
    std::free(raw);
}
}  // namespace

void* operator new(std::size_t size) {
    if (void* p = counted_allocate(size)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t size) {
    return operator new(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    return counted_allocate(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
    return counted_allocate(size);
}
void operator delete(void* p) noexcept {
    counted_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
    counted_free(p);
}
void operator delete[](void* p) noexcept {
    counted_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    counted_free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    counted_free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    counted_free(p);
}
#endif

namespace {

using importlock_test::watchdog;
constexpr auto limit = std::chrono::seconds(60);

struct int_module {
    int value = 0;
};
using int_importer = importlock::importer<int, int_module>;

// Finds every int key: loaders set the value; negative keys fail; keys from 1,000,000
// import the key below them first (chains for dependency-ordered teardown).
struct any_int {
    std::optional<importlock::module_spec<int, int_module>> operator()(int key) const {
        importlock::module_spec<int, int_module> spec;
        spec.loader = [key](int_module& m, int_importer& imp) {
            if (key < 0) throw std::runtime_error("refused");
            if (key > 1'000'000) imp.import_module(key - 1);
            m.value = key;
        };
        return spec;
    }
};
// The same, but no key >= 2,000,000 is found.
struct some_ints {
    std::optional<importlock::module_spec<int, int_module>> operator()(int key) const {
        if (key >= 2'000'000) return std::nullopt;
        return any_int{}(key);
    }
};

template <class Policy>
using int_system =
    importlock::basic_import_system<int, int_module, Policy,
                                    importlock::function_finder<int, int_module, some_ints>>;

long long live() {
    return live_bytes.load(std::memory_order_relaxed);
}

// Checks that the heap is back within 10% of what the empty system held (issue 10:
// "within 10% of what the live modules need", none here).
void check_near(long long baseline, const char* after) {
    if (!IMPORTLOCK_TEST_COUNTS_BYTES) return;
    INFO("after " << after << ": " << live() << " live bytes; the empty system: " << baseline);
    CHECK(live() <= baseline + baseline / 10);
}

// A system that has imported and erased one key: what exists once per system or per
// thread (the reader record, the observer slot) exists before the baseline.
template <class System>
long long warmed_baseline(System& system) {
    (void)system.import_ref(0);
    system.erase(0);
    return live();
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("memory: erasing every key returns the registry to its empty footprint",
                        "[memory]", importlock_test::all_policies) {
    int_system<TestType> system;
    const long long baseline = warmed_baseline(system);
    constexpr int keys = 20000;
    for (int k = 1; k <= keys; ++k) (void)system.import_ref(k);
    CHECK(system.entry_count() == keys);
    if (IMPORTLOCK_TEST_COUNTS_BYTES) CHECK(live() > baseline + keys * 32);
    for (int k = 1; k <= keys; ++k) CHECK(system.erase(k));
    CHECK(system.size() == 0);
    CHECK(system.entry_count() == 0);
    check_near(baseline, "20,000 imports, then 20,000 erases");
}

// A grace period with another thread running costs a process-wide barrier, so tables
// that growth replaces wait, while another thread owns a reader record, for the next
// erase (up to registry.hpp's deferred_table_bytes per shard); without such a thread,
// and after the next erase, nothing is kept.
TEMPLATE_LIST_TEST_CASE(
    "memory: replaced tables wait for the next erase while another "
    "thread reads, within a bound",
    "[memory][threads]", importlock_test::threaded_policies) {
    watchdog dog("deferred tables");
    constexpr int keys = 1500;  // one shard: a table of 4096 slots, 4080 replaced
    constexpr long long bound_per_shard = 32 * 1024;
    const auto grown_bytes = [](int_system<TestType>& system) {
        const long long before = live();
        for (int k = 1; k <= keys; ++k) (void)system.import_ref(k);
        return live() - before;
    };
    long long alone_bytes = 0;
    {
        int_system<TestType> alone;
        const long long baseline_alone = warmed_baseline(alone);
        alone_bytes = grown_bytes(alone);
        for (int k = 1; k <= keys; ++k) CHECK(alone.erase(k));
        check_near(baseline_alone, "growth alone, then every key erased");
    }

    // Another thread owns a reader record (it imported once) and waits.
    int_system<TestType> other;
    std::latch has_read(1);
    std::binary_semaphore may_end(0);
    std::thread reader([&] {
        (void)other.import_ref(0);
        has_read.count_down();
        may_end.acquire();
    });
    has_read.wait();
    int_system<TestType> system;
    const long long baseline = warmed_baseline(system);
    const long long beside_bytes = grown_bytes(system);
    CHECK(system.entry_count() == keys);
    if (IMPORTLOCK_TEST_COUNTS_BYTES) {
        INFO("growth alone: " << alone_bytes << " B; beside a reader: " << beside_bytes << " B");
        CHECK(beside_bytes > alone_bytes);  // some replaced tables wait
        CHECK(beside_bytes - alone_bytes <= 8 * bound_per_shard);
    }
    // Erasing every key frees the entries and, with them, the tables that waited.
    for (int k = 1; k <= keys; ++k) CHECK(system.erase(k));
    CHECK(system.entry_count() == 0);
    check_near(baseline, "growth beside a reader, then every key erased");
    may_end.release();
    reader.join();
}

TEMPLATE_LIST_TEST_CASE("memory: import and erase, one key at a time, keep the empty footprint",
                        "[memory]", importlock_test::all_policies) {
    int_system<TestType> system;
    const long long baseline = warmed_baseline(system);
    long long peak = 0;
    for (int k = 1; k <= 20000; ++k) {
        (void)system.import_module(k);
        system.erase(k);
        peak = std::max(peak, live());
    }
    CHECK(system.entry_count() == 0);
    check_near(baseline, "20,000 rounds of import and erase");
    if (IMPORTLOCK_TEST_COUNTS_BYTES) {
        INFO("peak " << peak << " live bytes, baseline " << baseline);
        CHECK(peak <= baseline + 4096);  // one module and entry at a time, never 20,000
    }
}

TEMPLATE_LIST_TEST_CASE("memory: failed and not-found imports leave nothing", "[memory]",
                        importlock_test::all_policies) {
    int_system<TestType> system;
    const long long baseline = warmed_baseline(system);
    for (int k = 1; k <= 5000; ++k) {
        CHECK_THROWS_AS(system.import_module(-k), std::runtime_error);  // the loader throws
        CHECK_THROWS_AS(system.import_ref(2'000'000 + k), importlock::module_not_found_error);
    }
    CHECK(system.entry_count() == 0);
    CHECK(system.size() == 0);
    check_near(baseline, "10,000 failed imports");
    // The failed keys import again once they can (nothing stale was kept).
    CHECK_THROWS_AS(system.import_module(-1), std::runtime_error);
    CHECK(system.import_module(1)->value == 1);
}

TEMPLATE_LIST_TEST_CASE("memory: clear() and a dependency chain leave nothing", "[memory]",
                        importlock_test::all_policies) {
    int_system<TestType> system;
    const long long baseline = warmed_baseline(system);
    (void)system.import_module(1'000'000 + 500);  // imports the 500 keys below it first
    CHECK(system.size() == 501);
    CHECK(system.clear() == 501);
    CHECK(system.entry_count() == 0);
    check_near(baseline, "clear() of a chain of 501 modules");
}

TEMPLATE_LIST_TEST_CASE("memory: a blocked key keeps its entry until erased", "[memory]",
                        importlock_test::all_policies) {
    int_system<TestType> system;
    const long long baseline = warmed_baseline(system);
    for (int k = 1; k <= 100; ++k) system.block(k);
    CHECK(system.entry_count() == 100);
    CHECK_THROWS_AS(system.import_module(7), importlock::import_halted_error);
    for (int k = 1; k <= 100; ++k) CHECK(system.erase(k));
    CHECK(system.entry_count() == 0);
    check_near(baseline, "100 blocks, then 100 erases");
}

TEMPLATE_LIST_TEST_CASE("memory: a handle keeps its key's entry, its last copy frees it",
                        "[memory][handle]", importlock_test::all_policies) {
    int_system<TestType> system;
    const long long baseline = warmed_baseline(system);
    {
        auto handle = system.handle(5);
        CHECK(handle.get().value == 5);
        CHECK(system.erase(5));
        CHECK(system.entry_count() == 1);  // pinned by the handle, holding nothing
        CHECK(handle.get().value == 5);    // imports again into the same entry
        auto copy = handle;
        CHECK(system.erase(5));
        {
            const auto moved = std::move(handle);
            CHECK(system.entry_count() == 1);
        }
        CHECK(system.entry_count() == 1);  // the copy still pins it
        CHECK(copy.get().value == 5);
        CHECK(system.erase(5));
    }
    CHECK(system.entry_count() == 0);
    {
        auto owning = system.shared_handle(6);
        CHECK(owning->value == 6);
        auto second = owning;
        CHECK(system.erase(6));
        CHECK(system.entry_count() == 1);
        CHECK(owning.owned()->value == 6);  // the module outlives the erase in the handle
        CHECK(second->value == 6);          // imports again
        CHECK(system.erase(6));
    }
    CHECK(system.entry_count() == 0);
    check_near(baseline, "handles to erased keys were destroyed");
}

TEMPLATE_LIST_TEST_CASE("memory: per live module, near an unordered_map of shared_ptr", "[memory]",
                        importlock_test::all_policies) {
    if (!IMPORTLOCK_TEST_COUNTS_BYTES) return;
    constexpr int keys = 20000;
    long long map_bytes = 0;
    {
        const long long before = live();
        std::unordered_map<int, std::shared_ptr<int_module>> map;
        for (int k = 1; k <= keys; ++k) map.emplace(k, std::make_shared<int_module>());
        map_bytes = live() - before;
    }
    int_system<TestType> system;
    const long long baseline = warmed_baseline(system);
    for (int k = 1; k <= keys; ++k) (void)system.import_ref(k);
    const long long system_bytes = live() - baseline;
    const double ratio = static_cast<double>(system_bytes) / static_cast<double>(map_bytes);
    INFO("registry " << system_bytes / keys << " B per module, unordered_map " << map_bytes / keys
                     << " B per module: " << ratio << "x");
    // The entry (key, hash, state, claim, pins, dependencies, teardown order, the
    // module twice: owner and published address), its links and a share of the table,
    // beside the map's node and bucket share; the module's block (with its importer
    // here) in both. Issue 10 asks for 1.5x: not met (2.8x in requested bytes);
    // benchmarks/ records it. This bound catches a regression, not the target.
    CHECK(ratio < 3.2);
}

// ---------------------------------------------------------------------------
// A hit reading an entry delays its freeing. The hit is held inside its lock-free
// read section by a key whose equality blocks (user code the lookup calls); the
// erase on another thread drops the module, removes the entry and then waits for
// the hit before freeing it: the policy's spin_wait_point() says it is waiting.
// ---------------------------------------------------------------------------

namespace {

struct gated_key {
    int id = 0;
};

// Set on the hit's thread: its next equality blocks until released.
struct gate {
    std::latch entered{1};
    std::latch released{1};
};
thread_local gate* gate_of_this_thread = nullptr;

bool operator==(const gated_key& a, const gated_key& b) {
    if (gate* g = gate_of_this_thread) {
        gate_of_this_thread = nullptr;
        g->entered.count_down();
        g->released.wait();
    }
    return a.id == b.id;
}

std::atomic<int> waits_for_readers{0};
std::latch* first_wait_for_readers = nullptr;

struct signalling_locks : importlock::per_key_locks {
    static void spin_wait_point() noexcept {
        if (waits_for_readers.fetch_add(1) == 0 && first_wait_for_readers != nullptr) {
            first_wait_for_readers->count_down();
        }
    }
};

}  // namespace

template <>
struct std::hash<gated_key> {
    std::size_t operator()(const gated_key& k) const noexcept { return std::hash<int>{}(k.id); }
};

TEST_CASE("memory: an erase waits for a hit still reading the entry before freeing it",
          "[memory][threaded]") {
    watchdog dog("memory: erase waits for a hit", limit);
    using system_type = importlock::basic_import_system<gated_key, int_module, signalling_locks>;
    system_type system;
    system.finder().define(gated_key{1}, [](int_module& m, auto&) { m.value = 1; });
    REQUIRE(system.import_ref(gated_key{1}).value == 1);

    gate g;
    std::latch erase_waits(1);
    first_wait_for_readers = &erase_waits;
    waits_for_readers = 0;
    std::atomic<bool> erase_returned{false};
    int seen_by_hit = 0;
    std::thread hit([&] {
        gate_of_this_thread = &g;
        // Inside the read section: the lookup compares the key, and blocks there.
        seen_by_hit = system.import_ref(gated_key{1}).value;
    });
    g.entered.wait();  // the hit holds the entry's address, inside its section
    std::thread eraser([&] {
        CHECK(system.erase(gated_key{1}));
        erase_returned = true;
    });
    erase_waits.wait();  // the erase is waiting for the hit's section to end
    CHECK_FALSE(erase_returned.load());
    CHECK(system.entry_count() == 0);  // removed from lookups, not freed yet
    g.released.count_down();           // the hit reads the entry (ASan: not freed) and leaves
    hit.join();
    eraser.join();
    first_wait_for_readers = nullptr;
    CHECK(erase_returned.load());
    CHECK(seen_by_hit == 1);  // the hit saw the module dropped and imported the key again
    CHECK(waits_for_readers.load() >= 1);
    CHECK(system.entry_count() == 1);
}

// An erase while the key's own load still holds its claim (here from the on_import_end
// hook, which runs before the claim's release) drops the module; the claim's release then
// removes the entry (lock_protocol.hpp's sweep mark), so nothing is left behind.
TEMPLATE_LIST_TEST_CASE("memory: an erase inside the key's own on_import_end leaves no entry",
                        "[memory][observer]", importlock_test::all_policies) {
    using system_type = int_system<TestType>;
    system_type system;
    const long long baseline = warmed_baseline(system);
    struct erase_on_end final : importlock::import_observer<int> {
        system_type* system = nullptr;
        bool erased = false;
        void on_import_end(const int& key, std::chrono::nanoseconds) override {
            erased = system->erase(key);
        }
    };
    auto observer = std::make_shared<erase_on_end>();
    observer->system = &system;
    system.set_observer(observer);
    {
        auto module = system.import_module(3);  // the caller still owns the module
        CHECK(module->value == 3);
        CHECK(system.entry_count() == 0);  // removed by the release of the load's claim
    }
    system.set_observer(nullptr);
    CHECK(observer->erased);
    CHECK_FALSE(system.contains(3));
    CHECK_FALSE(system.erase(3));  // nothing left to drop
    CHECK(system.entry_count() == 0);
    check_near(baseline, "an erase from on_import_end");
    // The key imports again normally.
    CHECK(system.import_ref(3).value == 3);
    CHECK(system.entry_count() == 1);
}

// The same from another thread: the loader's on_import_end waits while a second thread
// erases the key (forced by latches), then the load returns. With a third thread waiting
// for the key meanwhile (a contended claim, released under the mutex) as well.
TEMPLATE_LIST_TEST_CASE(
    "memory: an erase from another thread during the end of a load "
    "leaves no entry",
    "[memory][threads][observer]", importlock_test::threaded_policies) {
    watchdog dog("erase during the end of a load");
    using system_type = int_system<TestType>;
    for (const bool with_waiter : {false, true}) {
        CAPTURE(with_waiter);
        system_type system;
        const long long baseline = warmed_baseline(system);
        std::latch begun(1), may_load(1), at_end(1), erased(1);
        struct pause_at_end final : importlock::import_observer<int> {
            std::latch *begun = nullptr, *may_load = nullptr, *at_end = nullptr, *erased = nullptr;
            std::atomic<bool> began{false}, ended{false};
            void on_import_begin(const int& key) override {
                if (key != 5 || began.exchange(true)) return;
                begun->count_down();
                may_load->wait();
            }
            void on_import_end(const int& key, std::chrono::nanoseconds) override {
                if (key != 5 || ended.exchange(true)) return;
                at_end->count_down();
                erased->wait();
            }
        };
        auto observer = std::make_shared<pause_at_end>();
        observer->begun = &begun;
        observer->may_load = &may_load;
        observer->at_end = &at_end;
        observer->erased = &erased;
        system.set_observer(observer);
        int loaded = 0;
        // Owning: the erase ends the validity of a reference from import_ref.
        std::thread loader([&] { loaded = system.import_module(5)->value; });
        begun.wait();  // the key is claimed, its module not created yet
        std::thread waiter;
        if (with_waiter) {
            // A second import of the key converts the claim to a record and waits for it.
            waiter = std::thread([&] { (void)system.import_module(5); });
            while (system.waiter_count(5) == 0) std::this_thread::yield();
        }
        may_load.count_down();
        at_end.wait();  // the module is ready, its claim still held
        CHECK(system.erase(5));
        erased.count_down();
        loader.join();
        if (waiter.joinable()) waiter.join();
        system.set_observer(nullptr);
        CHECK(loaded == 5);
        if (!with_waiter) {
            CHECK_FALSE(system.contains(5));
            CHECK(system.entry_count() == 0);
            check_near(baseline, "an erase during the end of a load");
        } else {
            // The waiter found the module erased once it got the key, and imported it again.
            CHECK(system.entry_count() == system.size());
            system.erase(5);
            CHECK(system.entry_count() == 0);
            check_near(baseline, "an erase during the end of a contended load");
        }
        CHECK(system.lock_count() == 0);
    }
}
