// SPDX-License-Identifier: BSL-1.0
// Unit tests of importlock::detail::registry: lookups, growth, entry stability, colliding
// hashes, and lock-free readers running beside a writer.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <random>
#include <semaphore>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using importlock::detail::entry_state;
using importlock_test::watchdog;

// Every key hashes to the same value: each lookup probes past every other key.
struct constant_hash {
    std::size_t operator()(const std::string&) const noexcept { return 42; }
};

// Entries carry no per-system data here.
struct no_extra {
    template <class Entry>
    explicit no_extra(Entry&) noexcept {}
};

template <class Key>
using entry_of =
    importlock::detail::registry_entry<Key, int, importlock::detail::spin_lock, no_extra>;

template <class Key, class Hash = std::hash<Key>>
using registry_of = importlock::detail::registry<entry_of<Key>, Hash, std::equal_to<Key>>;

// A dependency list of string keys.
importlock::detail::key_list<std::string> keys(std::vector<std::string> list) {
    return importlock::detail::key_list<std::string>(std::move(list));
}

std::string string_key(int i) {
    return "module." + std::to_string(i);
}

}  // namespace

TEST_CASE("registry: find and find_or_insert", "[registry]") {
    registry_of<std::string> reg;
    const std::hash<std::string> hash;
    CHECK(reg.entry_count() == 0);
    CHECK(reg.find("a", hash("a")) == nullptr);

    auto& a = reg.find_or_insert("a", hash("a"));
    CHECK(reg.entry_count() == 1);
    CHECK(a.key == "a");
    CHECK(a.hash == hash("a"));
    CHECK(a.current_state() == entry_state::absent);
    CHECK(a.registered() == nullptr);

    CHECK(reg.find("a", hash("a")) == &a);
    CHECK(&reg.find_or_insert("a", hash("a")) == &a);  // no second entry
    CHECK(reg.entry_count() == 1);
    CHECK(reg.find("b", hash("b")) == nullptr);

    auto& b = reg.find_or_insert("b", hash("b"));
    CHECK(&b != &a);
    CHECK(reg.entry_count() == 2);
    CHECK(reg.find("b", hash("b")) == &b);
    CHECK(reg.find("a", hash("a")) == &a);

    // A matching hash is not enough: the key must be equal too.
    CHECK(reg.find("c", hash("a")) == nullptr);

    std::set<std::string> seen;
    reg.for_each([&](const auto& e) { seen.insert(e.key); });
    CHECK(seen == std::set<std::string>{"a", "b"});
}

TEST_CASE("registry: an entry keeps what a writer stores in it", "[registry]") {
    registry_of<int> reg;
    auto& e = reg.find_or_insert(7, std::hash<int>{}(7));
    auto module = std::make_shared<int>(70);
    e.publish_built(module, {}, 1);
    const auto* found = reg.find(7, std::hash<int>{}(7));
    REQUIRE(found == &e);
    CHECK(found->current_state() == entry_state::ready);
    CHECK(found->published() == module);
    CHECK(*found->published() == 70);
}

TEST_CASE("registry entry: each transition changes state and module together",
          "[registry][entry]") {
    entry_of<std::string> e("k", 1);
    auto module = std::make_shared<int>(1);

    auto loading = module;
    CHECK(e.begin_load(loading));  // absent -> initializing, taking the module over
    CHECK(loading == nullptr);
    CHECK(e.current_state() == entry_state::initializing);
    CHECK(e.registered() == module);
    CHECK(e.published() == nullptr);  // never handed out while initialising
    CHECK(e.ready_module() == nullptr);

    e.finish_load(keys({"dep"}), 7);  // initializing -> ready
    CHECK(e.current_state() == entry_state::ready);
    CHECK(e.published() == module);
    CHECK(e.ready_module() == module.get());
    CHECK(e.ready_order == 7);
    CHECK(e.dependencies.to_vector() == std::vector<std::string>{"dep"});

    e.begin_reload();  // ready -> reloading
    CHECK(e.current_state() == entry_state::reloading);
    CHECK(e.published() == nullptr);
    CHECK(e.ready_module() == nullptr);
    CHECK(e.registered() == module);
    auto deps = keys({"other"});
    e.finish_reload(&deps);  // reloading -> ready, place in teardown order kept
    CHECK(e.published() == module);
    CHECK(e.ready_order == 7);
    CHECK(e.dependencies.to_vector() == std::vector<std::string>{"other"});
    e.begin_reload();
    std::shared_ptr<int> dropped;
    CHECK_FALSE(e.block(dropped));  // refused while a reload is in flight
    CHECK(e.current_state() == entry_state::reloading);
    e.finish_reload(nullptr);  // a failed reload keeps the dependencies
    CHECK(e.dependencies.to_vector() == std::vector<std::string>{"other"});

    CHECK(e.drop() == module);  // ready -> absent
    CHECK(e.current_state() == entry_state::absent);
    CHECK(e.registered() == nullptr);
    CHECK(e.dependencies.empty());

    auto second = std::make_shared<int>(2);
    CHECK(e.begin_load(second));
    CHECK_FALSE(e.block(dropped));       // refused while a load is in flight
    CHECK(e.abandon_load() != nullptr);  // initializing -> absent
    CHECK(e.current_state() == entry_state::absent);
    CHECK(e.registered() == nullptr);

    CHECK(e.publish_built(module, keys({"dep"}), 9));  // absent -> ready (single-phase)
    CHECK(e.ready_order == 9);
    CHECK(e.dependencies.to_vector() == std::vector<std::string>{"dep"});
    CHECK(e.block(dropped));  // ready -> blocked
    CHECK(dropped == module);
    CHECK(e.current_state() == entry_state::blocked);
    CHECK(e.published() == nullptr);
    CHECK(e.dependencies.empty());

    // A claimed key blocked before its load registered: the load is refused.
    auto refused = std::make_shared<int>(3);
    CHECK_FALSE(e.begin_load(refused));
    REQUIRE(refused != nullptr);  // left to the caller, to destroy outside every lock
    CHECK(*refused == 3);
    CHECK_FALSE(e.publish_built(std::make_shared<int>(4), keys({"x"}), 10));
    CHECK(e.current_state() == entry_state::blocked);
    CHECK(e.registered() == nullptr);
    CHECK(e.dependencies.empty());
    CHECK(e.ready_order == 9);

    CHECK(e.drop() == nullptr);  // blocked -> absent
    CHECK(e.current_state() == entry_state::absent);
}

