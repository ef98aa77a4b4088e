// SPDX-License-Identifier: BSL-1.0
// Extension points: finder policies, single-phase modules, failure sharing,
// key traits for paths and name sequences, module handles.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/watchdog.hpp"

#include <array>
#include <atomic>
#include <barrier>
#include <condition_variable>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using importlock_test::await;
using importlock_test::watchdog;

struct mod {
    int value = 0;
    std::vector<std::string> children;
};

using spec = importlock::module_spec<int, mod>;
using string_spec = importlock::module_spec<std::string, mod>;

spec value_spec(int value) {
    spec s;
    s.loader = [value](mod& m, importlock::importer<int, mod>&) { m.value = value; };
    return s;
}

struct not_default_constructible {
    explicit not_default_constructible(int v) : value(v) {}
    int value;
};

}  // namespace

// Records children bound to parents, for the key-traits tests.
template <>
struct importlock::module_traits<mod> {
    template <class Key>
    static void bind_child(mod& parent, const Key& child, const std::shared_ptr<mod>&) {
        parent.children.push_back(importlock::key_traits<Key>::to_string(child));
    }
};

TEST_CASE("function_finder computes specs from the key", "[finders]") {
    int calls = 0;
    importlock::function_finder<int, mod> finder([&calls](const int& key) -> std::optional<spec> {
        ++calls;
        if (key < 0) return std::nullopt;
        return value_spec(key * 2);
    });
    importlock::basic_import_system<int, mod, importlock::per_key_locks,
                                    importlock::function_finder<int, mod>>
        system(std::move(finder));
    REQUIRE(system.import_module(21)->value == 42);
    REQUIRE(system.import_module(21)->value == 42);
    REQUIRE(calls == 1);  // the hit does not ask the finder
    REQUIRE_THROWS_AS(system.import_module(-1), importlock::module_not_found_error);
    REQUIRE(calls == 2);

    importlock::basic_import_system<int, mod, importlock::per_key_locks,
                                    importlock::function_finder<int, mod>>
        empty;
    REQUIRE_THROWS_AS(empty.import_module(1), importlock::module_not_found_error);
}

TEST_CASE("finder_chain asks its finders in order", "[finders]") {
    using chain = importlock::finder_chain<int, mod, importlock::registry_finder<int, mod>,
                                           importlock::function_finder<int, mod>>;
    chain finders(importlock::registry_finder<int, mod>{},
                  importlock::function_finder<int, mod>([](const int& key) -> std::optional<spec> {
                      if (key >= 100) return std::nullopt;
                      return value_spec(key);
                  }));
    finders.get<0>().define(7, [](mod& m, auto&) { m.value = 700; });
    importlock::basic_import_system<int, mod, importlock::per_key_locks, chain> system(
        std::move(finders));
    REQUIRE(system.import_module(7)->value == 700);  // the registry wins
    REQUIRE(system.import_module(8)->value == 8);    // the function answers
    REQUIRE_THROWS_AS(system.import_module(100), importlock::module_not_found_error);
    REQUIRE(&system.finder().get<importlock::registry_finder<int, mod>>() ==
            &system.finder().get<0>());
}

