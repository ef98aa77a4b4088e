// SPDX-License-Identifier: BSL-1.0
// The error hierarchy and its messages.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"

#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using importlock::circular_import_error;
using importlock::import_cancelled_error;
using importlock::import_error;
using importlock::import_halted_error;
using importlock::import_timeout_error;
using importlock::module_not_found_error;

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

std::vector<std::string> cycle_of(std::size_t imports) {
    // imports + 1 keys, first == last: k0 -> k1 -> ... -> k(n-1) -> k0
    std::vector<std::string> chain;
    for (std::size_t i = 0; i < imports; ++i) chain.push_back("k" + std::to_string(i));
    chain.push_back("k0");
    return chain;
}

}  // namespace

static_assert(std::is_base_of_v<std::runtime_error, import_error>);
static_assert(std::is_base_of_v<import_error, module_not_found_error>);
static_assert(std::is_base_of_v<import_error, import_halted_error>);
static_assert(std::is_base_of_v<import_error, circular_import_error>);
static_assert(std::is_base_of_v<import_error, import_timeout_error>);
static_assert(std::is_base_of_v<import_error, import_cancelled_error>);
static_assert(std::is_nothrow_copy_constructible_v<std::runtime_error>);

TEST_CASE("errors: every error is an import_error and a std::runtime_error", "[errors]") {
    const auto check_hierarchy = [](const auto& error, const std::string& key) {
        const import_error* as_import = &error;
        const std::runtime_error* as_runtime = &error;
        const std::exception* as_exception = &error;
        CHECK(as_import->key() == key);
        CHECK(std::string(as_runtime->what()) == error.what());
        CHECK(std::string(as_exception->what()) == error.what());
    };
    check_hierarchy(import_error("k", "message"), "k");
    check_hierarchy(module_not_found_error("k"), "k");
    check_hierarchy(import_halted_error("k"), "k");
    check_hierarchy(circular_import_error({"k", "j", "k"}, "why"), "k");
    check_hierarchy(import_timeout_error("k", std::this_thread::get_id()), "k");
    check_hierarchy(import_cancelled_error("k", std::this_thread::get_id()), "k");

    // Catchable through each base, as the same object.
    const auto caught_as_bases = [](auto thrown) {
        try {
            throw thrown;
        } catch (const import_error& e) {
            CHECK(dynamic_cast<const decltype(thrown)*>(&e) != nullptr);
            try {
                throw;
            } catch (const std::runtime_error& again) {
                CHECK(&again == &e);
                return true;
            }
        }
        return false;
    };
    CHECK(caught_as_bases(module_not_found_error("x")));
    CHECK(caught_as_bases(import_halted_error("x")));
    CHECK(caught_as_bases(circular_import_error({"x", "x"}, "self")));
    CHECK(caught_as_bases(import_timeout_error("x", std::thread::id{})));
    CHECK(caught_as_bases(import_cancelled_error("x", std::thread::id{})));
}

TEST_CASE("errors: messages name the key", "[errors]") {
    const import_error plain("pkg.mod", "something about pkg.mod");
    CHECK(std::string(plain.what()) == "something about pkg.mod");
    CHECK(plain.key() == "pkg.mod");

    const module_not_found_error missing("nope");
    CHECK(std::string(missing.what()) == "no module named 'nope'");
    CHECK(missing.key() == "nope");

    const import_halted_error halted("pkg.blocked");
    CHECK(contains(halted.what(), "'pkg.blocked'"));
    CHECK(contains(halted.what(), "halted"));
    CHECK(halted.key() == "pkg.blocked");

    const circular_import_error cycle({"a", "b", "a"}, "'a': this thread is already importing it");
    CHECK(contains(cycle.what(), "circular import"));
    CHECK(contains(cycle.what(), "a -> b -> a"));
    CHECK(contains(cycle.what(), "this thread is already importing it"));
    CHECK(cycle.key() == "a");

    // Timed and cancelled waits name the key and the thread that held it.
    const std::thread::id holder = std::this_thread::get_id();
    std::ostringstream holder_text;
    holder_text << holder;
    CHECK(import_timeout_error::describe(holder) == holder_text.str());

    const import_timeout_error timeout("slow", holder);
    CHECK(timeout.key() == "slow");
    CHECK(timeout.holder() == holder);
    CHECK(contains(timeout.what(), "'slow'"));
    CHECK(contains(timeout.what(), "timed out"));
    CHECK(contains(timeout.what(), holder_text.str()));

    const import_cancelled_error cancelled("slow", holder);
    CHECK(cancelled.key() == "slow");
    CHECK(cancelled.holder() == holder);
    CHECK(contains(cancelled.what(), "'slow'"));
    CHECK(contains(cancelled.what(), "cancelled"));
    CHECK(contains(cancelled.what(), holder_text.str()));
}

TEST_CASE("errors: chain() keeps the cycle, first and last equal", "[errors]") {
    const std::vector<std::string> keys{"a", "b", "c", "a"};
    const circular_import_error e(keys, "why");
    CHECK(e.chain() == keys);
    REQUIRE_FALSE(e.chain().empty());
    CHECK(e.chain().front() == e.chain().back());
    CHECK(e.key() == e.chain().front());

    const circular_import_error self({"s", "s"}, "why");
    CHECK(self.chain() == std::vector<std::string>{"s", "s"});
    CHECK(contains(self.what(), "s -> s"));

    // A long chain is kept whole in chain(), even when the message truncates it.
    const circular_import_error long_one(cycle_of(100), "why");
    CHECK(long_one.chain().size() == 101);
    CHECK(long_one.chain().front() == long_one.chain().back());
}