TEST_CASE("registry: growth keeps every int key findable and entries in place", "[registry]") {
    constexpr int count = 50000;
    registry_of<int> reg;
    const std::hash<int> hash;
    std::vector<const void*> addresses;
    addresses.reserve(count);
    std::size_t wrong_keys = 0;
    for (int i = 0; i < count; ++i) {
        auto& e = reg.find_or_insert(i, hash(i));
        if (e.key != i || e.hash != hash(i)) ++wrong_keys;
        addresses.push_back(&e);
    }
    CHECK(wrong_keys == 0);
    CHECK(reg.entry_count() == static_cast<std::size_t>(count));

    std::size_t found = 0;
    std::size_t moved = 0;
    for (int i = 0; i < count; ++i) {
        const auto* e = reg.find(i, hash(i));
        if (e != nullptr) ++found;
        if (e != addresses[static_cast<std::size_t>(i)]) ++moved;
    }
    CHECK(found == static_cast<std::size_t>(count));
    CHECK(moved == 0);
    CHECK(reg.find(-1, hash(-1)) == nullptr);
    CHECK(reg.find(count, hash(count)) == nullptr);

    // Re-inserting returns the original entries.
    for (int i = 0; i < count; i += 997) {
        CHECK(&reg.find_or_insert(i, hash(i)) == addresses[static_cast<std::size_t>(i)]);
    }
    CHECK(reg.entry_count() == static_cast<std::size_t>(count));
}

TEST_CASE("registry: growth keeps every std::string key findable and entries in place",
          "[registry]") {
    constexpr int count = 20000;
    registry_of<std::string> reg;
    const std::hash<std::string> hash;
    std::vector<const void*> addresses;
    for (int i = 0; i < count; ++i) {
        const std::string key = string_key(i);
        addresses.push_back(&reg.find_or_insert(key, hash(key)));
    }
    CHECK(reg.entry_count() == static_cast<std::size_t>(count));
    std::size_t wrong = 0;
    for (int i = 0; i < count; ++i) {
        const std::string key = string_key(i);
        const auto* e = reg.find(key, hash(key));
        if (e == nullptr || e != addresses[static_cast<std::size_t>(i)] || e->key != key) ++wrong;
    }
    CHECK(wrong == 0);
    CHECK(reg.find("module.", hash("module.")) == nullptr);
    std::size_t visited = 0;
    reg.for_each([&](const auto&) { ++visited; });
    CHECK(visited == static_cast<std::size_t>(count));
}

TEST_CASE("registry: keys whose hashes collide", "[registry]") {
    constexpr int count = 3000;  // every lookup probes a run of up to `count` entries
    registry_of<std::string, constant_hash> reg;
    const constant_hash hash;
    std::vector<const void*> addresses;
    for (int i = 0; i < count; ++i) {
        const std::string key = string_key(i);
        REQUIRE(reg.find(key, hash(key)) == nullptr);
        addresses.push_back(&reg.find_or_insert(key, hash(key)));
    }
    CHECK(reg.entry_count() == static_cast<std::size_t>(count));
    std::size_t wrong = 0;
    for (int i = 0; i < count; ++i) {
        const std::string key = string_key(i);
        const auto* e = reg.find(key, hash(key));
        if (e == nullptr || e != addresses[static_cast<std::size_t>(i)] || e->key != key ||
            e->hash != 42)
            ++wrong;
    }
    CHECK(wrong == 0);
    CHECK(reg.find("absent", hash("absent")) == nullptr);
    CHECK(&reg.find_or_insert(string_key(1234), 42) == addresses[1234]);
    CHECK(reg.entry_count() == static_cast<std::size_t>(count));
}