TEST_CASE("meta_path_finder changes while imports run", "[finders]") {
    using meta = importlock::meta_path_finder<std::string, mod>;
    importlock::basic_import_system<std::string, mod, importlock::per_key_locks, meta> system;
    auto registry = std::make_shared<importlock::registry_finder<std::string, mod>>();
    registry->define("shared", [](mod& m, auto&) { m.value = 1; });
    const auto registry_id = system.finder().append(registry);
    const auto computed_id =
        system.finder().append([](const std::string& key) -> std::optional<string_spec> {
            if (key.rfind("auto_", 0) != 0) return std::nullopt;
            string_spec s;
            s.loader = [](mod& m, auto&) { m.value = 2; };
            return s;
        });
    REQUIRE(system.finder().size() == 2);
    REQUIRE(system.import_module("shared")->value == 1);
    REQUIRE(system.import_module("auto_x")->value == 2);

    registry->define("later", [](mod& m, auto&) { m.value = 3; });  // shared: still defining
    REQUIRE(system.import_module("later")->value == 3);

    SECTION("a prepended finder takes precedence") {
        system.finder().prepend([](const std::string& key) -> std::optional<string_spec> {
            string_spec s;
            s.loader = [](mod& m, auto&) { m.value = 9; };
            return key == "auto_y" ? std::optional<string_spec>(s) : std::nullopt;
        });
        REQUIRE(system.import_module("auto_y")->value == 9);
    }
    SECTION("a removed finder is no longer asked") {
        REQUIRE(system.finder().remove(computed_id));
        REQUIRE_FALSE(system.finder().remove(computed_id));
        REQUIRE_THROWS_AS(system.import_module("auto_z"), importlock::module_not_found_error);
        REQUIRE(system.import_module("auto_x")->value == 2);  // already loaded
    }
    SECTION("a finder may change the list from inside find_spec, in flight imports finish") {
        std::atomic<int> asked{0};
        system.finder().prepend([&](const std::string& key) -> std::optional<string_spec> {
            ++asked;
            if (key == "trigger") system.finder().remove(registry_id);
            return std::nullopt;
        });
        registry->define("trigger", [](mod& m, auto&) { m.value = 5; });
        // The snapshot taken when find_spec began still holds the registry.
        REQUIRE(system.import_module("trigger")->value == 5);
        REQUIRE_THROWS_AS(system.import_module("unseen"), importlock::module_not_found_error);
        REQUIRE(asked == 2);
    }
    SECTION("clear removes every finder") {
        system.finder().clear();
        REQUIRE(system.finder().size() == 0);
        REQUIRE_THROWS_AS(system.import_module("fresh"), importlock::module_not_found_error);
    }
    REQUIRE(system.lock_count() == 0);
}

TEST_CASE("meta_path_finder is safe to change from other threads during imports",
          "[finders][threaded]") {
    watchdog dog("meta path churn");
    using meta = importlock::meta_path_finder<int, mod>;
    importlock::basic_import_system<int, mod, importlock::per_key_locks, meta> system;
    system.finder().append([](const int& key) -> std::optional<spec> { return value_spec(key); });
    std::atomic<bool> stop{false};
    std::thread churn([&] {
        while (!stop) {
            const auto id = system.finder().prepend(
                [](const int&) -> std::optional<spec> { return std::nullopt; });
            system.finder().remove(id);
        }
    });
    std::vector<int> values;
    for (int key = 0; key < 500; ++key) values.push_back(system.import_module(key)->value);
    stop = true;
    churn.join();
    for (int key = 0; key < 500; ++key) REQUIRE(values[static_cast<std::size_t>(key)] == key);
    REQUIRE(system.lock_count() == 0);
}

