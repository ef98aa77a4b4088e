// SPDX-License-Identifier: BSL-1.0
// The policy and key concepts: what satisfies them, what does not, and custom policies at run
// time.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using importlock::cycle_resolution;
using importlock::finder_policy;
using importlock::import_key;
using importlock::lock_policy;
using importlock::lock_scope;

struct module_t {
    int value = 0;
};

using spec_t = importlock::module_spec<std::string, module_t>;

// --- Lock policies -----------------------------------------------------------------------

static_assert(lock_policy<importlock::per_key_locks>);
static_assert(lock_policy<importlock::strict_per_key_locks>);
static_assert(lock_policy<importlock::singleflight_per_key_locks>);
static_assert(lock_policy<importlock::global_lock>);
static_assert(lock_policy<importlock::no_locks>);
static_assert(
    lock_policy<importlock::basic_per_key_locks<std::mutex, std::condition_variable_any>>);
static_assert(lock_policy<
              importlock::basic_per_key_locks<std::recursive_mutex, std::condition_variable_any>>);

static_assert(importlock::per_key_locks::scope == lock_scope::per_key);
static_assert(importlock::per_key_locks::on_cycle == cycle_resolution::partial_module);
static_assert(importlock::strict_per_key_locks::on_cycle ==
              cycle_resolution::circular_import_error);
static_assert(importlock::global_lock::scope == lock_scope::global);
static_assert(importlock::no_locks::on_cycle == cycle_resolution::partial_module);
static_assert(importlock::detail::failure_mode_of<importlock::global_lock>() ==
              importlock::failure_mode::waiters_retry);
static_assert(importlock::detail::failure_mode_of<importlock::singleflight_per_key_locks>() ==
              importlock::failure_mode::waiters_share_failure);

struct complete_policy {
    using mutex_type = std::mutex;
    using condition_variable_type = std::condition_variable;
    static constexpr lock_scope scope = lock_scope::per_key;
    static constexpr cycle_resolution on_cycle = cycle_resolution::partial_module;
};
static_assert(lock_policy<complete_policy>);

struct missing_mutex {
    using condition_variable_type = std::condition_variable;
    static constexpr lock_scope scope = lock_scope::per_key;
    static constexpr cycle_resolution on_cycle = cycle_resolution::partial_module;
};
struct missing_condition_variable {
    using mutex_type = std::mutex;
    static constexpr lock_scope scope = lock_scope::per_key;
    static constexpr cycle_resolution on_cycle = cycle_resolution::partial_module;
};
struct missing_scope {
    using mutex_type = std::mutex;
    using condition_variable_type = std::condition_variable;
    static constexpr cycle_resolution on_cycle = cycle_resolution::partial_module;
};
struct missing_on_cycle {
    using mutex_type = std::mutex;
    using condition_variable_type = std::condition_variable;
    static constexpr lock_scope scope = lock_scope::per_key;
};
static_assert(!lock_policy<missing_mutex>);
static_assert(!lock_policy<missing_condition_variable>);
static_assert(!lock_policy<missing_scope>);
static_assert(!lock_policy<missing_on_cycle>);
static_assert(!importlock::detail::has_mutex_type<missing_mutex>);
static_assert(!importlock::detail::has_condition_variable_type<missing_condition_variable>);
static_assert(!importlock::detail::has_scope<missing_scope>);
static_assert(!importlock::detail::has_on_cycle<missing_on_cycle>);
// Each incomplete policy has every other member (this also keeps them used).
static_assert(missing_mutex::scope == lock_scope::per_key &&
              missing_mutex::on_cycle == cycle_resolution::partial_module);
static_assert(missing_condition_variable::scope == lock_scope::per_key &&
              missing_condition_variable::on_cycle == cycle_resolution::partial_module);
static_assert(missing_scope::on_cycle == cycle_resolution::partial_module);
static_assert(missing_on_cycle::scope == lock_scope::per_key);