TEST_CASE("registry: readers find every published key while a writer inserts",
          "[registry][threads]") {
    importlock_test::watchdog dog("registry readers beside a writer");
    constexpr int count = 20000;
    constexpr int reader_count = 2;
    registry_of<std::string> reg;
    const std::hash<std::string> hash;

    // Built before the threads start; the writer fills `entries` and then publishes the
    // count with release, so a reader that acquires the count sees the entries.
    std::vector<std::string> keys;
    for (int i = 0; i < count; ++i) keys.push_back(string_key(i));
    std::vector<const void*> entries(count, nullptr);
    std::atomic<int> published{0};
    std::atomic<int> readers_started{0};

    struct reader_result {
        std::size_t lookups = 0;
        std::size_t concurrent_lookups = 0;  // made while the writer was still inserting
        std::size_t missing = 0;
        std::size_t wrong = 0;
        std::size_t phantom = 0;
        int first_bad = -1;
    };
    std::vector<reader_result> results(reader_count);

    const auto read = [&](reader_result& r) {
        readers_started.fetch_add(1);
        std::size_t cursor = 0;
        const auto check = [&](int i) {
            const std::string& key = keys[static_cast<std::size_t>(i)];
            const auto* e = reg.find(key, hash(key));
            ++r.lookups;
            if (e == nullptr) {
                ++r.missing;
            } else if (e != entries[static_cast<std::size_t>(i)] || e->key != key) {
                ++r.wrong;
            } else {
                return;
            }
            if (r.first_bad < 0) r.first_bad = i;
        };
        while (true) {
            const int n = published.load(std::memory_order_acquire);
            if (n == count) break;
            if (n == 0) continue;
            // The newest key, one older key in turn, and a key never inserted.
            check(n - 1);
            check(static_cast<int>(cursor++ % static_cast<std::size_t>(n)));
            if (reg.find("never." + std::to_string(cursor), 0) != nullptr) ++r.phantom;
            r.concurrent_lookups += 2;
        }
        for (int i = 0; i < count; ++i) check(i);
    };

    std::vector<std::thread> readers;
    for (auto& r : results) readers.emplace_back(read, std::ref(r));
    // The writer: the only thread that calls find_or_insert (it is its own writer lock).
    std::thread writer([&] {
        while (readers_started.load() != reader_count) std::this_thread::yield();
        for (int i = 0; i < count; ++i) {
            const std::string& key = keys[static_cast<std::size_t>(i)];
            entries[static_cast<std::size_t>(i)] = &reg.find_or_insert(key, hash(key));
            published.store(i + 1, std::memory_order_release);
        }
    });
    writer.join();
    for (auto& t : readers) t.join();

    CHECK(reg.entry_count() == static_cast<std::size_t>(count));
    std::size_t concurrent = 0;
    for (const auto& r : results) {
        INFO("first bad key index " << r.first_bad);
        CHECK(r.missing == 0);
        CHECK(r.wrong == 0);
        CHECK(r.phantom == 0);
        CHECK(r.lookups >= static_cast<std::size_t>(count));
        concurrent += r.concurrent_lookups;
    }
    // How much the readers overlapped the writer is the scheduler's choice, not a result;
    // -s shows it.
    SUCCEED("lookups made while the writer inserted: " << concurrent);
}

namespace {

// Per-entry data whose construction throws when `fail_at` reaches 0, and
// which counts the entries alive.
struct counted_extra {
    static inline int fail_at = -1;
    static inline int alive = 0;
    template <class Entry>
    explicit counted_extra(Entry&) {
        if (fail_at >= 0 && fail_at-- == 0) throw std::runtime_error("extra");
        ++alive;
    }
    counted_extra(const counted_extra&) = delete;
    ~counted_extra() { --alive; }
};

using counted_registry = importlock::detail::registry<
    importlock::detail::registry_entry<int, int, importlock::detail::spin_lock, counted_extra>,
    std::hash<int>, std::equal_to<int>>;

}  // namespace

TEST_CASE("registry: entries live in chunks, visited in insertion order, destroyed once",
          "[registry]") {
    counted_extra::alive = 0;
    {
        counted_registry reg;
        const std::hash<int> hash;
        // 4 + 8 + 16 + ...: the inserts cross several chunk boundaries.
        for (int i = 0; i < 100; ++i) reg.find_or_insert(i, hash(i));
        std::vector<int> order;
        reg.for_each([&](const auto& e) { order.push_back(e.key); });
        std::vector<int> expected(100);
        for (int i = 0; i < 100; ++i) expected[static_cast<std::size_t>(i)] = i;
        CHECK(order == expected);
        CHECK(counted_extra::alive == 100);
    }
    CHECK(counted_extra::alive == 0);  // every entry destroyed with the registry
}

TEST_CASE("registry: an entry whose construction throws leaves nothing behind", "[registry]") {
    counted_extra::alive = 0;
    {
        counted_registry reg;
        const std::hash<int> hash;
        for (int i = 0; i < 4; ++i) reg.find_or_insert(i, hash(i));  // the first chunk is full
        counted_extra::fail_at = 0;  // the next entry, the first of a new chunk, throws
        CHECK_THROWS_AS(reg.find_or_insert(4, hash(4)), std::runtime_error);
        CHECK(reg.entry_count() == 4);
        CHECK(reg.find(4, hash(4)) == nullptr);
        std::size_t visited = 0;
        reg.for_each([&](const auto&) { ++visited; });
        CHECK(visited == 4);
        counted_extra::fail_at = -1;
        CHECK(reg.find_or_insert(4, hash(4)).key == 4);  // the kept chunk takes it
        CHECK(reg.entry_count() == 5);
        CHECK(counted_extra::alive == 5);
    }
    CHECK(counted_extra::alive == 0);
}

// --- Removal, tombstones, shrinking and garbage ------------------------------------------

namespace {

// Per-entry data that counts the entries alive (atomically: entries are destroyed by the
// thread that destroys a garbage object) and marks a destroyed one.
struct tracked_extra {
    static constexpr std::uint32_t live = 0x11FE11FEu;
    static inline std::atomic<int> alive{0};
    std::atomic<std::uint32_t> canary{live};
    template <class Entry>
    explicit tracked_extra(Entry&) noexcept {
        alive.fetch_add(1);
    }
    tracked_extra(const tracked_extra&) = delete;
    ~tracked_extra() {
        canary.store(0xDEADDEADu, std::memory_order_relaxed);
        alive.fetch_sub(1);
    }
};

template <class Key, class Hash = std::hash<Key>>
using tracked_registry = importlock::detail::registry<
    importlock::detail::registry_entry<Key, int, importlock::detail::spin_lock, tracked_extra>,
    Hash, std::equal_to<Key>>;

template <class Registry>
std::vector<typename Registry::key_type> keys_in_order(Registry& reg) {
    std::vector<typename Registry::key_type> out;
    reg.for_each([&](const auto& e) { out.push_back(e.key); });
    return out;
}

// Frees what the registry's removals and rebuilds left (no other thread reads here).
template <class Registry>
void free_garbage(Registry& reg) {
    typename Registry::garbage g;
    reg.take_garbage(g, []() noexcept {});
}

// The bound the header promises once the garbage is freed.
std::size_t capacity_bound(std::size_t entries) {
    return std::max<std::size_t>(16, 8 * entries);
}

}  // namespace