TEST_CASE("registry_finder: define, redefine and undefine race with lookups on other threads",
          "[finders][threaded]") {
    // Two writers churn disjoint keys (even, odd) of one finder while two readers
    // look keys up and run the copies they got. A loader's captures are on the heap
    // (a shared_ptr and 64 bytes), so a copy made while a writer replaces or frees the
    // spec would touch freed memory (ASan) or race (TSan). Each found loader sets the
    // value its key was always defined with: a reader never sees another key's spec.
    watchdog dog("registry_finder churn");
    importlock::registry_finder<int, mod> finder;
    constexpr int keys = 64;
    constexpr int rounds = 20000;
    const auto loader_for = [](int key, int round) {
        auto weight = std::make_shared<int>(key * 7);
        std::array<unsigned char, 64> padding{};
        padding[0] = static_cast<unsigned char>(round);
        return [weight, padding](mod& m, importlock::importer<int, mod>&) {
            m.value = padding[63] == 0 ? *weight : -1;
        };
    };
    // The importer the loaders get (they import nothing).
    struct no_imports : importlock::importer<int, mod> {
        std::shared_ptr<mod> import_module(const int&) override { return {}; }
        mod& import_ref(const int&) override { throw std::logic_error("none"); }
        std::shared_ptr<mod> get(const int&) const override { return {}; }
    };
    std::barrier start(4);
    std::atomic<bool> stop{false};
    std::atomic<long> found{0};  // informational: how much the readers overlapped
    std::vector<std::thread> threads;
    for (int parity = 0; parity < 2; ++parity) {
        threads.emplace_back([&, parity] {
            start.arrive_and_wait();
            for (int round = 0; round < rounds; ++round) {
                const int key = parity + 2 * (round % (keys / 2));
                if (round % 3 == 2) {
                    finder.undefine(key);
                } else {
                    finder.define(key, loader_for(key, round));
                }
            }
        });
    }
    std::atomic<int> wrong{0};
    for (int reader = 0; reader < 2; ++reader) {
        threads.emplace_back([&, reader] {
            start.arrive_and_wait();
            for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
                const int key = (i * 5 + reader) % keys;
                if (const auto got = finder.find_spec(key)) {
                    mod m;
                    no_imports imp;
                    got->loader(m, imp);
                    if (m.value != key * 7) wrong.fetch_add(1);
                    found.fetch_add(1, std::memory_order_relaxed);
                }
            }
        });
    }
    threads[0].join();
    threads[1].join();
    stop = true;
    threads[2].join();
    threads[3].join();
    REQUIRE(wrong == 0);
    // Each writer's last touch of a key decides whether it is defined at the end,
    // and a defined key's spec is still the one its key was defined with.
    int defined = 0;
    for (int key = 0; key < keys; ++key) {
        int last = -1;
        for (int round = 0; round < rounds; ++round) {
            if (key % 2 + 2 * (round % (keys / 2)) == key) last = round;
        }
        const bool expect = last % 3 != 2;
        REQUIRE(finder.defines(key) == expect);
        const auto spec = finder.find_spec(key);
        REQUIRE(spec.has_value() == expect);
        if (spec) {
            mod m;
            no_imports imp;
            spec->loader(m, imp);
            REQUIRE(m.value == key * 7);
        }
        defined += expect ? 1 : 0;
    }
    REQUIRE(finder.size() == static_cast<std::size_t>(defined));
}

TEST_CASE("factories create modules that are not default-constructible", "[creation]") {
    importlock::basic_import_system<std::string, not_default_constructible> system;
    system.finder().define(
        "n", [](not_default_constructible& m, auto&) { m.value += 1; },
        [](const std::string& key) {
            return std::make_shared<not_default_constructible>(static_cast<int>(key.size()));
        });
    REQUIRE(system.import_module("n")->value == 2);
    system.finder().define("missing factory", [](not_default_constructible&, auto&) {});
    REQUIRE_THROWS_AS(system.import_module("missing factory"), importlock::import_error);
    REQUIRE_FALSE(system.contains("missing factory"));
}