// Members present but unusable.
struct unlockable {
    void lock() {}  // no unlock()
};
struct mutex_without_unlock : complete_policy {
    using mutex_type = unlockable;
};
struct condition_without_wait {
    void notify_all() {}
};
struct condition_variable_without_wait : complete_policy {
    using condition_variable_type = condition_without_wait;
};
struct condition_without_notify {
    void wait(std::unique_lock<std::mutex>&) {}
};
struct condition_variable_without_notify : complete_policy {
    using condition_variable_type = condition_without_notify;
};
// std::condition_variable only waits on std::unique_lock<std::mutex>.
struct custom_mutex_with_std_condition_variable : complete_policy {
    using mutex_type = std::recursive_mutex;
};
struct scope_of_wrong_type : complete_policy {
    static constexpr int scope = 0;
};
struct on_cycle_of_wrong_type : complete_policy {
    static constexpr bool on_cycle = true;
};
static_assert(!lock_policy<mutex_without_unlock>);
static_assert(!lock_policy<condition_variable_without_wait>);
static_assert(!lock_policy<condition_variable_without_notify>);
static_assert(!lock_policy<custom_mutex_with_std_condition_variable>);
static_assert(!lock_policy<scope_of_wrong_type>);
static_assert(!lock_policy<on_cycle_of_wrong_type>);

// --- Finder policies ---------------------------------------------------------------------

static_assert(
    finder_policy<importlock::registry_finder<std::string, module_t>, std::string, module_t>);
static_assert(finder_policy<importlock::registry_finder<int, module_t>, int, module_t>);
static_assert(
    finder_policy<importlock::function_finder<std::string, module_t>, std::string, module_t>);
static_assert(
    finder_policy<importlock::meta_path_finder<std::string, module_t>, std::string, module_t>);
static_assert(
    finder_policy<importlock::finder_chain<std::string, module_t,
                                           importlock::registry_finder<std::string, module_t>,
                                           importlock::function_finder<std::string, module_t>>,
                  std::string, module_t>);
// A finder is for one key and module type.
static_assert(!finder_policy<importlock::registry_finder<std::string, module_t>, std::string, int>);
static_assert(!finder_policy<importlock::registry_finder<int, module_t>, std::string, module_t>);

struct no_find_spec {};
struct non_const_find_spec {
    std::optional<spec_t> find_spec(const std::string&) { return std::nullopt; }
};
struct find_spec_of_wrong_result {
    bool find_spec(const std::string&) const { return false; }
};
struct find_spec_of_wrong_key {
    std::optional<spec_t> find_spec(const std::vector<int>&) const { return std::nullopt; }
};
struct find_spec_returning_a_spec {
    spec_t find_spec(const std::string&) const { return {}; }  // converts to optional
};
static_assert(!finder_policy<no_find_spec, std::string, module_t>);
static_assert(!finder_policy<non_const_find_spec, std::string, module_t>);
static_assert(!finder_policy<find_spec_of_wrong_result, std::string, module_t>);
static_assert(!finder_policy<find_spec_of_wrong_key, std::string, module_t>);
static_assert(finder_policy<find_spec_returning_a_spec, std::string, module_t>);

// --- Keys --------------------------------------------------------------------------------

struct unhashable_key {
    int id = 0;
    bool operator==(const unhashable_key&) const = default;
};
struct hashable_without_equality {
    int id = 0;
};

}  // namespace

template <>
struct std::hash<hashable_without_equality> {
    std::size_t operator()(const hashable_without_equality& key) const noexcept {
        return static_cast<std::size_t>(key.id);
    }
};

static_assert(import_key<int>);
static_assert(import_key<std::string>);
static_assert(import_key<std::vector<std::string>>);
static_assert(import_key<std::filesystem::path>);
static_assert(!import_key<unhashable_key>);
static_assert(!import_key<std::unique_ptr<int>>);  // hashable but not copyable

// --- Run time ------------------------------------------------------------------------------