TEST_CASE("registry: remove hides the entry from find and for_each; re-inserting makes a new one",
          "[registry]") {
    registry_of<std::string> reg;
    const std::hash<std::string> hash;
    for (const char* k : {"a", "b", "c", "d", "e"}) reg.find_or_insert(k, hash(k));
    REQUIRE(reg.entry_count() == 5);

    auto* c = reg.find("c", hash("c"));
    REQUIRE(c != nullptr);
    reg.remove(*c);
    CHECK(reg.find("c", hash("c")) == nullptr);
    CHECK(reg.entry_count() == 4);
    CHECK(keys_in_order(reg) == std::vector<std::string>{"a", "b", "d", "e"});
    CHECK(reg.find("b", hash("b"))->key == "b");
    CHECK(reg.find("d", hash("d"))->key == "d");

    // The first and the last of the insertion order.
    reg.remove(*reg.find("a", hash("a")));
    reg.remove(*reg.find("e", hash("e")));
    CHECK(reg.entry_count() == 2);
    CHECK(keys_in_order(reg) == std::vector<std::string>{"b", "d"});

    // The old entry is still in the garbage (not freed): the new one is a new allocation.
    auto& c2 = reg.find_or_insert("c", hash("c"));
    CHECK(&c2 != c);
    CHECK(c2.key == "c");
    CHECK(c2.current_state() == entry_state::absent);
    CHECK(reg.find("c", hash("c")) == &c2);
    CHECK(reg.entry_count() == 3);
    CHECK(keys_in_order(reg) == std::vector<std::string>{"b", "d", "c"});  // at the end

    // Down to none, and up again.
    for (const char* k : {"b", "d", "c"}) reg.remove(*reg.find(k, hash(k)));
    CHECK(reg.entry_count() == 0);
    CHECK(keys_in_order(reg).empty());
    for (const char* k : {"a", "b", "c", "d", "e"}) CHECK(reg.find(k, hash(k)) == nullptr);
    reg.find_or_insert("z", hash("z"));
    CHECK(keys_in_order(reg) == std::vector<std::string>{"z"});
    free_garbage(reg);
}

TEST_CASE("registry: removals among colliding hashes leave tombstones that lookups probe past",
          "[registry]") {
    registry_of<std::string, constant_hash> reg;
    const constant_hash hash;
    std::set<std::string> model;
    std::mt19937 random(12345);  // a fixed sequence: the test is deterministic
    constexpr int key_space = 300;
    constexpr int operations = 6000;
    std::size_t wrong = 0;
    for (int op = 0; op < operations; ++op) {
        const std::string key = string_key(static_cast<int>(random() % key_space));
        if (model.count(key) != 0 && random() % 3 != 0) {
            auto* e = reg.find(key, hash(key));
            REQUIRE(e != nullptr);
            reg.remove(*e);
            model.erase(key);
        } else {
            auto& e = reg.find_or_insert(key, hash(key));
            if (e.key != key) ++wrong;
            model.insert(key);
        }
        if (op % 500 == 0) free_garbage(reg);
    }
    CHECK(wrong == 0);
    REQUIRE(reg.entry_count() == model.size());
    std::size_t missing = 0;
    std::size_t phantom = 0;
    for (int i = 0; i < key_space; ++i) {
        const std::string key = string_key(i);
        const auto* e = reg.find(key, hash(key));
        if (model.count(key) != 0) {
            if (e == nullptr || e->key != key) ++missing;
        } else if (e != nullptr) {
            ++phantom;
        }
    }
    CHECK(missing == 0);
    CHECK(phantom == 0);
    // Every remaining entry exactly once in for_each, no duplicates from a re-insert that
    // missed an entry behind a tombstone.
    const auto visited = keys_in_order(reg);
    CHECK(visited.size() == model.size());
    CHECK(std::set<std::string>(visited.begin(), visited.end()) == model);

    // Remove every other key of one long collision run, then look up the others (each
    // behind up to a hundred tombstones) and insert the removed ones again.
    registry_of<std::string, constant_hash> run;
    for (int i = 0; i < 200; ++i) run.find_or_insert(string_key(i), 42);
    for (int i = 0; i < 200; i += 2) run.remove(*run.find(string_key(i), 42));
    std::size_t run_wrong = 0;
    for (int i = 0; i < 200; ++i) {
        const auto* e = run.find(string_key(i), 42);
        if ((i % 2 == 0) != (e == nullptr)) ++run_wrong;
    }
    CHECK(run_wrong == 0);
    for (int i = 0; i < 200; i += 2) run.find_or_insert(string_key(i), 42);
    CHECK(run.entry_count() == 200);
    for (int i = 0; i < 200; ++i) {
        const auto* e = run.find(string_key(i), 42);
        if (e == nullptr || e->key != string_key(i)) ++run_wrong;
    }
    CHECK(run_wrong == 0);
    CHECK(keys_in_order(run).size() == 200);
}