TEST_CASE("define_value builds single-phase modules with no partial object", "[creation]") {
    importlock::import_system<mod> system;
    int builds = 0;
    system.finder().define_value("by value", [&](auto&) {
        ++builds;
        mod m;
        m.value = 1;
        return m;
    });
    system.finder().define_value("by pointer", [](auto& imp) {
        auto m = std::make_shared<mod>();
        m->value = imp.import_module("by value")->value + 1;
        return m;
    });
    REQUIRE(system.import_module("by pointer")->value == 2);
    REQUIRE(system.import_module("by value")->value == 1);
    REQUIRE(builds == 1);
    REQUIRE(system.dependencies("by pointer") == std::vector<std::string>{"by value"});

    SECTION("a cycle through a single-phase module throws in the lenient policy too") {
        bool saw_partial = false;
        system.finder().define_value("x", [](auto& imp) {
            imp.import_module("y");
            return mod{};
        });
        system.finder().define("y", [&](mod&, auto& imp) {
            // x has no object while its builder runs: nothing to be partial.
            try {
                imp.import_module("x");
                saw_partial = true;
            } catch (const importlock::circular_import_error& e) {
                REQUIRE(e.chain() == std::vector<std::string>{"x", "y", "x"});
                throw;
            }
        });
        REQUIRE_THROWS_AS(system.import_module("x"), importlock::circular_import_error);
        REQUIRE_FALSE(saw_partial);
        REQUIRE_FALSE(system.contains("x"));
        REQUIRE_FALSE(system.contains("y"));
    }
    SECTION("is_initializing is false while a builder runs, and reload is refused") {
        system.finder().define_value("probe", [&](auto&) {
            REQUIRE_FALSE(system.contains("probe"));
            REQUIRE_FALSE(system.is_initializing("probe"));
            return mod{};
        });
        system.import_module("probe");
        REQUIRE_THROWS_AS(system.reload("probe"), importlock::import_error);
        REQUIRE(system.contains("probe"));
    }
    SECTION("a builder returning null is an import_error") {
        system.finder().define_value("null", [](auto&) { return std::shared_ptr<mod>(); });
        REQUIRE_THROWS_AS(system.import_module("null"), importlock::import_error);
        REQUIRE_FALSE(system.contains("null"));
    }
    REQUIRE(system.lock_count() == 0);
}

TEST_CASE("singleflight: the waiters of a failed import rethrow its exception",
          "[failure][threaded]") {
    watchdog dog("singleflight");
    const int waiters = GENERATE(1, 3, 8);
    importlock::basic_import_system<std::string, mod, importlock::singleflight_per_key_locks>
        system;
    std::atomic<int> runs{0};
    system.finder().define("k", [&](mod& m, auto&) {
        if (++runs == 1) {
            await([&] { return system.waiter_count("k") == static_cast<std::size_t>(waiters); });
            throw std::runtime_error("first run fails");
        }
        m.value = 1;
    });
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(waiters) + 1);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < errors.size(); ++i) {
        threads.emplace_back([&, i] {
            try {
                system.import_module("k");
            } catch (...) {
                errors[i] = std::current_exception();
            }
        });
    }
    for (auto& t : threads) t.join();
    REQUIRE(runs == 1);
    for (const auto& e : errors) {
        REQUIRE(e != nullptr);
        REQUIRE(e == errors.front());  // the same exception object for everyone
    }
    REQUIRE_FALSE(system.contains("k"));
    REQUIRE(system.import_module("k")->value == 1);  // the next import retries
    REQUIRE(runs == 2);
    REQUIRE(system.lock_count() == 0);
}

TEST_CASE("singleflight shares finder failures too, and late importers retry",
          "[failure][threaded]") {
    watchdog dog("singleflight finder");
    using system_t =
        importlock::basic_import_system<std::string, mod, importlock::singleflight_per_key_locks,
                                        importlock::function_finder<std::string, mod>>;
    std::atomic<int> finds{0};
    system_t* self = nullptr;
    system_t system(importlock::function_finder<std::string, mod>(
        [&](const std::string& key) -> std::optional<string_spec> {
            if (++finds == 1) {
                await([&] { return self->waiter_count(key) == 2; });
                throw std::runtime_error("finder down");
            }
            return std::nullopt;
        }));
    self = &system;
    std::vector<std::exception_ptr> errors(3);
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < 3; ++i) {
        threads.emplace_back([&, i] {
            try {
                system.import_module("k");
            } catch (...) {
                errors[i] = std::current_exception();
            }
        });
    }
    for (auto& t : threads) t.join();
    REQUIRE(finds == 1);
    REQUIRE(errors[0] == errors[1]);
    REQUIRE(errors[1] == errors[2]);
    REQUIRE_THROWS_AS(system.import_module("k"), importlock::module_not_found_error);
    REQUIRE(finds == 2);
    REQUIRE(system.lock_count() == 0);
}

