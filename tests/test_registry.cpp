// SPDX-License-Identifier: BSL-1.0
// Unit tests of importlock::detail::registry: lookups, growth, entry stability, colliding
// hashes, and lock-free readers running beside a writer.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/watchdog.hpp"

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using importlock::detail::entry_state;

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