TEST_CASE("registry: inserts after removals reuse tombstones; the table does not grow",
          "[registry]") {
    const std::hash<int> hash;
    {
        // One key at a time, 10,000 different keys: the table stays at its initial size.
        registry_of<int> reg;
        const std::size_t initial = reg.capacity();
        CHECK(initial == 16);
        std::size_t grew = 0;
        for (int i = 0; i < 10000; ++i) {
            auto& e = reg.find_or_insert(i, hash(i));
            if (reg.capacity() != initial) ++grew;
            reg.remove(e);
            if (reg.capacity() != initial) ++grew;
            if (i % 1000 == 999) free_garbage(reg);
        }
        CHECK(grew == 0);
        CHECK(reg.entry_count() == 0);
        CHECK(reg.find(9999, hash(9999)) == nullptr);
    }
    {
        // Beside 100 resident keys: the table may grow once (a rebuild makes it at most a
        // quarter full), and then stays as it is.
        registry_of<int> reg;
        for (int i = 0; i < 100; ++i) reg.find_or_insert(i, hash(i));
        std::size_t after_warm_up = 0;
        std::size_t changed_later = 0;
        std::size_t over_bound = 0;
        for (int i = 0; i < 10000; ++i) {
            const int key = 1000 + i;
            reg.remove(reg.find_or_insert(key, hash(key)));
            if (reg.capacity() > capacity_bound(reg.entry_count())) ++over_bound;
            if (i == 999) after_warm_up = reg.capacity();
            if (i > 999 && reg.capacity() != after_warm_up) ++changed_later;
            if (i % 1000 == 999) free_garbage(reg);
        }
        CHECK(over_bound == 0);
        CHECK(changed_later == 0);
        CHECK(after_warm_up <= 512);
        std::size_t missing = 0;
        for (int i = 0; i < 100; ++i)
            if (reg.find(i, hash(i)) == nullptr) ++missing;
        CHECK(missing == 0);
    }
}

TEST_CASE(
    "registry: scalar keys under std::hash keep no hash; growth, removal and shrinking "
    "recompute it",
    "[registry]") {
    using importlock::detail::stores_hash;
    static_assert(!stores_hash<int, std::hash<int>, std::equal_to<int>>);
    static_assert(!stores_hash<const void*, std::hash<const void*>, std::equal_to<>>);
    static_assert(stores_hash<std::string, std::hash<std::string>, std::equal_to<std::string>>);
    static_assert(stores_hash<int, std::hash<int>, std::greater<int>>);  // not compared directly
    struct odd_hash {
        std::size_t operator()(int) const noexcept { return 1; }
    };
    static_assert(stores_hash<int, odd_hash, std::equal_to<int>>);

    using bare_entry = importlock::detail::registry_entry<int, int, importlock::detail::spin_lock,
                                                          no_extra, false>;
    static_assert(sizeof(bare_entry) + sizeof(std::size_t) == sizeof(entry_of<int>));
    importlock::detail::registry<bare_entry, std::hash<int>, std::equal_to<int>> reg;
    const std::hash<int> hash;
    std::set<int> model;
    std::mt19937 random(11);
    std::size_t mismatches = 0;
    // Inserts to 4000 keys (the table grows), removes most (it shrinks), re-inserts.
    for (int step = 0; step < 12000; ++step) {
        const int key = static_cast<int>(random() % 5000);
        const bool removing = step >= 4000 && step < 9000;
        if (removing) {
            if (auto* e = reg.find(key, hash(key))) reg.remove(*e);
            model.erase(key);
        } else {
            reg.find_or_insert(key, hash(key));
            model.insert(key);
        }
        if (step % 1000 == 999) {
            for (int k = 0; k < 5000; ++k) {
                if ((reg.find(k, hash(k)) != nullptr) != (model.count(k) != 0)) ++mismatches;
            }
            free_garbage(reg);
        }
    }
    CHECK(mismatches == 0);
    CHECK(reg.entry_count() == model.size());
    CHECK(reg.capacity() <= capacity_bound(reg.entry_count()));
}

TEST_CASE("registry: over-aligned keys get aligned entries; their links follow them",
          "[registry]") {
    struct alignas(64) wide_key {
        int value = 0;
        bool operator==(const wide_key&) const = default;
    };
    struct wide_hash {
        std::size_t operator()(const wide_key& k) const noexcept {
            return std::hash<int>{}(k.value);
        }
    };
    using wide_entry =
        importlock::detail::registry_entry<wide_key, int, importlock::detail::spin_lock, no_extra>;
    static_assert(alignof(wide_entry) == 64);
    importlock::detail::registry<wide_entry, wide_hash, std::equal_to<wide_key>> reg;
    const wide_hash hash;
    std::size_t misaligned = 0;
    for (int i = 0; i < 300; ++i) {
        const wide_key k{i};
        auto& e = reg.find_or_insert(k, hash(k));
        if (reinterpret_cast<std::uintptr_t>(&e) % 64 != 0) ++misaligned;
    }
    CHECK(misaligned == 0);
    for (int i = 0; i < 300; i += 2) reg.remove(*reg.find(wide_key{i}, hash(wide_key{i})));
    free_garbage(reg);
    std::size_t wrong = 0;
    for (int i = 0; i < 300; ++i) {
        const auto* e = reg.find(wide_key{i}, hash(wide_key{i}));
        if ((e != nullptr) != (i % 2 == 1) || (e != nullptr && e->key.value != i)) ++wrong;
    }
    CHECK(wrong == 0);
    CHECK(reg.entry_count() == 150);
    std::vector<int> order;
    reg.for_each([&](const wide_entry& e) { order.push_back(e.key.value); });
    CHECK(order.size() == 150);
    CHECK(std::is_sorted(order.begin(), order.end()));  // insertion order
}