TEST_CASE("std::filesystem::path keys import their parent directory first", "[keys]") {
    importlock::basic_import_system<std::filesystem::path, mod> system;
    std::vector<std::string> order;
    for (const char* key : {"plugins", "plugins/audio", "plugins/audio/mp3"}) {
        system.finder().define(key, [&order, key](mod&, auto&) { order.emplace_back(key); });
    }
    system.import_module("plugins/audio/mp3");
    REQUIRE(order == std::vector<std::string>{"plugins", "plugins/audio", "plugins/audio/mp3"});
    REQUIRE(system.get("plugins")->children == std::vector<std::string>{"plugins/audio"});
    REQUIRE(importlock::key_traits<std::filesystem::path>::parent("/abs") == std::nullopt);
    REQUIRE(importlock::key_traits<std::filesystem::path>::parent("single") == std::nullopt);
    try {
        system.import_module("other/x");
        FAIL("expected module_not_found_error");
    } catch (const importlock::module_not_found_error& e) {
        REQUIRE(e.key() == "other");
    }
}

namespace {
// A path type of the user's own that mimics std::filesystem::path: the
// interface keys/path_keys.hpp asks for, '/'-separated.
class user_path {
public:
    using value_type = char;
    using string_type = std::string;
    enum class format { native_format, generic_format, auto_format };
    user_path() = default;
    user_path(std::string text) : text_(std::move(text)) {}
    user_path(const char* text) : text_(text) {}
    std::string generic_string() const { return text_; }
    user_path parent_path() const {
        const auto slash = text_.rfind('/');
        return slash == std::string::npos ? user_path() : user_path(text_.substr(0, slash));
    }
    bool has_relative_path() const { return !text_.empty() && text_ != "/"; }
    bool empty() const { return text_.empty(); }
    friend bool operator==(const user_path&, const user_path&) = default;
    friend std::size_t hash_value(const user_path& p) { return std::hash<std::string>{}(p.text_); }

private:
    std::string text_;
};
// The same without the `format` enumeration: not taken for a path.
struct not_quite_a_path {
    using value_type = char;
    using string_type = std::string;
    not_quite_a_path(std::string) {}
    std::string generic_string() const { return {}; }
    not_quite_a_path parent_path() const { return *this; }
    bool has_relative_path() const { return false; }
    bool empty() const { return true; }
    friend bool operator==(const not_quite_a_path&, const not_quite_a_path&) = default;
    friend std::size_t hash_value(const not_quite_a_path&) { return 0; }
};
}  // namespace

TEST_CASE("any type with a path's interface gets path keys, std::filesystem::path among them",
          "[keys]") {
    static_assert(importlock::detail::path_like<std::filesystem::path>);
    static_assert(importlock::detail::path_like<user_path>);
    static_assert(!importlock::detail::path_like<std::string>);
    static_assert(!importlock::detail::path_like<not_quite_a_path>);
    // (it has the rest of the interface)
    REQUIRE(hash_value(not_quite_a_path("a")) == 0);
    REQUIRE(not_quite_a_path("a") == not_quite_a_path("b"));
    using traits = importlock::key_traits<user_path>;
    REQUIRE(traits::parent("a/b/c") == user_path("a/b"));
    REQUIRE(traits::parent("a") == std::nullopt);
    REQUIRE(traits::to_string("a/b") == "a/b");
    REQUIRE(traits::from_string("x/y") == user_path("x/y"));
    REQUIRE(traits::hasher{}("a/b") == std::hash<std::string>{}("a/b"));
    REQUIRE(importlock::key_traits<std::filesystem::path>::hasher{}("a/b") ==
            std::filesystem::hash_value(std::filesystem::path("a/b")));

    importlock::basic_import_system<user_path, mod> system;
    std::vector<std::string> order;
    for (const char* key : {"plugins", "plugins/video", "plugins/video/av1"}) {
        system.finder().define(key, [&order, key](mod&, auto&) { order.emplace_back(key); });
    }
    system.import_module("plugins/video/av1");
    REQUIRE(order == std::vector<std::string>{"plugins", "plugins/video", "plugins/video/av1"});
    try {
        system.import_module("none/x");
        FAIL("expected module_not_found_error");
    } catch (const importlock::module_not_found_error& e) {
        REQUIRE(e.key() == "none");
    }
}

