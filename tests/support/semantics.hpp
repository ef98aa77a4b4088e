// SPDX-License-Identifier: BSL-1.0
// tests/support/semantics.hpp: the module type, system alias and helpers shared by
// test_semantics.cpp and test_semantics_2.cpp (one file split in two so that the
// sanitizer builds compile the halves in parallel).
#pragma once

#include <importlock/importlock.hpp>

#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "policies.hpp"

namespace {

using importlock::circular_import_error;
using importlock::import_error;
using importlock::import_halted_error;
using importlock::module_not_found_error;
using importlock_test::all_policies;

struct test_module {
    int value = 0;
    int loads = 0;                      // loader runs on this object
    std::shared_ptr<test_module> dep;   // a forward dependency
    const test_module* seen = nullptr;  // a module observed during loading (cycles: no ownership)
};

using importer_t = importlock::importer<std::string, test_module>;

template <class Policy>
using system_t = importlock::basic_import_system<std::string, test_module, Policy>;

template <class Policy>
constexpr bool is_strict = Policy::on_cycle == importlock::cycle_resolution::circular_import_error;

// A loader failure that is not a std::exception.
struct loader_failure {
    int code = 0;
};

// A loader failure that is one.
struct typed_failure : std::runtime_error {
    explicit typed_failure(const std::string& what) : std::runtime_error(what) {}
};

bool contains_text(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// Runs `f`, which must throw E; returns a copy of what it threw.
template <class E, class F>
E expect_throw(F&& f) {
    try {
        f();
    } catch (const E& e) {
        return e;
    }
    FAIL("the expected exception was not thrown");
    std::abort();  // unreachable: FAIL throws
}

// Defines `key` with a loader that counts its runs and sets the module's value.
template <class System>
void define_counting(System& sys, const std::string& key, int& runs, int value = 1) {
    sys.finder().define(key, [&runs, value](test_module& m, importer_t&) {
        ++runs;
        ++m.loads;
        m.value = value;
    });
}

}  // namespace