TEST_CASE("registry: mass removal shrinks the table to max(16, 8 x entries) or less",
          "[registry]") {
    const std::hash<int> hash;
    registry_of<int> reg;
    for (int i = 0; i < 10000; ++i) reg.find_or_insert(i, hash(i));
    // Grown to at most half full: 2 x 10,000 <= capacity, the next power of two.
    CHECK(reg.capacity() == 32768);

    std::size_t over_bound = 0;
    for (int i = 0; i < 10000; ++i) {
        if (i % 1000 == 0) continue;  // keep 0, 1000, ..., 9000
        reg.remove(*reg.find(i, hash(i)));
        if (reg.capacity() > capacity_bound(reg.entry_count())) ++over_bound;
    }
    CHECK(over_bound == 0);  // the bound holds after every removal
    REQUIRE(reg.entry_count() == 10);
    // Shrinks happen when 8 x count < capacity, to max(16, bit_ceil(4 x count)): the last
    // one at 15 entries (8 x 15 < 128) to bit_ceil(60) = 64; the next would be at 7.
    CHECK(reg.capacity() == 64);
    CHECK(reg.capacity() <= 128);
    std::size_t missing = 0;
    for (int i = 0; i < 10000; i += 1000) {
        const auto* e = reg.find(i, hash(i));
        if (e == nullptr || e->key != i) ++missing;
    }
    CHECK(missing == 0);
    CHECK(keys_in_order(reg) ==
          std::vector<int>{0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000});
    free_garbage(reg);

    for (int i = 0; i < 10000; i += 1000) reg.remove(*reg.find(i, hash(i)));
    CHECK(reg.entry_count() == 0);
    CHECK(reg.capacity() == 16);
    reg.find_or_insert(5, hash(5));
    CHECK(reg.find(5, hash(5)) != nullptr);
}

TEST_CASE("registry: remove_if removes exactly the matching entries", "[registry]") {
    const std::hash<int> hash;
    tracked_registry<int> reg;
    for (int i = 0; i < 100; ++i) reg.find_or_insert(i, hash(i));
    reg.remove_if([](const auto& e) { return e.key % 3 == 0; });
    CHECK(reg.entry_count() == 66);
    std::vector<int> expected;
    for (int i = 0; i < 100; ++i) {
        if (i % 3 != 0) expected.push_back(i);
    }
    CHECK(keys_in_order(reg) == expected);
    std::size_t wrong = 0;
    for (int i = 0; i < 100; ++i) {
        if ((reg.find(i, hash(i)) == nullptr) != (i % 3 == 0)) ++wrong;
    }
    CHECK(wrong == 0);

    free_garbage(reg);
    CHECK_FALSE(reg.has_garbage());
    reg.remove_if([](const auto&) { return false; });
    CHECK(reg.entry_count() == 66);
    CHECK_FALSE(reg.has_garbage());  // nothing removed, nothing rebuilt

    // Everything: one rebuild, to the smallest table.
    for (int i = 0; i < 10000; ++i) reg.find_or_insert(1000 + i, hash(1000 + i));
    free_garbage(reg);
    reg.remove_if([](const auto&) { return true; });
    CHECK(reg.entry_count() == 0);
    CHECK(keys_in_order(reg).empty());
    CHECK(reg.capacity() == 16);
    CHECK(reg.garbage_table_bytes() == 32768 * sizeof(void*));  // the one table it replaced
    CHECK(reg.find(1, hash(1)) == nullptr);
    CHECK(reg.find(5000, hash(5000)) == nullptr);
    free_garbage(reg);
    CHECK(tracked_extra::alive.load() == 0);

    // All but a few: one rebuild to max(16, bit_ceil(4 x kept)); the kept entries stay
    // findable and in order, and inserts work on the new table.
    for (int i = 0; i < 10000; ++i) reg.find_or_insert(i, hash(i));
    free_garbage(reg);
    reg.remove_if([](const auto& e) { return e.key % 1000 != 0; });
    CHECK(reg.entry_count() == 10);
    CHECK(reg.capacity() == 64);
    CHECK(reg.garbage_table_bytes() == 32768 * sizeof(void*));
    CHECK(keys_in_order(reg) ==
          std::vector<int>{0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000});
    std::size_t lost = 0;
    for (int i = 0; i < 10000; ++i) {
        if ((reg.find(i, hash(i)) != nullptr) != (i % 1000 == 0)) ++lost;
    }
    CHECK(lost == 0);
    reg.find_or_insert(1, hash(1));
    CHECK(reg.find(1, hash(1)) != nullptr);
    reg.remove_if([](const auto&) { return true; });
    free_garbage(reg);
    CHECK(tracked_extra::alive.load() == 0);
}

TEST_CASE("registry: garbage holds removed entries until the garbage object is destroyed",
          "[registry]") {
    using registry_type = tracked_registry<int>;
    const std::hash<int> hash;
    REQUIRE(tracked_extra::alive.load() == 0);
    {
        registry_type reg;
        CHECK_FALSE(reg.has_garbage());
        for (int i = 0; i < 100; ++i) reg.find_or_insert(i, hash(i));
        CHECK(reg.has_garbage());  // the tables growth replaced
        {
            registry_type::garbage g;
            CHECK(g.empty());
            reg.take_garbage(g, []() noexcept {});
            CHECK_FALSE(g.empty());
            CHECK_FALSE(reg.has_garbage());
        }
        CHECK(tracked_extra::alive.load() == 100);  // tables only: no entry freed

        for (int i = 0; i < 30; ++i) reg.remove(*reg.find(i, hash(i)));
        CHECK(reg.has_garbage());
        CHECK(tracked_extra::alive.load() == 100);  // removed, not destroyed
        {
            registry_type::garbage g;
            reg.take_garbage(g, []() noexcept {});
            CHECK_FALSE(reg.has_garbage());
            CHECK(tracked_extra::alive.load() == 100);  // moved, still not destroyed
            // A second take into the same object adds to it.
            for (int i = 30; i < 40; ++i) reg.remove(*reg.find(i, hash(i)));
            reg.take_garbage(g, []() noexcept {});
            CHECK_FALSE(reg.has_garbage());
            CHECK(tracked_extra::alive.load() == 100);
        }
        CHECK(tracked_extra::alive.load() == 60);  // destroyed with the garbage
        CHECK(reg.entry_count() == 60);
        std::size_t missing = 0;
        for (int i = 40; i < 100; ++i)
            if (reg.find(i, hash(i)) == nullptr) ++missing;
        CHECK(missing == 0);

        // Garbage left in the registry is freed with it.
        for (int i = 40; i < 50; ++i) reg.remove(*reg.find(i, hash(i)));
        CHECK(reg.has_garbage());
    }
    CHECK(tracked_extra::alive.load() == 0);
}