TEST_CASE("errors: format_chain keeps short chains whole", "[errors]") {
    CHECK(circular_import_error::format_chain({}) == "");
    CHECK(circular_import_error::format_chain({"a"}) == "a");
    CHECK(circular_import_error::format_chain({"a", "a"}) == "a -> a");
    CHECK(circular_import_error::format_chain({"a", "b", "a"}) == "a -> b -> a");
    // The longest chain kept whole: 9 keys (8 imports).
    CHECK(circular_import_error::format_chain(cycle_of(8)) ==
          "k0 -> k1 -> k2 -> k3 -> k4 -> k5 -> k6 -> k7 -> k0");
    CHECK_FALSE(contains(circular_import_error::format_chain(cycle_of(8)), "truncated"));
}

TEST_CASE("errors: format_chain truncates long chains visibly, keeping both ends", "[errors]") {
    const std::size_t imports = GENERATE(std::size_t{9}, std::size_t{16}, std::size_t{1000});
    INFO("imports " << imports);
    const std::vector<std::string> chain = cycle_of(imports);
    const std::string text = circular_import_error::format_chain(chain);
    CHECK(contains(text, "list truncated"));
    CHECK(contains(text, std::to_string(imports) + " imports"));
    // Both ends stay.
    CHECK(text.rfind("k0 -> k1 -> k2 -> k3 -> ", 0) == 0);
    const std::string tail = "k" + std::to_string(imports - 3) + " -> k" +
                             std::to_string(imports - 2) + " -> k" + std::to_string(imports - 1) +
                             " -> k0";
    REQUIRE(text.size() >= tail.size());
    CHECK(text.substr(text.size() - tail.size()) == tail);
    // The middle is gone: the message stays short whatever the chain length.
    CHECK_FALSE(contains(text, "k4 ->"));
    CHECK(text.size() < 120);
    // The error's message carries the same text.
    CHECK(contains(circular_import_error(chain, "why").what(), text));
}

TEST_CASE("errors: a circular_import_error with an empty chain has an empty key", "[errors]") {
    const circular_import_error e({}, "why");
    CHECK(e.key().empty());
    CHECK(e.chain().empty());
    CHECK(contains(e.what(), "circular import"));
}

// --- not_found_hint: how a key that no finder knows could be found -------------------------

TEST_CASE("errors: module_not_found_error appends a finder's hint", "[errors][hints]") {
    const module_not_found_error plain("db");
    REQUIRE(std::string(plain.what()) == "no module named 'db'");
    REQUIRE(plain.hint().empty());

    const module_not_found_error hinted("db", "define it with finder().define(\"db\", ...)");
    REQUIRE(std::string(hinted.what()) ==
            "no module named 'db'; define it with finder().define(\"db\", ...)");
    REQUIRE(hinted.key() == "db");
    REQUIRE(hinted.hint() == "define it with finder().define(\"db\", ...)");

    const module_not_found_error empty_hint("db", "");
    REQUIRE(std::string(empty_hint.what()) == "no module named 'db'");
}

namespace {

struct mod_for_hints {
    int value = 0;
};

struct finder_without_hint {
    std::optional<importlock::module_spec<std::string, mod_for_hints>> find_spec(
        const std::string&) const {
        return std::nullopt;
    }
};

}  // namespace

TEST_CASE("errors: the finders' not_found_hint", "[errors][hints]") {
    using registry = importlock::registry_finder<std::string, mod_for_hints>;
    using function = importlock::function_finder<std::string, mod_for_hints>;
    using meta_path = importlock::meta_path_finder<std::string, mod_for_hints>;

    STATIC_REQUIRE(importlock::has_not_found_hint<registry, std::string>);
    STATIC_REQUIRE(importlock::has_not_found_hint<function, std::string>);
    STATIC_REQUIRE(importlock::has_not_found_hint<meta_path, std::string>);
    STATIC_REQUIRE_FALSE(importlock::has_not_found_hint<finder_without_hint, std::string>);

    const registry r;
    REQUIRE(r.not_found_hint("db") == "define it with finder().define(\"db\", ...)");
    REQUIRE(importlock::not_found_hint_of(r, std::string("db")) == r.not_found_hint("db"));
    REQUIRE(importlock::not_found_hint_of(finder_without_hint{}, std::string("db")).empty());

    const function f;
    REQUIRE(contains(f.not_found_hint("db"), "function_finder"));

    meta_path m;
    REQUIRE(contains(m.not_found_hint("db"), "empty"));
    m.append(finder_without_hint{});
    REQUIRE(contains(m.not_found_hint("db"), "none of the 1 finders"));

    using chain =
        importlock::finder_chain<std::string, mod_for_hints, finder_without_hint, registry>;
    const chain c;
    REQUIRE(c.not_found_hint("db") ==
            "no finder in the chain found it; define it with finder().define(\"db\", ...)");
    using chain_without_hints =
        importlock::finder_chain<std::string, mod_for_hints, finder_without_hint>;
    REQUIRE(chain_without_hints{}.not_found_hint("db") == "no finder in the chain found it");

    // The text the import system builds from a finder's hint.
    const module_not_found_error e("db", r.not_found_hint("db"));
    REQUIRE(std::string(e.what()) ==
            "no module named 'db'; define it with finder().define(\"db\", ...)");
}

TEST_CASE("errors: a non-string key's hint is not quoted", "[errors][hints]") {
    const importlock::registry_finder<int, mod_for_hints> r;
    REQUIRE(r.not_found_hint(42) == "define it with finder().define(42, ...)");
}
