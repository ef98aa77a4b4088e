// SPDX-License-Identifier: BSL-1.0
// "Instantiate once": the systems of support/explicit_instantiations.hpp are declared
// `extern template` there and compiled in support/explicit_instantiations.cpp, linked
// into this program; this file uses them as any includer would, so what runs here is
// the explicitly instantiated code. The definitions themselves check that every member
// function compiles for each policy, finder and key type listed.
#include "support/catch.hpp"
#include "support/explicit_instantiations.hpp"
#include "support/watchdog.hpp"

#include <chrono>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
#include <version>
#if defined(__cpp_lib_jthread)
#include <stop_token>
#endif

namespace {

using namespace importlock_test::instantiated;
using importlock_test::watchdog;

template <class System, class Key>
void define_pair(System& system, const Key& a, const Key& b) {
    system.finder().define(
        a, [b](service& s, auto& imp) { s.value = imp.import_module(b)->value + 1; });
    system.finder().define(b, [](service& s, auto&) { s.value = 1; });
}

}  // namespace

TEST_CASE("explicitly instantiated systems import, reload, erase and tear down",
          "[explicit_instantiation]") {
    watchdog dog("explicit instantiation");
    string_system strings;
    define_pair(strings, std::string("a"), std::string("b"));
    REQUIRE(strings.import_module("a")->value == 2);
    REQUIRE(strings.dependencies("a") == std::vector<std::string>{"b"});
    REQUIRE(strings.reload("b")->value == 1);
    REQUIRE(strings.import_module_for("a", std::chrono::seconds(1))->value == 2);
#if defined(__cpp_lib_jthread)
    std::stop_source stop;
    REQUIRE(strings.import_module("b", stop.get_token())->value == 1);
#endif
    auto owning = strings.shared_handle("a");
    REQUIRE(owning->value == 2);
    REQUIRE(strings.erase("a"));
    REQUIRE(strings.handle("a")->value == 2);
    REQUIRE(strings.clear() == 2);

    sharded_system sharded;
    define_pair(sharded, std::string("x"), std::string("y"));
    REQUIRE(sharded.import_ref("x").value == 2);
    REQUIRE(sharded.size() == 2);

    global_system global;
    define_pair(global, 1, 2);
    REQUIRE(global.import_module(1)->value == 2);
    REQUIRE(global.lock_count() == 0);

    single_thread_system single;
    define_pair(single, 1, 2);
    REQUIRE(single.import_module(1)->value == 2);
    single.block(2);
    REQUIRE_THROWS_AS(single.reload(2), importlock::import_halted_error);

    path_system paths;
    define_pair(paths, std::filesystem::path("a.so"), std::filesystem::path("b.so"));
    REQUIRE(paths.import_module("a.so")->value == 2);

    sequence_system sequences;
    sequences.finder().define({"pkg"}, [](service& s, auto&) { s.value = 1; });
    sequences.finder().define({"pkg", "sub"}, [](service& s, auto&) { s.value = 2; });
    REQUIRE(sequences.import_module({"pkg", "sub"})->value == 2);
    REQUIRE(sequences.contains({"pkg"}));  // the parent first, by the instantiated code

    function_finder_system functions(importlock::function_finder<int, service>(
        [](const int& key) -> std::optional<importlock::module_spec<int, service>> {
            importlock::module_spec<int, service> spec;
            spec.loader = [key](service& s, auto&) { s.value = key * 10; };
            return spec;
        }));
    REQUIRE(functions.import_module(4)->value == 40);
}

TEST_CASE("explicitly instantiated policies keep their semantics", "[explicit_instantiation]") {
    watchdog dog("explicit instantiation policies");
    strict_system strict;
    strict.finder().define("x", [](service&, auto& imp) { imp.import_module("y"); });
    strict.finder().define("y", [](service&, auto& imp) { imp.import_module("x"); });
    REQUIRE_THROWS_AS(strict.import_module("x"), importlock::circular_import_error);
    REQUIRE_FALSE(strict.contains("x"));

    singleflight_system singleflight;
    int runs = 0;
    singleflight.finder().define(7, [&](service&, auto&) {
        ++runs;
        throw std::runtime_error("no");
    });
    REQUIRE_THROWS_WITH(singleflight.import_module(7), "no");
    REQUIRE_THROWS_WITH(singleflight.import_module(7), "no");
    REQUIRE(runs == 2);  // nobody waited: each import runs the loader
    REQUIRE(singleflight.lock_count() == 0);
}