namespace {

// The on_wait given to take_garbage: a plain function, so the latch is a static.
std::latch* garbage_waiting = nullptr;
std::atomic<int> garbage_waits{0};
void count_garbage_wait() noexcept {
    if (garbage_waits.fetch_add(1) == 0) garbage_waiting->count_down();
}

}  // namespace

TEST_CASE("registry: a garbage object waits for a reader still in its read section",
          "[registry][threads]") {
    watchdog dog("garbage waits for readers");
    using registry_type = tracked_registry<std::string>;
    const std::hash<std::string> hash;
    REQUIRE(tracked_extra::alive.load() == 0);
    registry_type reg;
    std::mutex writer_lock;
    const std::string key = "module.that.is.read.while.it.is.removed";
    {
        std::lock_guard lock(writer_lock);
        reg.find_or_insert(key, hash(key));
        reg.find_or_insert("other", hash("other"));
        free_garbage(reg);
    }

    // The reader finds the entry in its section and keeps reading it until told to leave.
    std::latch found(1);
    std::binary_semaphore may_leave(0);
    bool key_read_after_removal = false;
    std::thread reader([&] {
        importlock::detail::in_read_section([&] {
            const auto* e = reg.find(key, hash(key));
            found.count_down();
            may_leave.acquire();
            key_read_after_removal =
                e != nullptr && e->key == key && e->extra.canary.load() == tracked_extra::live;
            return 0;
        });
    });
    found.wait();

    std::latch waiting(1);
    garbage_waiting = &waiting;
    garbage_waits.store(0);
    std::latch taken(1);
    std::atomic<bool> freed{false};
    std::thread freer([&] {
        {
            registry_type::garbage g;  // declared before the lock: destroyed after it
            {
                std::lock_guard lock(writer_lock);
                reg.remove(*reg.find(key, hash(key)));
                reg.take_garbage(g, count_garbage_wait);
            }
            taken.count_down();
        }  // g's destructor: a grace period, then the entry is freed
        freed.store(true);
        if (garbage_waits.load() == 0) waiting.count_down();  // a bug: fail, do not hang
    });
    taken.wait();
    waiting.wait();  // the destructor polled the reader's odd counter and is waiting
    CHECK_FALSE(freed.load());
    CHECK(tracked_extra::alive.load() == 2);  // the removed entry is not freed yet
    {
        std::lock_guard lock(writer_lock);
        CHECK(reg.find(key, hash(key)) == nullptr);  // but no new lookup finds it
        CHECK(reg.entry_count() == 1);
    }
    may_leave.release();
    reader.join();
    freer.join();
    CHECK(key_read_after_removal);  // the reader read a live entry to the end
    CHECK(tracked_extra::alive.load() == 1);
    CHECK(garbage_waits.load() >= 1);
    garbage_waiting = nullptr;
}

TEST_CASE("registry: lock-free readers beside a writer that removes and frees (stress)",
          "[registry][threads]") {
    watchdog dog("registry readers beside removals and frees", std::chrono::seconds(240));
    using registry_type = tracked_registry<std::string>;
    const std::hash<std::string> hash;
    REQUIRE(tracked_extra::alive.load() == 0);
    constexpr int key_count = 200;     // grows the table to 512 and shrinks it to 16
    constexpr int writer_rounds = 60;  // each: fill, toggle at random, empty
    constexpr int reader_count = 2;
    constexpr int min_reader_lookups = 20000;

    // Long keys: comparing one reads its heap buffer, which ASan watches.
    std::vector<std::string> keys;
    std::vector<std::size_t> hashes;
    for (int i = 0; i < key_count; ++i) {
        keys.push_back("importlock.stress.module.with.a.long.name." + std::to_string(i));
        hashes.push_back(hash(keys.back()));
    }

    registry_type reg;
    std::mutex writer_lock;  // the owner's writer lock
    std::atomic<bool> writer_done{false};
    std::latch start(reader_count + 1);

    struct reader_result {
        std::size_t lookups = 0;
        std::size_t hits = 0;
        std::size_t wrong = 0;  // a found entry with another key or hash, or destroyed
    };
    std::vector<reader_result> results(reader_count);
    const auto read = [&](reader_result& r, unsigned seed) {
        std::mt19937 random(seed);
        start.arrive_and_wait();
        while (!writer_done.load(std::memory_order_acquire) ||
               r.lookups < static_cast<std::size_t>(min_reader_lookups)) {
            const std::size_t k = random() % key_count;
            const bool ok = importlock::detail::in_read_section([&] {
                const auto* e = reg.find(keys[k], hashes[k]);
                if (e == nullptr) return true;
                ++r.hits;
                return e->hash == hashes[k] && e->key == keys[k] &&
                       e->extra.canary.load(std::memory_order_relaxed) == tracked_extra::live;
            });
            ++r.lookups;
            if (!ok) ++r.wrong;
        }
    };
    std::vector<std::thread> readers;
    for (int i = 0; i < reader_count; ++i) {
        readers.emplace_back(read, std::ref(results[static_cast<std::size_t>(i)]),
                             static_cast<unsigned>(i + 1));
    }

    std::size_t writer_wrong = 0;
    std::size_t frees = 0;
    std::thread writer([&] {
        std::mt19937 random(99);
        start.arrive_and_wait();
        const auto free_now = [&] {
            registry_type::garbage g;  // destroyed after the lock: a grace period
            std::lock_guard lock(writer_lock);
            reg.take_garbage(g, []() noexcept {});
            ++frees;
        };
        for (int round = 0; round < writer_rounds; ++round) {
            for (int k = 0; k < key_count; ++k) {
                std::lock_guard lock(writer_lock);
                reg.find_or_insert(keys[static_cast<std::size_t>(k)],
                                   hashes[static_cast<std::size_t>(k)]);
            }
            free_now();
            for (int step = 0; step < 4 * key_count; ++step) {
                const std::size_t k = random() % key_count;
                {
                    std::lock_guard lock(writer_lock);
                    if (auto* e = reg.find(keys[k], hashes[k])) {
                        reg.remove(*e);
                    } else {
                        auto& inserted = reg.find_or_insert(keys[k], hashes[k]);
                        if (inserted.key != keys[k]) ++writer_wrong;
                    }
                }
                if (step % 64 == 0) free_now();
            }
            {
                std::lock_guard lock(writer_lock);
                reg.remove_if([](const auto&) { return true; });
                if (reg.entry_count() != 0 || reg.capacity() != 16) ++writer_wrong;
            }
            free_now();
        }
        writer_done.store(true, std::memory_order_release);
    });
    writer.join();
    for (auto& t : readers) t.join();

    CHECK(writer_wrong == 0);
    std::size_t lookups = 0;
    std::size_t hits = 0;
    for (const auto& r : results) {
        CHECK(r.wrong == 0);
        CHECK(r.lookups >= static_cast<std::size_t>(min_reader_lookups));
        lookups += r.lookups;
        hits += r.hits;
    }
    {
        std::lock_guard lock(writer_lock);
        CHECK(reg.entry_count() == 0);
        CHECK_FALSE(reg.has_garbage());
    }
    CHECK(tracked_extra::alive.load() == 0);  // every removed entry freed
    // How much the readers overlapped the writer is the scheduler's choice, not a result.
    SUCCEED("lookups " << lookups << ", hits " << hits << ", garbage freed " << frees << " times");
}

