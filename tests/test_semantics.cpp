// SPDX-License-Identifier: BSL-1.0
// Single-threaded semantics of basic_import_system (DESIGN.md §1), under every lock policy
// where the behaviour is the same, else per policy.
#include "support/semantics.hpp"

// ---------------------------------------------------------------------------------------
// Hits, references, get

TEMPLATE_LIST_TEST_CASE("semantics: a hit returns the same object and runs the loader once",
                        "[semantics]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    define_counting(sys, "a", runs, 42);

    const std::shared_ptr<test_module> first = sys.import_module("a");
    REQUIRE(first != nullptr);
    CHECK(first->value == 42);
    CHECK(runs == 1);
    for (int i = 0; i < 10; ++i) CHECK(sys.import_module("a") == first);
    CHECK(&sys.import_ref("a") == first.get());
    CHECK(runs == 1);
    CHECK(first->loads == 1);
    CHECK(sys.size() == 1);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: import_ref refers to the object import_module and get return",
                        "[semantics]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    define_counting(sys, "a", runs, 5);

    // Cold through import_ref, then the others.
    test_module& ref = sys.import_ref("a");
    CHECK(ref.value == 5);
    CHECK(runs == 1);
    CHECK(sys.import_module("a").get() == &ref);
    CHECK(sys.get("a").get() == &ref);
    CHECK(&sys.import_ref("a") == &ref);
    // The reference is the live object: changes through it are seen by every holder.
    ref.value = 6;
    CHECK(sys.import_module("a")->value == 6);
    CHECK(runs == 1);

    // Cold through import_module, then import_ref.
    int b_runs = 0;
    define_counting(sys, "b", b_runs);
    const auto b = sys.import_module("b");
    CHECK(&sys.import_ref("b") == b.get());
    CHECK(b_runs == 1);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: get never imports", "[semantics]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    define_counting(sys, "a", runs);

    CHECK(sys.get("a") == nullptr);
    CHECK(sys.get("undefined") == nullptr);
    CHECK(runs == 0);
    CHECK_FALSE(sys.contains("a"));
    CHECK(sys.size() == 0);

    const auto a = sys.import_module("a");
    CHECK(sys.get("a") == a);
    CHECK(runs == 1);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: contains, is_initializing and size before, during and after",
                        "[semantics]", all_policies) {
    system_t<TestType> sys;
    struct observation {
        bool contains = false;
        bool initializing = false;
        bool blocked = true;
        std::size_t size = 0;
        const test_module* got = nullptr;
    };
    observation in_a;
    observation a_in_b;
    observation in_b;
    const test_module* a_object = nullptr;
    sys.finder().define("a", [&](test_module& m, importer_t& imp) {
        a_object = &m;
        in_a = {sys.contains("a"), sys.is_initializing("a"), sys.is_blocked("a"), sys.size(),
                sys.get("a").get()};
        m.dep = imp.import_module("b");
    });
    sys.finder().define("b", [&](test_module& m, importer_t& imp) {
        in_b = {sys.contains("b"), sys.is_initializing("b"), sys.is_blocked("b"), sys.size(),
                imp.get("b").get()};
        a_in_b = {sys.contains("a"), sys.is_initializing("a"), sys.is_blocked("a"), sys.size(),
                  imp.get("a").get()};
        m.value = 1;
    });

    CHECK_FALSE(sys.contains("a"));
    CHECK_FALSE(sys.is_initializing("a"));
    CHECK_FALSE(sys.is_blocked("a"));
    CHECK(sys.size() == 0);

    const auto a = sys.import_module("a");

    CHECK(in_a.contains);
    CHECK(in_a.initializing);
    CHECK_FALSE(in_a.blocked);
    CHECK(in_a.size == 1);
    CHECK(in_a.got == a_object);  // get returns the partial module

    CHECK(in_b.contains);
    CHECK(in_b.initializing);
    CHECK(in_b.size == 2);
    CHECK(in_b.got == a->dep.get());
    CHECK(a_in_b.contains);      // a is still registered ...
    CHECK(a_in_b.initializing);  // ... and still initialising while b loads
    CHECK(a_in_b.got == a.get());

    CHECK(sys.contains("a"));
    CHECK(sys.contains("b"));
    CHECK_FALSE(sys.is_initializing("a"));
    CHECK_FALSE(sys.is_initializing("b"));
    CHECK(sys.size() == 2);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: nested imports through the importer", "[semantics]",
                        all_policies) {
    system_t<TestType> sys;
    std::vector<std::string> finished;
    bool importer_reads_the_registry = false;
    sys.finder().define("app", [&](test_module& m, importer_t& imp) {
        m.dep = imp.import_module("service");
        // The importer a loader gets reads the system's registry.
        importer_reads_the_registry =
            imp.get("service") == sys.get("service") && imp.get("db") == sys.get("db");
        m.value = m.dep->value + 1;
        finished.push_back("app");
    });
    sys.finder().define("service", [&](test_module& m, importer_t& imp) {
        m.dep = imp.import_module("db");
        // A second import of the same dependency is a hit.
        CHECK(imp.import_module("db") == m.dep);
        CHECK(&imp.import_ref("db") == m.dep.get());
        m.value = m.dep->value + 1;
        finished.push_back("service");
    });
    sys.finder().define("db", [&](test_module& m, importer_t&) {
        m.value = 1;
        finished.push_back("db");
    });

    const auto app = sys.import_module("app");
    CHECK(app->value == 3);
    CHECK(app->dep == sys.get("service"));
    CHECK(app->dep->dep == sys.get("db"));
    CHECK(finished == std::vector<std::string>{"db", "service", "app"});
    CHECK(importer_reads_the_registry);
    CHECK(sys.size() == 3);
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------------------
// Circular imports on one thread

TEMPLATE_LIST_TEST_CASE("semantics: circular import a -> b -> a", "[semantics][cycle]",
                        all_policies) {
    system_t<TestType> sys;
    int a_runs = 0;
    int b_runs = 0;
    int value_b_saw = -1;
    bool a_initializing_in_b = false;
    sys.finder().define("a", [&](test_module& m, importer_t& imp) {
        ++a_runs;
        m.dep = imp.import_module("b");
        m.value = 1;
    });
    sys.finder().define("b", [&](test_module& m, importer_t& imp) {
        ++b_runs;
        const std::shared_ptr<test_module> a = imp.import_module("a");
        value_b_saw = a->value;
        a_initializing_in_b = sys.is_initializing("a");
        m.seen = a.get();
        m.value = 2;
    });

    if constexpr (!is_strict<TestType>) {
        const auto a = sys.import_module("a");
        CHECK(a->value == 1);
        REQUIRE(a->dep != nullptr);
        CHECK(a->dep->value == 2);
        CHECK(a->dep->seen == a.get());  // b got a itself ...
        CHECK(value_b_saw == 0);         // ... partially initialised
        CHECK(a_initializing_in_b);
        CHECK(a_runs == 1);
        CHECK(b_runs == 1);
        CHECK(sys.contains("a"));
        CHECK(sys.contains("b"));
        CHECK_FALSE(sys.is_initializing("a"));
        CHECK(sys.size() == 2);
    } else {
        const auto e = expect_throw<circular_import_error>([&] { sys.import_module("a"); });
        CHECK(e.chain() == std::vector<std::string>{"a", "b", "a"});
        CHECK(e.key() == "a");
        CHECK(contains_text(e.what(), "a -> b -> a"));
        CHECK(value_b_saw == -1);  // b never got a module
        CHECK(a_runs == 1);
        CHECK(b_runs == 1);
        CHECK_FALSE(sys.contains("a"));
        CHECK_FALSE(sys.contains("b"));
        CHECK(sys.get("a") == nullptr);
        CHECK(sys.size() == 0);
        // Deterministic: the next attempt fails the same way.
        CHECK_THROWS_AS(sys.import_module("a"), circular_import_error);
        CHECK(a_runs == 2);
    }
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE(
    "semantics: a cycle's chain starts at the key re-entered, not at the "
    "imports around it",
    "[semantics][cycle]", all_policies) {
    // outer -> a -> b -> c -> b: the chain is the cycle b -> c -> b only, however
    // many frames of this thread lie below it.
    system_t<TestType> sys;
    sys.finder().define("outer",
                        [](test_module& m, importer_t& imp) { m.dep = imp.import_module("a"); });
    sys.finder().define("a",
                        [](test_module& m, importer_t& imp) { m.dep = imp.import_module("b"); });
    sys.finder().define("b",
                        [](test_module& m, importer_t& imp) { m.dep = imp.import_module("c"); });
    sys.finder().define("c", [](test_module& m, importer_t& imp) {
        m.seen = imp.import_module("b").get();
        m.value = 3;
    });
    if constexpr (!is_strict<TestType>) {
        const auto outer = sys.import_module("outer");
        const auto& b = outer->dep->dep;
        CHECK(b->dep->seen == b.get());
        CHECK(sys.size() == 4);
    } else {
        const auto e = expect_throw<circular_import_error>([&] { sys.import_module("outer"); });
        CHECK(e.chain() == std::vector<std::string>{"b", "c", "b"});
        CHECK(e.key() == "b");
        CHECK(sys.size() == 0);
    }
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a cycle entered at its other key names that key first",
                        "[semantics][cycle]", all_policies) {
    system_t<TestType> sys;
    sys.finder().define(
        "a", [](test_module& m, importer_t& imp) { m.seen = imp.import_module("b").get(); });
    sys.finder().define("b",
                        [](test_module& m, importer_t& imp) { m.dep = imp.import_module("a"); });

    if constexpr (!is_strict<TestType>) {
        const auto b = sys.import_module("b");
        REQUIRE(b->dep != nullptr);
        CHECK(b->dep->seen == b.get());
    } else {
        const auto e = expect_throw<circular_import_error>([&] { sys.import_module("b"); });
        CHECK(e.chain() == std::vector<std::string>{"b", "a", "b"});
        CHECK(contains_text(e.what(), "b -> a -> b"));
        CHECK(sys.size() == 0);
    }
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a loader importing its own key", "[semantics][cycle]",
                        all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    sys.finder().define("a", [&](test_module& m, importer_t& imp) {
        ++runs;
        m.seen = imp.import_module("a").get();
        m.value = 1;
    });
    if constexpr (!is_strict<TestType>) {
        const auto a = sys.import_module("a");
        CHECK(a->seen == a.get());
        CHECK(a->value == 1);
        CHECK(runs == 1);
        CHECK(sys.size() == 1);
    } else {
        const auto e = expect_throw<circular_import_error>([&] { sys.import_module("a"); });
        CHECK(e.chain() == std::vector<std::string>{"a", "a"});
        CHECK(contains_text(e.what(), "a -> a"));
        CHECK(runs == 1);
        CHECK_FALSE(sys.contains("a"));
        CHECK(sys.size() == 0);
    }
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a three-key cycle a -> b -> c -> a", "[semantics][cycle]",
                        all_policies) {
    system_t<TestType> sys;
    int value_c_saw = -1;
    sys.finder().define("a", [](test_module& m, importer_t& imp) {
        m.dep = imp.import_module("b");
        m.value = 1;
    });
    sys.finder().define("b", [](test_module& m, importer_t& imp) {
        m.dep = imp.import_module("c");
        m.value = 2;
    });
    sys.finder().define("c", [&](test_module& m, importer_t& imp) {
        const auto a = imp.import_module("a");
        value_c_saw = a->value;
        m.seen = a.get();
        m.value = 3;
    });
    if constexpr (!is_strict<TestType>) {
        const auto a = sys.import_module("a");
        CHECK(a->dep->value == 2);
        CHECK(a->dep->dep->value == 3);
        CHECK(a->dep->dep->seen == a.get());
        CHECK(value_c_saw == 0);
        CHECK(sys.size() == 3);
    } else {
        const auto e = expect_throw<circular_import_error>([&] { sys.import_module("a"); });
        CHECK(e.chain() == std::vector<std::string>{"a", "b", "c", "a"});
        CHECK(contains_text(e.what(), "a -> b -> c -> a"));
        CHECK(value_c_saw == -1);
        CHECK(sys.size() == 0);
        CHECK_FALSE(sys.contains("a"));
        CHECK_FALSE(sys.contains("b"));
        CHECK_FALSE(sys.contains("c"));
    }
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------------------
// Failures

TEMPLATE_LIST_TEST_CASE("semantics: a failing loader", "[semantics][failure]", all_policies) {
    system_t<TestType> sys;
    int dep_runs = 0;
    int runs = 0;
    bool fail = true;
    std::exception_ptr thrown;
    const loader_failure* thrown_address = nullptr;
    define_counting(sys, "dep", dep_runs, 10);
    sys.finder().define("a", [&](test_module& m, importer_t& imp) {
        ++runs;
        m.dep = imp.import_module("dep");
        if (fail) {
            try {
                throw loader_failure{7};
            } catch (const loader_failure& f) {
                thrown = std::current_exception();
                thrown_address = &f;
                throw;
            }
        }
        m.value = m.dep->value + 1;
    });

    std::exception_ptr caught;
    const loader_failure* caught_address = nullptr;
    int code = 0;
    try {
        sys.import_module("a");
        FAIL("the loader's exception did not reach the caller");
    } catch (const loader_failure& f) {
        caught = std::current_exception();
        caught_address = &f;
        code = f.code;
    }
    // The very exception object the loader threw.
    REQUIRE(thrown != nullptr);
    CHECK(caught == thrown);
    CHECK(caught_address == thrown_address);
    CHECK(code == 7);

    CHECK_FALSE(sys.contains("a"));
    CHECK(sys.get("a") == nullptr);
    CHECK_FALSE(sys.is_initializing("a"));
    CHECK(sys.lock_count() == 0);
    // What the failed loader imported stays loaded.
    CHECK(sys.contains("dep"));
    CHECK(sys.size() == 1);

    // import_ref fails the same way and runs the loader again.
    CHECK_THROWS_AS(sys.import_ref("a"), loader_failure);
    CHECK(runs == 2);

    fail = false;
    const auto a = sys.import_module("a");
    CHECK(a->value == 11);
    CHECK(runs == 3);
    CHECK(dep_runs == 1);
    CHECK(a->dep == sys.get("dep"));
    CHECK(sys.size() == 2);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a std::exception from a loader reaches the caller unwrapped",
                        "[semantics][failure]", all_policies) {
    system_t<TestType> sys;
    const typed_failure* thrown_address = nullptr;
    sys.finder().define("a", [&](test_module&, importer_t&) {
        try {
            throw typed_failure("boom");
        } catch (const typed_failure& f) {
            thrown_address = &f;
            throw;
        }
    });
    try {
        sys.import_module("a");
        FAIL("no exception");
    } catch (const import_error&) {
        FAIL("the loader's exception was wrapped in an import_error");
    } catch (const typed_failure& f) {
        CHECK(&f == thrown_address);
        CHECK(std::string(f.what()) == "boom");
    }
    CHECK(sys.size() == 0);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a failure in a nested import unwinds every importer",
                        "[semantics][failure]", all_policies) {
    system_t<TestType> sys;
    int leaf_runs = 0;
    int ok_runs = 0;
    define_counting(sys, "ok", ok_runs);
    sys.finder().define("top", [](test_module& m, importer_t& imp) {
        imp.import_module("ok");
        m.dep = imp.import_module("middle");
    });
    sys.finder().define("middle",
                        [](test_module& m, importer_t& imp) { m.dep = imp.import_module("leaf"); });
    sys.finder().define("leaf", [&](test_module&, importer_t&) {
        ++leaf_runs;
        throw loader_failure{3};
    });
    const auto f = expect_throw<loader_failure>([&] { sys.import_module("top"); });
    CHECK(f.code == 3);
    CHECK_FALSE(sys.contains("top"));
    CHECK_FALSE(sys.contains("middle"));
    CHECK_FALSE(sys.contains("leaf"));
    CHECK(sys.contains("ok"));
    CHECK(sys.size() == 1);
    CHECK(leaf_runs == 1);
    CHECK(sys.lock_count() == 0);

    // A loader may catch a nested failure and finish anyway.
    sys.finder().define("tolerant", [](test_module& m, importer_t& imp) {
        try {
            imp.import_module("leaf");
        } catch (const loader_failure& e) {
            m.value = e.code;
        }
    });
    CHECK(sys.import_module("tolerant")->value == 3);
    CHECK(leaf_runs == 2);
    CHECK_FALSE(sys.contains("leaf"));
    CHECK(sys.size() == 2);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: module_not_found_error names the key", "[semantics]",
                        all_policies) {
    system_t<TestType> sys;
    const auto e = expect_throw<module_not_found_error>([&] { sys.import_module("nope"); });
    // The registry finder's hint says how the key could be found.
    CHECK(std::string(e.what()) ==
          "no module named 'nope'; define it with finder().define(\"nope\", ...)");
    CHECK(e.key() == "nope");
    CHECK_THROWS_AS(sys.import_ref("nope"), module_not_found_error);
    CHECK_FALSE(sys.contains("nope"));
    CHECK(sys.size() == 0);

    // From a nested import: the importer fails with it and is not registered.
    sys.finder().define(
        "a", [](test_module& m, importer_t& imp) { m.dep = imp.import_module("missing"); });
    const auto nested = expect_throw<module_not_found_error>([&] { sys.import_module("a"); });
    CHECK(nested.key() == "missing");
    CHECK(std::string(nested.what()).rfind("no module named 'missing'; define it", 0) == 0);
    CHECK_FALSE(sys.contains("a"));
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------------------
// block / erase

TEMPLATE_LIST_TEST_CASE("semantics: block", "[semantics][block]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    define_counting(sys, "a", runs);

    SECTION("a key blocked before any import") {
        sys.block("a");
        CHECK(sys.is_blocked("a"));
        CHECK_FALSE(sys.contains("a"));
        CHECK(sys.get("a") == nullptr);
        CHECK(sys.size() == 0);
        const auto e = expect_throw<import_halted_error>([&] { sys.import_module("a"); });
        CHECK(e.key() == "a");
        CHECK(contains_text(e.what(), "'a'"));
        CHECK_THROWS_AS(sys.import_ref("a"), import_halted_error);
        // import_ref refuses it under the shard's mutex (a key without a
        // parent is not looked up twice): the block stays, nothing was added.
        CHECK(sys.is_blocked("a"));
        CHECK(sys.entry_count() == 1);
        CHECK(runs == 0);
        // Blocking an undefined key works too.
        sys.block("undefined");
        CHECK(sys.is_blocked("undefined"));
        CHECK_THROWS_AS(sys.import_module("undefined"), import_halted_error);
    }
    SECTION("blocking a loaded key drops it") {
        const auto old = sys.import_module("a");
        REQUIRE(sys.size() == 1);
        sys.block("a");
        CHECK(sys.is_blocked("a"));
        CHECK_FALSE(sys.contains("a"));
        CHECK(sys.get("a") == nullptr);
        CHECK(sys.size() == 0);
        CHECK_THROWS_AS(sys.import_module("a"), import_halted_error);
        CHECK(old->value == 1);  // holders keep their object
        CHECK(runs == 1);
    }
    SECTION("erase un-blocks") {
        sys.block("a");
        CHECK(sys.erase("a"));
        CHECK_FALSE(sys.is_blocked("a"));
        CHECK(sys.import_module("a")->value == 1);
        CHECK(runs == 1);
        CHECK(sys.size() == 1);
    }
    SECTION("a blocked key imported by a loader fails that loader") {
        sys.block("a");
        sys.finder().define(
            "b", [](test_module& m, importer_t& imp) { m.dep = imp.import_module("a"); });
        const auto e = expect_throw<import_halted_error>([&] { sys.import_module("b"); });
        CHECK(e.key() == "a");
        CHECK_FALSE(sys.contains("b"));
    }
    SECTION("blocking twice keeps the block") {
        sys.block("a");
        sys.block("a");
        CHECK(sys.is_blocked("a"));
        CHECK(sys.erase("a"));
        CHECK_FALSE(sys.is_blocked("a"));
        CHECK_FALSE(sys.erase("a"));
    }
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: erase", "[semantics][erase]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    define_counting(sys, "a", runs);

    CHECK_FALSE(sys.erase("unknown"));
    CHECK_FALSE(sys.erase("a"));  // defined but never imported

    const auto first = sys.import_module("a");
    CHECK(sys.erase("a"));
    CHECK_FALSE(sys.contains("a"));
    CHECK(sys.get("a") == nullptr);
    CHECK(sys.size() == 0);
    CHECK_FALSE(sys.erase("a"));  // already gone

    const auto second = sys.import_module("a");
    CHECK(runs == 2);
    CHECK(second != first);  // a new object
    CHECK(second->loads == 1);
    CHECK(first->loads == 1);  // the old one is untouched
    CHECK(sys.get("a") == second);
    CHECK(sys.size() == 1);

    // A failed import leaves nothing to erase.
    sys.finder().define("bad", [](test_module&, importer_t&) { throw loader_failure{1}; });
    CHECK_THROWS_AS(sys.import_module("bad"), loader_failure);
    CHECK_FALSE(sys.erase("bad"));
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: erase and block from inside the key's own loader throw",
                        "[semantics][erase][block]", all_policies) {
    system_t<TestType> sys;
    std::vector<std::string> errors;
    sys.finder().define("a", [&](test_module& m, importer_t&) {
        for (const auto& op : {std::function<void()>([&] { sys.erase("a"); }),
                               std::function<void()>([&] { sys.block("a"); })}) {
            try {
                op();
                errors.push_back("no error");
            } catch (const import_error& e) {
                errors.push_back(e.key() + ": " + e.what());
            }
        }
        m.value = 1;
    });
    // A loader may also not erase or block a key that is initialising further up its stack.
    sys.finder().define(
        "outer", [](test_module& m, importer_t& imp) { m.dep = imp.import_module("inner"); });
    sys.finder().define("inner", [&](test_module&, importer_t&) {
        try {
            sys.erase("outer");
            errors.push_back("no error");
        } catch (const import_error& e) {
            errors.push_back(e.key() + ": " + e.what());
        }
    });

    const auto a = sys.import_module("a");
    CHECK(a->value == 1);  // the loader went on and the import succeeded
    CHECK(sys.contains("a"));
    CHECK_FALSE(sys.is_blocked("a"));
    sys.import_module("outer");
    CHECK(sys.contains("outer"));
    REQUIRE(errors.size() == 3);
    for (const std::string& message : errors) {
        INFO(message);
        CHECK(message != "no error");
        CHECK(contains_text(message, "initialis"));
    }
    CHECK(contains_text(errors[0], "a: "));
    CHECK(contains_text(errors[0], "'a'"));
    CHECK(contains_text(errors[1], "'a'"));
    CHECK(contains_text(errors[2], "'outer'"));
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------------------
// reload

TEMPLATE_LIST_TEST_CASE("semantics: reload runs the loader again on the same object",
                        "[semantics][reload]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    bool contains_during_reload = false;
    const test_module* got_during_reload = nullptr;
    std::vector<std::string> reload_refusals;  // erase and block from the reloading loader
    sys.finder().define("a", [&](test_module& m, importer_t& imp) {
        ++runs;
        ++m.loads;
        m.value = runs * 10;
        if (runs > 1) {
            contains_during_reload = sys.contains("a");
            got_during_reload = imp.get("a").get();
            for (const auto& op : {std::function<void()>([&] { sys.erase("a"); }),
                                   std::function<void()>([&] { sys.block("a"); })}) {
                try {
                    op();
                    reload_refusals.push_back("no error");
                } catch (const import_error& e) {
                    reload_refusals.push_back(e.what());
                }
            }
        }
    });
    const auto a = sys.import_module("a");
    REQUIRE(a->value == 10);

    const auto reloaded = sys.reload("a");
    CHECK(reloaded == a);  // the same object ...
    CHECK(a->loads == 2);  // ... re-initialised in place
    CHECK(a->value == 20);
    CHECK(runs == 2);
    CHECK(contains_during_reload);
    CHECK(got_during_reload == a.get());
    REQUIRE(reload_refusals.size() == 2);
    for (const std::string& message : reload_refusals) {
        INFO(message);
        CHECK(contains_text(message, "'a'"));
        CHECK(contains_text(message, "reloaded"));
    }
    CHECK(sys.import_module("a") == a);
    CHECK(sys.contains("a"));
    CHECK_FALSE(sys.is_initializing("a"));
    CHECK(runs == 2);

    sys.reload("a");
    CHECK(a->value == 30);
    CHECK(reload_refusals.size() == 4);
    CHECK(sys.size() == 1);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a failing reload leaves the module registered and ready",
                        "[semantics][reload]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    bool fail = false;
    std::exception_ptr thrown;
    sys.finder().define("a", [&](test_module& m, importer_t&) {
        ++runs;
        m.value = runs;
        if (fail) {
            try {
                throw loader_failure{runs};
            } catch (...) {
                thrown = std::current_exception();
                throw;
            }
        }
    });
    const auto a = sys.import_module("a");
    fail = true;
    std::exception_ptr caught;
    try {
        sys.reload("a");
        FAIL("no exception");
    } catch (const loader_failure& f) {
        caught = std::current_exception();
        CHECK(f.code == 2);
    }
    CHECK(caught == thrown);
    CHECK(sys.contains("a"));
    CHECK_FALSE(sys.is_initializing("a"));
    CHECK(sys.get("a") == a);
    CHECK(sys.import_module("a") == a);  // a hit: the loader does not run
    CHECK(&sys.import_ref("a") == a.get());
    CHECK(runs == 2);
    CHECK(sys.size() == 1);
    CHECK(sys.lock_count() == 0);

    fail = false;
    CHECK(sys.reload("a") == a);
    CHECK(a->value == 3);

    // A reload whose key lost its definition fails the same way.
    REQUIRE(sys.finder().undefine("a"));
    const auto e = expect_throw<module_not_found_error>([&] { sys.reload("a"); });
    CHECK(e.key() == "a");
    CHECK(sys.import_module("a") == a);
    CHECK(a->value == 3);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: reload of unknown, blocked and initialising keys",
                        "[semantics][reload]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    define_counting(sys, "defined", runs);

    const auto unknown = expect_throw<import_error>([&] { sys.reload("nope"); });
    CHECK(unknown.key() == "nope");
    CHECK(contains_text(unknown.what(), "'nope'"));
    CHECK_FALSE(sys.contains("nope"));

    // Defined but not imported: reload does not import.
    const auto not_loaded = expect_throw<import_error>([&] { sys.reload("defined"); });
    CHECK(not_loaded.key() == "defined");
    CHECK(runs == 0);
    CHECK_FALSE(sys.contains("defined"));

    sys.block("blocked");
    const auto halted = expect_throw<import_halted_error>([&] { sys.reload("blocked"); });
    CHECK(halted.key() == "blocked");
    CHECK(sys.is_blocked("blocked"));

    std::string own_error = "no error";
    std::string reload_error = "no error";
    int self_runs = 0;
    sys.finder().define("self", [&](test_module& m, importer_t&) {
        ++self_runs;
        try {
            sys.reload("self");
        } catch (const import_error& e) {
            (self_runs == 1 ? own_error : reload_error) = e.key() + ": " + e.what();
        }
        m.value = self_runs;
    });
    CHECK(sys.import_module("self")->value == 1);  // the loader went on after the refusal
    INFO(own_error);
    CHECK(contains_text(own_error, "self: "));
    CHECK(contains_text(own_error, "'self'"));
    // From inside the key's own reload, too.
    CHECK(sys.reload("self")->value == 2);
    INFO(reload_error);
    CHECK(contains_text(reload_error, "'self'"));
    CHECK(self_runs == 2);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a reloading loader that imports its own key",
                        "[semantics][reload][cycle]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    sys.finder().define("a", [&](test_module& m, importer_t& imp) {
        ++runs;
        if (runs == 2) m.seen = imp.import_module("a").get();
        m.value = runs;
    });
    const auto a = sys.import_module("a");
    if constexpr (!is_strict<TestType>) {
        CHECK(sys.reload("a") == a);
        CHECK(a->seen == a.get());  // the module being reloaded
        CHECK(a->value == 2);
    } else {
        const auto e = expect_throw<circular_import_error>([&] { sys.reload("a"); });
        CHECK(e.chain() == std::vector<std::string>{"a", "a"});
        CHECK(sys.import_module("a") == a);  // still registered and ready
    }
    CHECK(sys.contains("a"));
    CHECK(sys.lock_count() == 0);
}