TEST_CASE("std::vector<std::string> keys are dotted names already split", "[keys]") {
    using key = std::vector<std::string>;
    importlock::basic_import_system<key, mod> system;
    system.finder().define(key{"pkg"}, [](mod&, auto&) {});
    system.finder().define(key{"pkg", "sub"}, [](mod& m, auto&) { m.value = 1; });
    REQUIRE(system.import_module(key{"pkg", "sub"})->value == 1);
    REQUIRE(system.get(key{"pkg"})->children == std::vector<std::string>{"pkg.sub"});
    REQUIRE(importlock::key_traits<key>::hasher{}(key{"a", "b"}) !=
            importlock::key_traits<key>::hasher{}(key{"ab"}));
}

TEST_CASE("module_handle imports once, then follows erase and block", "[handle]") {
    importlock::import_system<mod> system;
    int runs = 0;
    system.finder().define("k", [&](mod& m, auto&) { m.value = ++runs; });
    auto handle = system.handle("k");
    REQUIRE_FALSE(system.contains("k"));  // binding does not import
    REQUIRE(handle->value == 1);
    REQUIRE(&*handle == &system.import_ref("k"));
    REQUIRE(handle.share() == system.get("k"));
    REQUIRE(handle.key() == "k");
    REQUIRE(&handle.system() == &system);
    const auto copy = handle;
    REQUIRE(&copy.get() == &handle.get());
    REQUIRE(runs == 1);

    REQUIRE(system.erase("k"));
    REQUIRE(handle->value == 2);  // imported again, never the dropped module
    REQUIRE(copy->value == 2);
    system.block("k");
    REQUIRE_THROWS_AS(handle.get(), importlock::import_halted_error);
    REQUIRE(system.erase("k"));
    REQUIRE(handle->value == 3);
    REQUIRE(system.lock_count() == 0);
}

TEST_CASE("module_handle shared by threads initialises once", "[handle][threaded]") {
    watchdog dog("handle threads");
    importlock::import_system<mod> system;
    std::atomic<int> runs{0};
    system.finder().define("k", [&](mod& m, auto&) {
        ++runs;
        m.value = 42;
    });
    const auto handle = system.handle("k");
    std::vector<std::thread> threads;
    std::atomic<int> sum{0};
    for (int i = 0; i < 8; ++i) {
        threads.emplace_back([&] {
            for (int j = 0; j < 1000; ++j) sum += handle->value;
        });
    }
    for (auto& t : threads) t.join();
    REQUIRE(runs == 1);
    REQUIRE(sum == 8 * 1000 * 42);
}

TEST_CASE("shared_module_handle owns its module across erase, block and clear",
          "[handle][shared_handle]") {
    importlock::import_system<mod> system;
    int runs = 0;
    system.finder().define("k", [&](mod& m, auto&) { m.value = ++runs; });
    auto handle = system.shared_handle("k");
    REQUIRE_FALSE(system.contains("k"));  // binding does not import
    REQUIRE(handle.owned() == nullptr);
    const std::shared_ptr<mod> first = handle.get();
    REQUIRE(first->value == 1);
    REQUIRE(first == system.get("k"));
    REQUIRE(&handle.get() == &handle.get());  // the same owned pointer, no copy
    REQUIRE(handle.key() == "k");
    REQUIRE(&handle.system() == &system);
    std::weak_ptr<mod> watch = first;

    // erase: the handle keeps the dropped module alive until its next use.
    REQUIRE(system.erase("k"));
    REQUIRE(handle.owned() == first);
    REQUIRE(handle->value == 2);  // imported again, never the dropped module
    REQUIRE(runs == 2);
    REQUIRE(handle.get() == system.get("k"));

    // block: the next use throws and the handle keeps what it owned.
    const std::shared_ptr<mod> second = handle.get();
    system.block("k");
    REQUIRE_THROWS_AS(handle.get(), importlock::import_halted_error);
    REQUIRE(handle.owned() == second);
    REQUIRE(second->value == 2);
    REQUIRE(system.erase("k"));
    REQUIRE(handle->value == 3);

    // clear: the module outlives the registry's reference while the handle holds it.
    std::weak_ptr<mod> third = handle.owned();
    REQUIRE(system.clear() == 1);
    REQUIRE_FALSE(third.expired());
    handle.reset();
    REQUIRE(third.expired());
    REQUIRE(handle.owned() == nullptr);
    REQUIRE(handle->value == 4);
    REQUIRE(system.lock_count() == 0);
    (void)watch;
}

