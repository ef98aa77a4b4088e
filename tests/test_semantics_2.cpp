// SPDX-License-Identifier: BSL-1.0
// Single-threaded semantics of basic_import_system (DESIGN.md §1), second half: keys
// and parents onwards (the first half is test_semantics.cpp).
#include "support/semantics.hpp"

// ---------------------------------------------------------------------------------------
// Hierarchical keys

TEST_CASE("semantics: key_traits<std::string>::parent splits at the last dot", "[semantics]") {
    using traits = importlock::key_traits<std::string>;
    CHECK(traits::parent("pkg.sub.mod") == std::optional<std::string>("pkg.sub"));
    CHECK(traits::parent("pkg.sub") == std::optional<std::string>("pkg"));
    CHECK(traits::parent("pkg") == std::nullopt);
    CHECK(traits::parent("") == std::nullopt);
    CHECK(traits::parent(".hidden") == std::nullopt);
    CHECK(traits::to_string("pkg.sub") == "pkg.sub");
    CHECK(importlock::key_traits<int>::parent(12) == std::nullopt);
    CHECK(importlock::key_traits<int>::to_string(12) == "12");
}

TEMPLATE_LIST_TEST_CASE("semantics: parents are imported first", "[semantics][hierarchy]",
                        all_policies) {
    system_t<TestType> sys;
    std::vector<std::string> started;
    std::vector<std::string> finished;
    bool parent_ready_in_child = false;
    for (const std::string key : {"pkg", "pkg.sub", "pkg.sub.mod", "pkg.other"}) {
        sys.finder().define(key, [&, key](test_module&, importer_t&) {
            started.push_back(key);
            if (key == "pkg.sub.mod") {
                parent_ready_in_child = sys.contains("pkg.sub") && !sys.is_initializing("pkg.sub");
            }
            finished.push_back(key);
        });
    }
    const auto mod = sys.import_module("pkg.sub.mod");
    CHECK(started == std::vector<std::string>{"pkg", "pkg.sub", "pkg.sub.mod"});
    CHECK(finished == started);  // each parent fully loaded before the child starts
    CHECK(parent_ready_in_child);
    CHECK(sys.contains("pkg"));
    CHECK(sys.contains("pkg.sub"));
    CHECK(sys.size() == 3);

    // A hit imports nothing; a sibling imports only itself.
    CHECK(sys.import_module("pkg.sub.mod") == mod);
    sys.import_module("pkg.other");
    CHECK(started == std::vector<std::string>{"pkg", "pkg.sub", "pkg.sub.mod", "pkg.other"});
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a parent whose loader imports its own child",
                        "[semantics][hierarchy]", all_policies) {
    // Works under every policy, strict included: the child sees its parent partially
    // initialised only to bind itself.
    system_t<TestType> sys;
    int pkg_runs = 0;
    int sub_runs = 0;
    bool parent_initializing_in_child = false;
    sys.finder().define("pkg", [&](test_module& m, importer_t& imp) {
        ++pkg_runs;
        m.dep = imp.import_module("pkg.sub");
        m.value = m.dep->value + 1;
    });
    sys.finder().define("pkg.sub", [&](test_module& m, importer_t&) {
        ++sub_runs;
        parent_initializing_in_child = sys.is_initializing("pkg");
        m.value = 1;
    });

    SECTION("importing the parent") {
        const auto pkg = sys.import_module("pkg");
        CHECK(pkg->value == 2);
        CHECK(pkg->dep == sys.get("pkg.sub"));
    }
    SECTION("importing the child, whose parent's loader imports that child") {
        const auto sub = sys.import_module("pkg.sub");
        CHECK(sub->value == 1);
        CHECK(sys.get("pkg")->dep == sub);
    }
    CHECK(parent_initializing_in_child);
    CHECK(pkg_runs == 1);
    CHECK(sub_runs == 1);
    CHECK(sys.contains("pkg"));
    CHECK(sys.contains("pkg.sub"));
    CHECK_FALSE(sys.is_initializing("pkg"));
    CHECK(sys.size() == 2);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a reloading parent whose loader imports a new child",
                        "[semantics][hierarchy][reload]", all_policies) {
    // As on its first import, a package re-initialised by reload may import a child it has not
    // imported before: the child needs the parent only to bind itself. Under every policy,
    // strict included.
    system_t<TestType> sys;
    int sub_runs = 0;
    bool import_child = false;
    bool parent_registered_in_child = false;
    sys.finder().define("pkg", [&](test_module& m, importer_t& imp) {
        ++m.loads;
        if (import_child) m.dep = imp.import_module("pkg.sub");
    });
    sys.finder().define("pkg.sub", [&](test_module& m, importer_t&) {
        ++sub_runs;
        parent_registered_in_child = sys.contains("pkg");
        m.value = 1;
    });
    const auto pkg = sys.import_module("pkg");
    REQUIRE_FALSE(sys.contains("pkg.sub"));

    import_child = true;
    CHECK_NOTHROW(sys.reload("pkg"));
    CHECK(pkg->loads == 2);
    CHECK(sub_runs == 1);
    CHECK(parent_registered_in_child);
    CHECK(sys.contains("pkg.sub"));
    CHECK(pkg->dep == sys.get("pkg.sub"));
    CHECK(sys.import_module("pkg") == pkg);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a parent that fails after importing its child",
                        "[semantics][hierarchy][failure]", all_policies) {
    system_t<TestType> sys;
    int pkg_runs = 0;
    int sub_runs = 0;
    bool fail = true;
    sys.finder().define("pkg", [&](test_module& m, importer_t& imp) {
        ++pkg_runs;
        m.dep = imp.import_module("pkg.sub");
        if (fail) throw loader_failure{pkg_runs};
    });
    define_counting(sys, "pkg.sub", sub_runs, 5);

    const auto f = expect_throw<loader_failure>([&] { sys.import_module("pkg"); });
    CHECK(f.code == 1);
    CHECK_FALSE(sys.contains("pkg"));
    CHECK(sys.contains("pkg.sub"));  // the child stays loaded
    CHECK(sys.size() == 1);
    CHECK(sys.lock_count() == 0);

    // Importing the child again is a hit: its parent is not re-imported.
    CHECK(sys.import_module("pkg.sub")->value == 5);
    CHECK(pkg_runs == 1);
    CHECK_FALSE(sys.contains("pkg"));

    fail = false;
    const auto pkg = sys.import_module("pkg");
    CHECK(pkg_runs == 2);
    CHECK(sub_runs == 1);
    CHECK(pkg->dep == sys.get("pkg.sub"));
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a child whose parent is not found", "[semantics][hierarchy]",
                        all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    define_counting(sys, "ghost.child", runs);
    const auto e = expect_throw<module_not_found_error>([&] { sys.import_module("ghost.child"); });
    CHECK(e.key() == "ghost");
    CHECK(std::string(e.what()).rfind("no module named 'ghost'", 0) == 0);
    CHECK(runs == 0);
    CHECK_FALSE(sys.contains("ghost"));
    CHECK_FALSE(sys.contains("ghost.child"));
    CHECK(sys.size() == 0);

    // A failing parent fails the child with the parent's exception.
    sys.finder().define("broken", [](test_module&, importer_t&) { throw loader_failure{9}; });
    define_counting(sys, "broken.child", runs);
    CHECK(expect_throw<loader_failure>([&] { sys.import_module("broken.child"); }).code == 9);
    CHECK(runs == 0);
    // A blocked parent halts the child.
    sys.block("ghost");
    sys.finder().define("ghost", [](test_module&, importer_t&) {});
    CHECK(expect_throw<import_halted_error>([&] { sys.import_module("ghost.child"); }).key() ==
          "ghost");
    CHECK(runs == 0);
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------------------
// module_traits<M>::bind_child

namespace {

struct bound_module;

struct bind_record {
    const bound_module* parent = nullptr;
    std::string child_key;
    std::shared_ptr<bound_module> child;
    bool child_initializing = false;   // is_initializing(child) during bind_child
    bool child_registered = false;     // contains(child) during bind_child
    bool parent_initializing = false;  // is_initializing(parent) during bind_child
};

struct bind_probe {
    std::function<bool(const std::string&)> is_initializing;
    std::function<bool(const std::string&)> contains;
    std::vector<bind_record> records;
    bool reject = false;
};

struct bind_failure {
    std::string child_key;
};

struct bound_module {
    bind_probe* probe = nullptr;  // set by the loader of a parent that records its children
    int value = 0;
};

}  // namespace

template <>
struct importlock::module_traits<bound_module> {
    template <class Key>
    static void bind_child(bound_module& parent, const Key& child_key,
                           const std::shared_ptr<bound_module>& child) {
        if (parent.probe == nullptr) return;
        bind_probe& p = *parent.probe;
        const auto parent_key = importlock::key_traits<Key>::parent(child_key);
        p.records.push_back({&parent, child_key, child, p.is_initializing(child_key),
                             p.contains(child_key), parent_key && p.is_initializing(*parent_key)});
        if (p.reject) throw bind_failure{child_key};
    }
};

namespace {

template <class Policy>
using bound_system_t = importlock::basic_import_system<std::string, bound_module, Policy>;
using bound_importer_t = importlock::importer<std::string, bound_module>;

}  // namespace

TEMPLATE_LIST_TEST_CASE("semantics: bind_child offers a loaded child to its parent",
                        "[semantics][hierarchy][bind]", all_policies) {
    bound_system_t<TestType> sys;
    bind_probe probe;
    probe.is_initializing = [&](const std::string& key) { return sys.is_initializing(key); };
    probe.contains = [&](const std::string& key) { return sys.contains(key); };
    const auto package = [&](bound_module& m, bound_importer_t&) { m.probe = &probe; };
    const auto leaf = [](bound_module& m, bound_importer_t&) { m.value = 1; };
    sys.finder().define("pkg", package);
    sys.finder().define("pkg.sub", package);
    sys.finder().define("pkg.sub.mod", leaf);
    sys.finder().define("top", leaf);

    sys.import_module("top");
    CHECK(probe.records.empty());  // a top-level key has no parent

    const auto mod = sys.import_module("pkg.sub.mod");
    REQUIRE(probe.records.size() == 2);
    CHECK(probe.records[0].parent == sys.get("pkg").get());
    CHECK(probe.records[0].child_key == "pkg.sub");
    CHECK(probe.records[0].child == sys.get("pkg.sub"));
    CHECK(probe.records[1].parent == sys.get("pkg.sub").get());
    CHECK(probe.records[1].child_key == "pkg.sub.mod");
    CHECK(probe.records[1].child == mod);
    for (const bind_record& r : probe.records) {
        CHECK(r.child_registered);
        CHECK(r.child_initializing);  // bound before it is marked initialised
        CHECK_FALSE(r.parent_initializing);
    }
    CHECK_FALSE(sys.is_initializing("pkg.sub.mod"));

    // Hits and reloads do not bind again.
    sys.import_module("pkg.sub.mod");
    sys.reload("pkg.sub.mod");
    CHECK(probe.records.size() == 2);
    // A re-import after erase does.
    REQUIRE(sys.erase("pkg.sub.mod"));
    const auto again = sys.import_module("pkg.sub.mod");
    REQUIRE(probe.records.size() == 3);
    CHECK(probe.records[2].child == again);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: bind_child sees a parent whose loader imports the child",
                        "[semantics][hierarchy][bind]", all_policies) {
    bound_system_t<TestType> sys;
    bind_probe probe;
    probe.is_initializing = [&](const std::string& key) { return sys.is_initializing(key); };
    probe.contains = [&](const std::string& key) { return sys.contains(key); };
    sys.finder().define("pkg", [&](bound_module& m, bound_importer_t& imp) {
        m.probe = &probe;
        imp.import_module("pkg.sub");
        m.value = 1;
    });
    sys.finder().define("pkg.sub", [](bound_module& m, bound_importer_t&) { m.value = 2; });
    const auto pkg = sys.import_module("pkg");
    REQUIRE(probe.records.size() == 1);
    CHECK(probe.records[0].parent == pkg.get());
    CHECK(probe.records[0].child == sys.get("pkg.sub"));
    CHECK(probe.records[0].child_initializing);
    CHECK(probe.records[0].parent_initializing);  // offered to the partial parent
    CHECK(pkg->value == 1);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a bind_child that throws fails the child's import",
                        "[semantics][hierarchy][bind][failure]", all_policies) {
    bound_system_t<TestType> sys;
    bind_probe probe;
    probe.is_initializing = [&](const std::string& key) { return sys.is_initializing(key); };
    probe.contains = [&](const std::string& key) { return sys.contains(key); };
    probe.reject = true;
    int child_runs = 0;
    sys.finder().define("pkg", [&](bound_module& m, bound_importer_t&) { m.probe = &probe; });
    sys.finder().define("pkg.sub", [&](bound_module& m, bound_importer_t&) {
        ++child_runs;
        m.value = 2;
    });

    const auto f = expect_throw<bind_failure>([&] { sys.import_module("pkg.sub"); });
    CHECK(f.child_key == "pkg.sub");
    CHECK(child_runs == 1);
    CHECK_FALSE(sys.contains("pkg.sub"));
    CHECK(sys.get("pkg.sub") == nullptr);
    CHECK(sys.contains("pkg"));  // the parent is unaffected
    CHECK(sys.size() == 1);
    CHECK(sys.lock_count() == 0);

    probe.reject = false;
    const auto sub = sys.import_module("pkg.sub");
    CHECK(child_runs == 2);
    CHECK(sub->value == 2);
    REQUIRE(probe.records.size() == 2);
    CHECK(probe.records[1].child == sub);
    CHECK(sys.lock_count() == 0);
}

// A first load through import_ref leaves the module's one owner in the registry (no
// reference count taken for the caller), but bind_child still gets an owning child.
TEMPLATE_LIST_TEST_CASE("semantics: import_ref's first load owns nothing but binds an owner",
                        "[semantics][hierarchy][bind][import_ref]", all_policies) {
    bound_system_t<TestType> sys;
    bind_probe probe;
    probe.is_initializing = [&](const std::string& key) { return sys.is_initializing(key); };
    probe.contains = [&](const std::string& key) { return sys.contains(key); };
    sys.finder().define("pkg", [&](bound_module& m, bound_importer_t&) { m.probe = &probe; });
    sys.finder().define("pkg.mod", [](bound_module& m, bound_importer_t&) { m.value = 7; });
    sys.finder().define("top", [](bound_module& m, bound_importer_t&) { m.value = 3; });

    bound_module& top = sys.import_ref("top");
    CHECK(top.value == 3);
    std::weak_ptr<bound_module> top_owner = sys.get("top");
    CHECK(top_owner.lock().get() == &top);
    CHECK(top_owner.use_count() == 1);  // the registry's only
    REQUIRE(sys.erase("top"));
    CHECK(top_owner.expired());  // nobody else kept it

    bound_module& mod = sys.import_ref("pkg.mod");
    CHECK(mod.value == 7);
    REQUIRE(probe.records.size() == 1);
    CHECK(probe.records[0].child.get() == &mod);
    CHECK(probe.records[0].child.use_count() == 2);  // the registry's and the parent's
    // The parent's child outlives the registration: it owns the module.
    REQUIRE(sys.erase("pkg.mod"));
    CHECK(probe.records[0].child.use_count() == 1);
    CHECK(probe.records[0].child->value == 7);
    CHECK(sys.lock_count() == 0);
}

namespace {

struct counted_module {
    static inline int live = 0;
    counted_module() { ++live; }
    counted_module(const counted_module&) = delete;
    ~counted_module() { --live; }
    int value = 0;
};

}  // namespace

TEMPLATE_LIST_TEST_CASE("semantics: a failed first load through import_ref destroys the module",
                        "[semantics][failure][import_ref]", all_policies) {
    using system_t = importlock::basic_import_system<std::string, counted_module, TestType>;
    using importer_type = importlock::importer<std::string, counted_module>;
    counted_module::live = 0;
    {
        system_t sys;
        int runs = 0;
        sys.finder().define("flaky", [&](counted_module& m, importer_type&) {
            CHECK(counted_module::live == 1);  // registered before its loader runs
            if (++runs == 1) throw loader_failure{5};
            m.value = 5;
        });
        CHECK(expect_throw<loader_failure>([&] { sys.import_ref("flaky"); }).code == 5);
        CHECK(counted_module::live == 0);  // destroyed before the caller saw the error
        CHECK_FALSE(sys.contains("flaky"));
        CHECK(sys.import_ref("flaky").value == 5);  // a later import runs the loader again
        CHECK(runs == 2);
        CHECK(counted_module::live == 1);
        CHECK(sys.lock_count() == 0);
    }
    CHECK(counted_module::live == 0);
}

// ---------------------------------------------------------------------------------------
// Specs: factories and loaders

namespace {

struct no_default_module {
    explicit no_default_module(int v) : value(v) {}
    int value;
};

}  // namespace

TEMPLATE_LIST_TEST_CASE("semantics: define(key, loader, factory) uses the factory",
                        "[semantics][spec]", all_policies) {
    system_t<TestType> sys;
    std::vector<std::string> factory_keys;
    const test_module* made = nullptr;
    int value_loader_saw = -1;
    sys.finder().define(
        "a",
        [&](test_module& m, importer_t&) {
            value_loader_saw = m.value;
            m.value += 1;
        },
        [&](const std::string& key) {
            factory_keys.push_back(key);
            auto m = std::make_shared<test_module>();
            m->value = 100;
            made = m.get();
            return m;
        });
    const auto a = sys.import_module("a");
    CHECK(a.get() == made);
    CHECK(value_loader_saw == 100);
    CHECK(a->value == 101);
    CHECK(factory_keys == std::vector<std::string>{"a"});
    sys.import_module("a");
    CHECK(factory_keys.size() == 1);
    // reload re-runs the loader on the same object, without the factory.
    sys.reload("a");
    CHECK(a->value == 102);
    CHECK(factory_keys.size() == 1);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a factory returning null gives import_error",
                        "[semantics][spec]", all_policies) {
    system_t<TestType> sys;
    int runs = 0;
    sys.finder().define(
        "a", [&](test_module&, importer_t&) { ++runs; },
        [](const std::string&) { return std::shared_ptr<test_module>(); });
    const auto e = expect_throw<import_error>([&] { sys.import_module("a"); });
    CHECK(e.key() == "a");
    CHECK(contains_text(e.what(), "'a'"));
    CHECK(contains_text(e.what(), "null"));
    CHECK(runs == 0);
    CHECK_FALSE(sys.contains("a"));
    CHECK(sys.size() == 0);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a module type without a default constructor needs a factory",
                        "[semantics][spec]", all_policies) {
    using importer_nd = importlock::importer<std::string, no_default_module>;
    importlock::basic_import_system<std::string, no_default_module, TestType> sys;
    int runs = 0;
    sys.finder().define("plain", [&](no_default_module&, importer_nd&) { ++runs; });
    const auto e = expect_throw<import_error>([&] { sys.import_module("plain"); });
    CHECK(e.key() == "plain");
    CHECK(contains_text(e.what(), "'plain'"));
    CHECK(contains_text(e.what(), "factory"));
    CHECK(runs == 0);
    CHECK_FALSE(sys.contains("plain"));

    sys.finder().define(
        "made", [&](no_default_module& m, importer_nd&) { m.value *= 2; },
        [](const std::string&) { return std::make_shared<no_default_module>(21); });
    CHECK(sys.import_module("made")->value == 42);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a spec without a loader gives import_error",
                        "[semantics][spec]", all_policies) {
    system_t<TestType> sys;
    sys.finder().define("empty_loader",
                        importlock::module_spec<std::string, test_module>::loader_type{});
    const auto e = expect_throw<import_error>([&] { sys.import_module("empty_loader"); });
    CHECK(e.key() == "empty_loader");
    CHECK(contains_text(e.what(), "'empty_loader'"));
    CHECK(contains_text(e.what(), "loader"));
    CHECK_FALSE(sys.contains("empty_loader"));

    sys.finder().define("empty_spec", importlock::module_spec<std::string, test_module>{});
    CHECK(expect_throw<import_error>([&] { sys.import_module("empty_spec"); }).key() ==
          "empty_spec");
    CHECK(sys.size() == 0);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a factory that imports its own key gets circular_import_error",
                        "[semantics][spec][cycle]", all_policies) {
    // No module object exists yet, so even the partial-module policies cannot hand one out.
    system_t<TestType> sys;
    int runs = 0;
    sys.finder().define(
        "a", [&](test_module&, importer_t&) { ++runs; },
        [&](const std::string& key) {
            sys.import_module(key);
            return std::make_shared<test_module>();
        });
    const auto e = expect_throw<circular_import_error>([&] { sys.import_module("a"); });
    CHECK(e.chain() == std::vector<std::string>{"a", "a"});
    CHECK(runs == 0);
    CHECK_FALSE(sys.contains("a"));
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------------------
// Key types

namespace {

// A hierarchical key known only through its key_traits: no operator==, no std::hash.
struct tree_key {
    std::string path;  // "a/b/c"
};

// A key with hash and equality but no way to print it.
struct opaque_key {
    int id = 0;
    bool operator==(const opaque_key&) const = default;
};

}  // namespace

template <>
struct importlock::key_traits<tree_key> {
    struct hasher {
        std::size_t operator()(const tree_key& key) const noexcept {
            return std::hash<std::string>{}(key.path);
        }
    };
    struct key_equal {
        bool operator()(const tree_key& x, const tree_key& y) const noexcept {
            return x.path == y.path;
        }
    };
    static std::string to_string(const tree_key& key) { return "/" + key.path; }
    static std::optional<tree_key> parent(const tree_key& key) {
        const auto slash = key.path.rfind('/');
        if (slash == std::string::npos) return std::nullopt;
        return tree_key{key.path.substr(0, slash)};
    }
};

template <>
struct std::hash<opaque_key> {
    std::size_t operator()(const opaque_key& key) const noexcept {
        return std::hash<int>{}(key.id);
    }
};

static_assert(importlock::import_key<tree_key>);
static_assert(importlock::import_key<opaque_key>);

TEMPLATE_LIST_TEST_CASE("semantics: int keys", "[semantics][keys]", all_policies) {
    importlock::basic_import_system<int, test_module, TestType> sys;
    using importer_int = importlock::importer<int, test_module>;
    std::vector<int> order;
    sys.finder().define(12, [&](test_module& m, importer_int& imp) {
        order.push_back(12);
        m.dep = imp.import_module(3);
        m.value = 12;
    });
    sys.finder().define(3, [&](test_module& m, importer_int&) {
        order.push_back(3);
        m.value = 3;
    });
    const auto twelve = sys.import_module(12);
    CHECK(twelve->value == 12);
    CHECK(twelve->dep->value == 3);
    CHECK(order == std::vector<int>{12, 3});  // no hierarchy: 12 is not 1's child
    CHECK_FALSE(sys.contains(1));
    CHECK(sys.import_module(12) == twelve);

    const auto e = expect_throw<module_not_found_error>([&] { sys.import_module(404); });
    CHECK(e.key() == "404");
    CHECK(std::string(e.what()).rfind("no module named '404'", 0) == 0);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a user key with a key_traits specialisation",
                        "[semantics][keys]", all_policies) {
    importlock::basic_import_system<tree_key, test_module, TestType> sys;
    using importer_tree = importlock::importer<tree_key, test_module>;
    std::vector<std::string> order;
    for (const std::string path : {"a", "a/b", "a/b/c"}) {
        sys.finder().define(tree_key{path}, [&, path](test_module& m, importer_tree&) {
            order.push_back(path);
            m.value = static_cast<int>(path.size());
        });
    }
    const auto c = sys.import_module(tree_key{"a/b/c"});
    CHECK(c->value == 5);
    CHECK(order == std::vector<std::string>{"a", "a/b", "a/b/c"});
    CHECK(sys.contains(tree_key{"a"}));
    CHECK(sys.contains(tree_key{"a/b"}));
    CHECK(sys.import_module(tree_key{"a/b/c"}) == c);
    CHECK(sys.size() == 3);

    // Errors format keys through the trait.
    sys.finder().define(tree_key{"x/y"}, [](test_module&, importer_tree&) {});
    const auto e =
        expect_throw<module_not_found_error>([&] { sys.import_module(tree_key{"x/y"}); });
    CHECK(e.key() == "/x");
    CHECK(std::string(e.what()).rfind("no module named '/x'", 0) == 0);

    if constexpr (is_strict<TestType>) {
        sys.finder().define(tree_key{"p"}, [](test_module&, importer_tree& imp) {
            imp.import_module(tree_key{"q"});
        });
        sys.finder().define(tree_key{"q"}, [](test_module&, importer_tree& imp) {
            imp.import_module(tree_key{"p"});
        });
        const auto cycle =
            expect_throw<circular_import_error>([&] { sys.import_module(tree_key{"p"}); });
        CHECK(cycle.chain() == std::vector<std::string>{"/p", "/q", "/p"});
    }
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: an unprintable key type", "[semantics][keys]", all_policies) {
    importlock::basic_import_system<opaque_key, test_module, TestType> sys;
    using importer_opaque = importlock::importer<opaque_key, test_module>;
    sys.finder().define(opaque_key{1}, [](test_module& m, importer_opaque&) { m.value = 1; });
    CHECK(sys.import_module(opaque_key{1})->value == 1);

    const auto missing =
        expect_throw<module_not_found_error>([&] { sys.import_module(opaque_key{2}); });
    CHECK(missing.key() == "<unprintable key>");
    CHECK(contains_text(missing.what(), "<unprintable key>"));

    sys.block(opaque_key{3});
    const auto halted =
        expect_throw<import_halted_error>([&] { sys.import_module(opaque_key{3}); });
    CHECK(contains_text(halted.what(), "<unprintable key>"));

    const auto not_loaded = expect_throw<import_error>([&] { sys.reload(opaque_key{4}); });
    CHECK(contains_text(not_loaded.what(), "<unprintable key>"));
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------------------
// Instances, no_locks

TEMPLATE_LIST_TEST_CASE("semantics: two instances are independent", "[semantics]", all_policies) {
    system_t<TestType> first;
    system_t<TestType> second;
    int first_runs = 0;
    int second_runs = 0;
    define_counting(first, "a", first_runs, 1);
    define_counting(second, "a", second_runs, 2);

    const auto a1 = first.import_module("a");
    CHECK(first_runs == 1);
    CHECK(second_runs == 0);
    CHECK_FALSE(second.contains("a"));
    const auto a2 = second.import_module("a");
    CHECK(a1 != a2);
    CHECK(a1->value == 1);
    CHECK(a2->value == 2);

    CHECK(first.erase("a"));
    CHECK(second.get("a") == a2);
    first.block("a");
    CHECK(second.import_module("a") == a2);
    CHECK_FALSE(second.is_blocked("a"));
    CHECK(first.size() == 0);
    CHECK(second.size() == 1);

    // A loader of one system may import from the other.
    define_counting(second, "shared", second_runs, 7);
    first.finder().define("user", [&](test_module& m, importer_t&) {
        m.dep = second.import_module("shared");
        m.value = m.dep->value;
    });
    CHECK(first.import_module("user")->value == 7);
    CHECK(second.contains("shared"));
    CHECK_FALSE(first.contains("shared"));
    CHECK(first.lock_count() == 0);
    CHECK(second.lock_count() == 0);
}

TEST_CASE("semantics: no_locks imports re-entrantly on one thread", "[semantics][no_locks]") {
    system_t<importlock::no_locks> sys;
    std::vector<std::string> order;
    sys.finder().define("a", [&](test_module& m, importer_t& imp) {
        order.push_back("a");
        m.dep = imp.import_module("b");
        m.value = m.dep->value + 1;
        // Other members from inside a loader.
        CHECK(sys.contains("b"));
        CHECK(sys.reload("b")->value == 2);
        CHECK(sys.erase("b"));
        sys.import_module("b");
    });
    sys.finder().define("b", [&](test_module& m, importer_t& imp) {
        order.push_back("b");
        m.dep = imp.import_module("c");
        m.seen = &imp.import_ref("a");  // partial
        m.value = m.dep->value + 1;
    });
    sys.finder().define("c", [&](test_module& m, importer_t&) {
        order.push_back("c");
        m.value = 1;
    });
    const auto a = sys.import_module("a");
    CHECK(a->value == 3);
    CHECK(order == std::vector<std::string>{"a", "b", "c", "b", "b"});
    CHECK(sys.get("b")->seen == a.get());
    CHECK(sys.size() == 3);
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------------------
// Single-phase modules (define_value)

TEMPLATE_LIST_TEST_CASE("semantics: a single-phase module is registered only when built",
                        "[semantics][single_phase]", all_policies) {
    system_t<TestType> sys;
    int builds = 0;
    bool registered_while_building = true;
    std::size_t size_while_building = 99;
    sys.finder().define_value("v", [&](importer_t& imp) {
        ++builds;
        test_module m;
        m.dep = imp.import_module("dep");
        registered_while_building = sys.contains("v") || sys.is_initializing("v");
        size_while_building = sys.size();
        m.value = m.dep->value + 1;
        return m;  // by value
    });
    int dep_runs = 0;
    define_counting(sys, "dep", dep_runs, 4);

    const auto v = sys.import_module("v");
    CHECK(v->value == 5);
    CHECK(builds == 1);
    CHECK_FALSE(registered_while_building);
    CHECK(size_while_building == 1);  // only dep, registered by its own import
    CHECK(sys.import_module("v") == v);
    CHECK(&sys.import_ref("v") == v.get());
    CHECK(builds == 1);
    CHECK(sys.size() == 2);

    // A shared_ptr result is kept as is.
    const test_module* made = nullptr;
    sys.finder().define_value("p", [&](importer_t&) {
        auto m = std::make_shared<test_module>();
        made = m.get();
        return m;
    });
    CHECK(sys.import_module("p").get() == made);

    // It cannot be reloaded in place.
    const auto e = expect_throw<import_error>([&] { sys.reload("v"); });
    CHECK(e.key() == "v");
    CHECK(contains_text(e.what(), "'v'"));
    CHECK(sys.import_module("v") == v);
    CHECK(builds == 1);
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a cycle through a single-phase module always throws",
                        "[semantics][single_phase][cycle]", all_policies) {
    system_t<TestType> sys;
    sys.finder().define_value("v", [](importer_t& imp) {
        test_module m;
        m.dep = imp.import_module("w");
        return m;
    });
    sys.finder().define("w",
                        [](test_module& m, importer_t& imp) { m.dep = imp.import_module("v"); });
    const auto e = expect_throw<circular_import_error>([&] { sys.import_module("v"); });
    CHECK(e.chain() == std::vector<std::string>{"v", "w", "v"});
    CHECK_FALSE(sys.contains("v"));
    CHECK_FALSE(sys.contains("w"));
    CHECK(sys.size() == 0);

    sys.finder().define_value("self", [](importer_t& imp) {
        test_module m;
        m.dep = imp.import_module("self");
        return m;
    });
    CHECK(expect_throw<circular_import_error>([&] { sys.import_module("self"); }).chain() ==
          std::vector<std::string>{"self", "self"});
    CHECK(sys.lock_count() == 0);
}

TEMPLATE_LIST_TEST_CASE("semantics: a single-phase builder returning null gives import_error",
                        "[semantics][single_phase]", all_policies) {
    system_t<TestType> sys;
    sys.finder().define_value("v", [](importer_t&) { return std::shared_ptr<test_module>(); });
    const auto e = expect_throw<import_error>([&] { sys.import_module("v"); });
    CHECK(e.key() == "v");
    CHECK(contains_text(e.what(), "null"));
    CHECK_FALSE(sys.contains("v"));
    CHECK(sys.lock_count() == 0);
}

// ---------------------------------------------------------------------------------------
// Module destructors run outside the state mutex

namespace {

// A mutex that knows whether the calling thread holds it.
struct tracking_mutex {
    void lock() {
        mutex.lock();
        held_by_this_thread = true;
    }
    void unlock() {
        held_by_this_thread = false;
        mutex.unlock();
    }

    static inline thread_local bool held_by_this_thread = false;
    std::mutex mutex;
};

using tracking_policy =
    importlock::basic_per_key_locks<tracking_mutex, std::condition_variable_any>;

struct tracked_module {
    // Appends, on destruction, whether the system's state mutex was held: a destructor that
    // touches the system (imports, lock_count, erase) would deadlock there.
    std::vector<bool>* destructions = nullptr;
    ~tracked_module() {
        if (destructions != nullptr) destructions->push_back(tracking_mutex::held_by_this_thread);
    }
};

using tracked_system =
    importlock::basic_import_system<std::string, tracked_module, tracking_policy>;
using tracked_importer = importlock::importer<std::string, tracked_module>;

}  // namespace

TEST_CASE("semantics: module destructors never run under the state mutex", "[semantics][destroy]") {
    std::vector<bool> destructions;
    const auto track = [&](tracked_module& m, tracked_importer&) {
        m.destructions = &destructions;
    };
    const auto tracked_factory = [&](const std::string&) {
        auto m = std::make_shared<tracked_module>();
        m->destructions = &destructions;
        return m;
    };

    SECTION("erase") {
        tracked_system sys;
        sys.finder().define("a", track);
        sys.import_module("a");
        REQUIRE(sys.erase("a"));
        CHECK(destructions == std::vector<bool>{false});
    }
    SECTION("block of a loaded key") {
        tracked_system sys;
        sys.finder().define("a", track);
        sys.import_module("a");
        sys.block("a");
        CHECK(destructions == std::vector<bool>{false});
    }
    SECTION("a failing loader") {
        tracked_system sys;
        sys.finder().define("a", [&](tracked_module& m, tracked_importer&) {
            m.destructions = &destructions;
            throw loader_failure{1};
        });
        CHECK_THROWS_AS(sys.import_module("a"), loader_failure);
        CHECK(destructions == std::vector<bool>{false});
    }
    SECTION("the system's destruction") {
        {
            tracked_system sys;
            sys.finder().define("a", track);
            sys.import_module("a");
        }
        CHECK(destructions == std::vector<bool>{false});
    }
    SECTION("a key blocked while its factory runs") {
        // The factory stands in for another thread that blocks the key meanwhile.
        tracked_system sys;
        sys.finder().define(
            "a", [](tracked_module&, tracked_importer&) {},
            [&](const std::string& key) {
                sys.block(key);
                return tracked_factory(key);
            });
        CHECK_THROWS_AS(sys.import_module("a"), import_halted_error);
        CHECK(destructions == std::vector<bool>{false});
    }
    SECTION("a key blocked while its single-phase builder runs") {
        tracked_system sys;
        sys.finder().define_value("a", [&](tracked_importer&) {
            sys.block("a");
            return tracked_factory("a");
        });
        CHECK_THROWS_AS(sys.import_module("a"), import_halted_error);
        CHECK(destructions == std::vector<bool>{false});
    }
}