namespace {

// A finder computed from the key: "sum:N" is N + "sum:N-1", "sum:0" is 0.
struct sum_finder {
    std::optional<spec_t> find_spec(const std::string& key) const {
        ++*calls;
        if (key.rfind("sum:", 0) != 0) return std::nullopt;
        const int n = std::stoi(key.substr(4));
        spec_t spec;
        spec.loader = [n](module_t& m, importlock::importer<std::string, module_t>& imp) {
            m.value = n == 0 ? 0 : n + imp.import_module("sum:" + std::to_string(n - 1))->value;
        };
        return spec;
    }
    std::shared_ptr<std::atomic<int>> calls = std::make_shared<std::atomic<int>>(0);
};
static_assert(finder_policy<sum_finder, std::string, module_t>);

// A mutex that counts how often it is locked.
struct counting_mutex {
    void lock() {
        locks.fetch_add(1);
        mutex.lock();
    }
    void unlock() { mutex.unlock(); }

    static inline std::atomic<long> locks{0};
    std::mutex mutex;
};

}  // namespace

TEST_CASE("policy concepts: a custom mutex and condition variable, and a custom finder",
          "[policy]") {
    using policy = importlock::basic_per_key_locks<std::mutex, std::condition_variable_any>;
    sum_finder finder;
    const auto calls = finder.calls;
    importlock::basic_import_system<std::string, module_t, policy, sum_finder> sys(finder);

    CHECK(sys.import_module("sum:10")->value == 55);
    CHECK(calls->load() == 11);  // one find_spec per key
    CHECK(sys.size() == 11);
    CHECK(sys.import_module("sum:10") == sys.get("sum:10"));
    CHECK(sys.import_module("sum:3")->value == 6);
    CHECK(calls->load() == 11);  // hits do not ask the finder

    const auto e = [&] {
        try {
            sys.import_module("other");
        } catch (const importlock::module_not_found_error& error) {
            return std::string(error.what());
        }
        return std::string("no error");
    }();
    CHECK(e == "no module named 'other'");
    CHECK(sys.lock_count() == 0);
}

TEST_CASE("policy concepts: an instrumented mutex shows that hits take no lock", "[policy]") {
    using policy = importlock::basic_per_key_locks<counting_mutex, std::condition_variable_any>;
    static_assert(lock_policy<policy>);
    importlock::basic_import_system<std::string, module_t, policy, sum_finder> sys;

    const long before = counting_mutex::locks.load();
    const auto first = sys.import_module("sum:4");
    CHECK(first->value == 10);
    const long after_import = counting_mutex::locks.load();
    CHECK(after_import > before);  // the cold import used the policy's mutex

    for (int i = 0; i < 100; ++i) {
        CHECK(sys.import_module("sum:4") == first);
        CHECK(&sys.import_ref("sum:2") == sys.get("sum:2").get());
        CHECK(sys.contains("sum:1"));
    }
    CHECK(counting_mutex::locks.load() == after_import);  // hits: no lock at all

    CHECK(sys.lock_count() == 0);
    CHECK(counting_mutex::locks.load() == after_import);  // per-key lock_count: no lock
    CHECK(sys.waiter_count("sum:4") == 0);
    CHECK(counting_mutex::locks.load() == after_import + 1);  // waiter_count: the key's shard
}

TEST_CASE("policy concepts: a key without operator== is not an import_key", "[policy][keys]") {
    // Checked at run time so that the rest of this file still builds and runs while it fails.
    // std::equal_to<Key>'s call operator is unconstrained, so `equal(key, key)` in import_key is
    // well-formed for any Key; a key type without operator== then passes import_key (and
    // basic_import_system's readable static_assert) and fails deep inside the registry instead.
    CHECK_FALSE(import_key<hashable_without_equality>);
}

TEST_CASE("policy concepts: no_locks' synchronisation types", "[policy]") {
    importlock::null_mutex mutex;
    CHECK(mutex.try_lock());
    std::unique_lock lock(mutex);
    CHECK(lock.owns_lock());
    importlock::null_condition_variable cv;
    cv.notify_all();  // does nothing
    CHECK_THROWS_AS(cv.wait(lock), std::logic_error);
}