TEST_CASE("shared_module_handle copies own the same module", "[handle][shared_handle]") {
    importlock::import_system<mod> system;
    system.finder().define("k", [](mod& m, auto&) { m.value = 7; });
    auto handle = system.shared_handle("k");
    const std::shared_ptr<mod> module = handle.get();
    auto copy = handle;
    REQUIRE(copy.owned() == module);
    REQUIRE(module.use_count() == 4);  // the registry, `module`, handle, copy
    REQUIRE(system.erase("k"));
    REQUIRE(copy.get() != module);  // each copy refreshes on its own
    REQUIRE(handle.owned() == module);
}

TEST_CASE("shared_module_handle waits for a reload in progress, then returns the same object",
          "[handle][shared_handle][threaded]") {
    watchdog dog("shared handle reload");
    importlock::import_system<mod> system;
    std::mutex m;
    std::condition_variable cv;
    bool reloading = false, go = false;
    std::atomic<bool> reload_done{false};
    int loads = 0;
    system.finder().define("k", [&](mod& module, auto&) {
        if (++loads == 1) return;
        std::unique_lock lock(m);
        reloading = true;
        cv.notify_all();
        cv.wait(lock, [&] { return go; });
        module.value = 99;
        reload_done = true;
    });
    auto handle = system.shared_handle("k");
    const std::shared_ptr<mod> before = handle.get();
    std::thread reloader([&] { system.reload("k"); });
    {
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return reloading; });
    }
    std::shared_ptr<mod> seen;
    bool done_when_returned = false;
    std::thread user([&] {
        seen = handle.get();  // the reload's loader runs: never returned before it ends
        done_when_returned = reload_done.load();
    });
    await([&] { return system.waiter_count("k") == 1; });
    {
        std::lock_guard lock(m);
        go = true;
    }
    cv.notify_all();
    reloader.join();
    user.join();
    REQUIRE(done_when_returned);
    REQUIRE(seen == before);  // reload keeps the object
    REQUIRE(seen->value == 99);
    REQUIRE(loads == 2);
}

TEST_CASE("shared_module_handle takes a partial module from a cycle, then the ready one",
          "[handle][shared_handle]") {
    importlock::import_system<mod> system;  // default policy: partial modules on cycles
    auto handle = system.shared_handle("a");
    bool partial_seen = false;
    system.finder().define("a", [&](mod& m, auto& imp) {
        imp.import_module("b");
        m.value = 1;
    });
    system.finder().define("b", [&](mod&, auto&) {
        partial_seen = handle->value == 0;  // "a" is still initialising on this thread
    });
    const auto a = system.import_module("a");
    REQUIRE(partial_seen);
    REQUIRE(handle.owned() == a);  // the partial module was the same object
    REQUIRE(handle->value == 1);   // and it is now ready: returned without an import
    REQUIRE(handle.get() == a);
}