TEST_CASE("registry: tables that growth replaced wait, up to a bound, while another thread reads",
          "[registry][threads]") {
    watchdog dog("deferred tables");
    using registry_type = tracked_registry<int>;
    using importlock::detail::other_readers_now;
    const std::hash<int> hash;
    constexpr std::size_t limit = registry_type::deferred_table_bytes;
    const auto take_due = [](registry_type& reg) {
        registry_type::garbage g;
        reg.take_due_garbage(g, []() noexcept {});
        return !g.empty();
    };
    REQUIRE(tracked_extra::alive.load() == 0);
    {
        // No other thread reads: garbage is always taken (its grace period is a fence).
        registry_type reg;
        for (int i = 0; i < 100; ++i) reg.find_or_insert(i, hash(i));
        REQUIRE(reg.has_garbage());
        REQUIRE_FALSE(other_readers_now());
        CHECK(take_due(reg));
        CHECK_FALSE(reg.has_garbage());
        CHECK(reg.garbage_table_bytes() == 0);
    }

    // Another thread owns a reader record (it read once) and waits.
    std::latch has_read(1);
    std::binary_semaphore may_end(0);
    std::thread reader([&] {
        importlock::detail::in_read_section([] { return 0; });
        has_read.count_down();
        may_end.acquire();
    });
    has_read.wait();
    REQUIRE(other_readers_now());
    {
        registry_type reg;
        // Growth to 2048 slots replaces 16 + 32 + ... + 1024 slots: kept, within the bound.
        for (int i = 0; i < 1000; ++i) reg.find_or_insert(i, hash(i));
        REQUIRE(reg.capacity() == 2048);
        CHECK(reg.garbage_table_bytes() == (2048 - 16) * sizeof(void*));
        CHECK(reg.garbage_table_bytes() <= limit);
        CHECK_FALSE(take_due(reg));
        CHECK(reg.has_garbage());

        // The next growth, to 4096 slots, still fits (16 + ... + 2048 slots).
        int next = 1000;
        const auto grow = [&] {
            const std::size_t before = reg.capacity();
            while (reg.capacity() == before) {
                reg.find_or_insert(next, hash(next));
                ++next;
            }
        };
        grow();
        CHECK(reg.capacity() == 4096);
        CHECK(reg.garbage_table_bytes() == (4096 - 16) * sizeof(void*));
        CHECK_FALSE(take_due(reg));

        // A removal: the entry must be freed, and the kept tables go with it.
        reg.remove(*reg.find(0, hash(0)));
        CHECK(take_due(reg));
        CHECK_FALSE(reg.has_garbage());
        CHECK(reg.garbage_table_bytes() == 0);

        // A growth that replaces 4096 slots fits; the next one, 8192 more, does not.
        grow();
        CHECK(reg.garbage_table_bytes() == 4096 * sizeof(void*));
        CHECK_FALSE(take_due(reg));
        grow();
        CHECK(reg.garbage_table_bytes() == (4096 + 8192) * sizeof(void*));
        CHECK(take_due(reg));
        CHECK_FALSE(reg.has_garbage());
        CHECK(tracked_extra::alive.load() == next - 1);
    }
    CHECK(tracked_extra::alive.load() == 0);
    {
        // Kept tables are freed with the registry (no reader outlives it): ASan checks.
        registry_type reg;
        for (int i = 0; i < 100; ++i) reg.find_or_insert(i, hash(i));
        CHECK_FALSE(take_due(reg));
        CHECK(reg.has_garbage());
    }
    may_end.release();
    reader.join();

    {
        // Once the reader's record was released at its exit, small tables are taken again.
        registry_type reg;
        for (int i = 0; i < 100; ++i) reg.find_or_insert(i, hash(i));
        CHECK_FALSE(other_readers_now());
        CHECK(take_due(reg));
    }
}