TEST_CASE("shared_module_handle: a partial module whose import fails is never taken as ready",
          "[handle][shared_handle]") {
    importlock::import_system<mod> system;
    auto handle = system.shared_handle("a");
    bool fail = true;
    std::weak_ptr<mod> partial;
    system.finder().define("a", [&](mod& m, auto& imp) {
        imp.import_module("b");
        if (fail) throw std::runtime_error("a failed");
        m.value = 2;
    });
    system.finder().define("b", [&](mod&, auto&) {
        const std::shared_ptr<mod>& a = handle.get();  // "a" is partial here
        if (fail) partial = a;                         // the first, failing, import's
    });
    REQUIRE_THROWS_WITH(system.import_module("a"), "a failed");
    REQUIRE_FALSE(system.contains("a"));
    REQUIRE(handle.owned() == partial.lock());  // still owned, never destroyed under it
    REQUIRE(handle.owned()->value == 0);
    fail = false;
    system.erase("b");            // so that b's loader runs (and uses the handle) again
    REQUIRE(handle->value == 2);  // imported anew: the failed object was not returned
    REQUIRE(partial.expired());   // released by the refresh
    REQUIRE(handle.get() == system.get("a"));
    REQUIRE(system.lock_count() == 0);
}

TEST_CASE("shared_module_handle works under no_locks and global_lock", "[handle][shared_handle]") {
    importlock::basic_import_system<int, mod, importlock::no_locks> single;
    single.finder().define(1, [](mod& m, auto&) { m.value = 1; });
    auto h1 = single.shared_handle(1);
    REQUIRE(h1->value == 1);
    REQUIRE(single.erase(1));
    REQUIRE(h1.owned()->value == 1);
    REQUIRE(h1->value == 1);
    REQUIRE(h1.get() == single.get(1));

    importlock::basic_import_system<int, mod, importlock::global_lock> global;
    global.finder().define(2, [](mod& m, auto&) { m.value = 2; });
    auto h2 = global.shared_handle(2);
    REQUIRE(h2->value == 2);
    REQUIRE(h2.get() == global.get(2));
}

TEST_CASE("shared_module_handles, one per thread, initialise once",
          "[handle][shared_handle][threaded]") {
    watchdog dog("shared handle threads");
    importlock::import_system<mod> system;
    std::atomic<int> runs{0};
    system.finder().define("k", [&](mod& m, auto&) {
        ++runs;
        m.value = 42;
    });
    const auto prototype = system.shared_handle("k");
    std::vector<std::thread> threads;
    std::atomic<int> sum{0};
    std::atomic<int> arrived{0};
    for (int i = 0; i < 8; ++i) {
        threads.emplace_back([&, handle = prototype]() mutable {
            ++arrived;
            while (arrived.load() < 8) std::this_thread::yield();  // all start together
            int local = 0;
            for (int j = 0; j < 1000; ++j) local += handle->value;
            sum += local;
        });
    }
    for (auto& t : threads) t.join();
    REQUIRE(runs == 1);
    REQUIRE(sum == 8 * 1000 * 42);
    REQUIRE(system.get("k").use_count() == 2);  // the registry and this copy: handles gone
}

TEST_CASE("a custom mutex plugs into basic_per_key_locks", "[policies][threaded]") {
    watchdog dog("custom mutex");
    struct counting_mutex {
        void lock() {
            if (!m.try_lock()) {
                ++contended;
                m.lock();
            }
            ++locked;
        }
        void unlock() { m.unlock(); }
        std::mutex m;
        std::atomic<int> contended{0};
        std::atomic<int> locked{0};
    };
    using policy = importlock::basic_per_key_locks<counting_mutex, std::condition_variable_any>;
    static_assert(importlock::lock_policy<policy>);
    importlock::basic_import_system<std::string, mod, policy> system;
    std::atomic<int> runs{0};
    system.finder().define("k", [&](mod& m, auto&) {
        ++runs;
        m.value = 1;
    });
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) threads.emplace_back([&] { system.import_module("k"); });
    for (auto& t : threads) t.join();
    REQUIRE(runs == 1);
    REQUIRE(system.import_module_for("k", std::chrono::seconds(1))->value == 1);
    REQUIRE(system.lock_count() == 0);
}
