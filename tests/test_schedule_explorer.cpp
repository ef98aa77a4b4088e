// SPDX-License-Identifier: BSL-1.0
// The import protocol under the schedule explorer (issue 9): small operation sets
// on 2-3 threads, every interleaving within a preemption bound of 2 (or a PCT sample),
// under per-key, strict, singleflight and global explored lock policies.
//
// After every step (all threads parked) the invariant asks only lock-free queries:
// a module the registry reports as ready (contains && !is_initializing) has its
// loader's last field set, a blocked key holds no module, a ready child is bound to
// its parent. After every schedule: no lock alive, nothing initialising, no waiter,
// each module object initialised at most once, and the scenario's own expectations.
// Each run prints how many schedules it explored.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/explored_locks.hpp"
#include "support/explorer_catch.hpp"
#include "support/schedule_explorer.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

// A module whose fields say how far its loader got. Atomics: a partial module is
// read by another thread through a cycle (the explorer serialises, but say so).
struct xmodule {
    std::atomic<int> loading{0};            // loader runs in progress on this object
    std::atomic<int> first_loads{0};        // runs that started with done == false
    std::atomic<int> completed{0};          // runs that returned
    std::atomic<std::uint64_t> load_no{0};  // the key's run number, stamped by the loader
    std::atomic<bool> failed{false};        // a run on this object threw
    std::atomic<bool> child_bound{false};   // a child was bound to this module
    std::atomic<bool> done{false};          // set last by the loader
};

}  // namespace

// bind_child parks too: a ready child must never be seen missing from its parent.
template <>
struct importlock::module_traits<xmodule> {
    template <class Key>
    static void bind_child(xmodule& parent, const Key& /*child_key*/,
                           const std::shared_ptr<xmodule>& /*child*/) {
        importlock_test::explorer::yield("bind_child");
        parent.child_bound.store(true);
    }
};

namespace {

namespace explorer = importlock_test::explorer;
using importlock_test::explored_policies;
using importlock_test::watchdog;

// The exception a failing loader throws; catchers compare its address.
struct loader_failure : std::runtime_error {
    explicit loader_failure(const std::string& key) : std::runtime_error("loader of " + key) {}
};

enum class failing { never, first_run, always };

// How one top-level operation of a thread ended.
struct outcome {
    std::string what;  // "import a"
    std::shared_ptr<xmodule> module;
    bool done = false;          // module->done when the call returned
    int loading = 0;            // module->loading when the call returned
    bool reload_began = false;  // a reload started while the call ran
    std::string error;          // "", halted, cycle, loader, timeout, import_error
    const void* exception = nullptr;
    bool value = false;  // erase's result
};

// What a loader's nested import got.
struct nested_import {
    std::string from, key;
    std::string got;  // full, partial, cycle, failed
};

template <class Policy>
struct world {
    using system_type = importlock::basic_import_system<std::string, xmodule, Policy>;

    std::vector<std::shared_ptr<xmodule>> created;  // every module object, in creation order
    std::map<std::string, int> runs;                // loader runs per key
    std::atomic<int> reloads_started{0};
    std::vector<nested_import> nested;
    std::array<std::vector<outcome>, 3> out;  // per explorer thread
    std::vector<std::string> keys;
    system_type sys;

    // Defines `key`: its loader imports `imports` in order (recording what each
    // nested import got, cycles included), then fails as `mode` says or sets done.
    void define(const std::string& key, std::vector<std::string> imports = {},
                failing mode = failing::never) {
        keys.push_back(key);
        sys.finder().define(
            key,
            [this, key, imports, mode](xmodule& m,
                                       importlock::importer<std::string, xmodule>& imp) {
                const bool first = !m.done.load();
                if (!first) reloads_started.fetch_add(1);
                m.loading.fetch_add(1);
                if (first) m.first_loads.fetch_add(1);
                const int run = ++runs[key];
                m.load_no.store(static_cast<std::uint64_t>(run));
                explorer::yield("loader running");
                for (const std::string& dep : imports) {
                    nested_import n{key, dep, {}};
                    try {
                        const std::shared_ptr<xmodule> d = imp.import_module(dep);
                        n.got = d->done.load() ? "full" : "partial";
                    } catch (const importlock::circular_import_error&) {
                        n.got = "cycle";
                    } catch (...) {
                        n.got = "failed";
                        nested.push_back(n);
                        m.loading.fetch_sub(1);
                        m.failed.store(true);
                        throw;
                    }
                    nested.push_back(n);
                }
                if (mode == failing::always || (mode == failing::first_run && run == 1)) {
                    m.loading.fetch_sub(1);
                    m.failed.store(true);
                    throw loader_failure(key);
                }
                m.loading.fetch_sub(1);
                m.completed.fetch_add(1);
                m.done.store(true);
            },
            [this](const std::string&) {
                auto m = std::make_shared<xmodule>();
                created.push_back(m);
                return m;
            });
    }

    // Runs one top-level operation of the calling explorer thread and records it.
    template <class Op>
    outcome& record(std::string what, Op op) {
        outcome o;
        o.what = std::move(what);
        const int reloads_before = reloads_started.load();
        try {
            op(o);
            if (o.module) {
                o.done = o.module->done.load();
                o.loading = o.module->loading.load();
            }
        } catch (const importlock::import_halted_error&) {
            o.error = "halted";
        } catch (const importlock::circular_import_error&) {
            o.error = "cycle";
        } catch (const importlock::import_timeout_error&) {
            o.error = "timeout";
        } catch (const importlock::import_error&) {
            o.error = "import_error";
        } catch (const loader_failure& e) {
            o.error = "loader";
            o.exception = &e;
        }
        o.reload_began = reloads_started.load() != reloads_before;
        auto& mine = out[static_cast<std::size_t>(explorer::thread_index())];
        mine.push_back(std::move(o));
        return mine.back();
    }

    void import(const std::string& key) {
        record("import " + key, [&](outcome& o) { o.module = sys.import_module(key); });
    }
    void import_ref(const std::string& key) {
        record("import_ref " + key, [&](outcome& o) {
            xmodule& m = sys.import_ref(key);
            o.module = sys.get(key);
            explorer::check(o.module.get() == &m, "import_ref and get disagree on " + key);
        });
    }
    template <class Duration>
    void import_for(const std::string& key, Duration timeout) {
        record("import_module_for " + key,
               [&](outcome& o) { o.module = sys.import_module_for(key, timeout); });
    }
    void reload(const std::string& key) {
        record("reload " + key, [&](outcome& o) { o.module = sys.reload(key); });
    }
    void erase(const std::string& key) {
        record("erase " + key, [&](outcome& o) { o.value = sys.erase(key); });
    }
    void block(const std::string& key) {
        record("block " + key, [&](outcome&) { sys.block(key); });
    }
    void clear() {
        record("clear", [&](outcome&) { sys.clear(); });
    }
    // Takes a snapshot and reads the dependency queries while imports run: an
    // uncontended claim is pinned by the snapshot (lock_protocol.hpp), and the
    // dependencies a loader records without the state mutex are read only once
    // its module is ready.
    void observe() {
        record("observe", [&](outcome&) {
            const importlock::import_snapshot snap = sys.snapshot();
            for (const auto& lock : snap.locks) {
                // Per-key locks are never re-entered; the global lock is, by a nested import.
                const std::size_t most = Policy::scope == importlock::lock_scope::global ? 2 : 1;
                explorer::check(lock.depth <= most, "snapshot: lock " + lock.key + " of depth " +
                                                        std::to_string(lock.depth));
                explorer::check(lock.depth != 0 || !lock.waiters.empty(),
                                "snapshot: lock " + lock.key + " neither held nor awaited");
                explorer::check((lock.depth != 0) == (lock.owner != std::thread::id{}),
                                "snapshot: lock " + lock.key + " with a holder and no depth");
            }
            for (const auto& t : snap.threads) {
                explorer::check(t.importing.size() <= 2,
                                "snapshot: a stack of " + std::to_string(t.importing.size()));
            }
            for (const std::string& key : keys) {
                const std::vector<std::string> deps = sys.dependencies(key);
                explorer::check(deps.empty() || sys.contains(key),
                                key + ": dependencies of an unloaded key");
                (void)sys.dependents(key);
            }
            explorer::check(sys.lock_count() <= 2,
                            "lock_count() == " + std::to_string(sys.lock_count()));
        });
    }

    // Every recorded outcome of every thread.
    std::vector<const outcome*> all() const {
        std::vector<const outcome*> v;
        for (const auto& per_thread : out) {
            for (const outcome& o : per_thread) v.push_back(&o);
        }
        return v;
    }

    // The outcomes named `what`.
    std::vector<const outcome*> of(const std::string& what) const {
        std::vector<const outcome*> v;
        for (const outcome* o : all()) {
            if (o->what == what) v.push_back(o);
        }
        return v;
    }

    // Returns the ready module of `key`, or null (lock-free queries only).
    std::shared_ptr<xmodule> ready(const std::string& key) const {
        if (!sys.contains(key) || sys.is_initializing(key)) return nullptr;
        return sys.get(key);
    }

    // After every step: what any thread could see in the registry is consistent.
    void invariant() const {
        for (const std::string& key : keys) {
            if (sys.is_blocked(key))
                explorer::check(!sys.contains(key), key + ": blocked and loaded");
            const std::shared_ptr<xmodule> m = ready(key);
            if (!m) continue;
            explorer::check(m->done.load(), key + " is ready but its loader has not finished");
            explorer::check(!m->failed.load(), key + " is ready but its loader threw");
            const auto dot = key.rfind('.');
            if (dot != std::string::npos) {
                const std::string parent = key.substr(0, dot);
                const std::shared_ptr<xmodule> p = sys.get(parent);
                explorer::check(p != nullptr, key + " is ready but its parent is not registered");
                explorer::check(p->child_bound.load(),
                                key + " is ready but not yet bound to its parent");
            }
        }
    }

    // After every schedule: quiescent, and no module object initialised twice; no
    // import returned a module whose loader was running (unless a reload began
    // meanwhile) or that was not finished.
    void final_check() const {
        explorer::check(sys.lock_count() == 0,
                        "lock_count() == " + std::to_string(sys.lock_count()) + " at the end");
        for (const std::string& key : keys) {
            explorer::check(!sys.is_initializing(key), key + " still initialising at the end");
            explorer::check(sys.waiter_count(key) == 0, key + " has waiters at the end");
            if (const auto m = sys.get(key)) {
                explorer::check(m->done.load() && m->loading.load() == 0,
                                key + " is registered unfinished at the end");
            }
        }
        for (std::size_t i = 0; i < created.size(); ++i) {
            explorer::check(created[i]->first_loads.load() <= 1,
                            "module object #" + std::to_string(i + 1) + " initialised " +
                                std::to_string(created[i]->first_loads.load()) + " times");
            explorer::check(created[i]->loading.load() == 0,
                            "module object #" + std::to_string(i + 1) + " still loading");
        }
        for (const outcome* o : all()) {
            if (!o->module) continue;
            explorer::check(o->done, o->what + " returned an unfinished module");
            explorer::check(o->loading == 0 || o->reload_began,
                            o->what + " returned a module whose loader was running");
        }
    }
};

template <class W>
int count_if_error(const W& w, const std::string& what, const std::string& error) {
    int n = 0;
    for (const outcome* o : w.of(what)) n += o->error == error ? 1 : 0;
    return n;
}

#if defined(__SANITIZE_THREAD__)
constexpr bool under_tsan = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool under_tsan = true;
#else
constexpr bool under_tsan = false;
#endif
#else
constexpr bool under_tsan = false;
#endif

// Returns the integer environment variable `name`, or `fallback`.
long env_or(const char* name, long fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') return fallback;
    return std::strtol(text, nullptr, 10);
}

// How many schedules a capped run may take: halved under ThreadSanitizer (each
// step costs ~10x); IMPORTLOCK_EXPLORER_SCALE multiplies it (e.g. 10 for a
// nightly run).
std::size_t budget(std::size_t schedules) {
    const long factor = env_or("IMPORTLOCK_EXPLORER_SCALE", 1);
    if (factor > 1) schedules *= static_cast<std::size_t>(factor);
    return under_tsan ? schedules / 2 : schedules;
}

// Exhaustive search within a preemption bound of 2 (IMPORTLOCK_EXPLORER_BOUND
// overrides it: 3 takes ~4x the schedules, -1 is unbounded).
explorer::options exhaustive(std::size_t schedules = 4000) {
    explorer::options opts;
    opts.mode = explorer::strategy::exhaustive;
    opts.preemption_bound = static_cast<int>(env_or("IMPORTLOCK_EXPLORER_BOUND", 2));
    opts.max_schedules = budget(schedules);
    opts.max_steps = 2000;
    return opts;
}

explorer::options pct(std::size_t schedules = 600) {
    explorer::options opts;
    opts.mode = explorer::strategy::pct;
    opts.pct_depth = 3;
    opts.seed = explorer::catch_seed();
    opts.max_schedules = budget(schedules);
    opts.max_steps = 2000;
    return opts;
}

// Explores `threads` on a world set up by `setup`, with the generic checks plus
// `expect` after each schedule; prints and checks the result.
template <class Policy>
void explore(const std::string& name, explorer::options opts,
             std::function<void(world<Policy>&)> setup,
             std::vector<std::function<void(world<Policy>&)>> threads,
             std::function<void(world<Policy>&)> expect = {}) {
    using W = world<Policy>;
    opts.name = name + " [" + Policy::name + "]";
    explorer::scenario<W> scen;
    scen.setup = std::move(setup);
    scen.threads = std::move(threads);
    scen.invariant = [](W& w) { w.invariant(); };
    scen.final_check = [expect = std::move(expect)](W& w) {
        w.final_check();
        if (expect) expect(w);
    };
    const explorer::result r = explorer::run(opts, scen);
    explorer::print(r);
    INFO(r.report());
    CHECK(r.ok());
}

template <class Policy>
constexpr bool is_strict_v =
    Policy::on_cycle == importlock::cycle_resolution::circular_import_error;

template <class Policy>
constexpr bool shares_failures_v =
    Policy::on_failure == importlock::failure_mode::waiters_share_failure;

// --- the scenarios --------------------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("explored: two threads import one key", "[explorer]", explored_policies) {
    watchdog dog("explored: same key");
    using W = world<TestType>;
    const auto expect = [](W& w) {
        explorer::check(w.runs["a"] == 1,
                        "the loader ran " + std::to_string(w.runs["a"]) + " times");
        const auto results = w.all();
        for (const outcome* o : results) {
            explorer::check(o->error.empty(), o->what + " failed: " + o->error);
            explorer::check(o->module == results.front()->module, "two module objects for a");
        }
    };
    SECTION("import / import") {
        explore<TestType>(
            "same key", exhaustive(), [](W& w) { w.define("a"); },
            {[](W& w) { w.import("a"); }, [](W& w) { w.import("a"); }}, expect);
    }
    SECTION("import, import_ref / import, import_ref / import (pct)") {
        explore<TestType>(
            "same key, three threads", pct(), [](W& w) { w.define("a"); },
            {[](W& w) {
                 w.import("a");
                 w.import_ref("a");
             },
             [](W& w) {
                 w.import_ref("a");
                 w.import("a");
             },
             [](W& w) { w.import("a"); }},
            expect);
    }
}

TEMPLATE_LIST_TEST_CASE("explored: snapshot and queries against imports", "[explorer]",
                        explored_policies) {
    watchdog dog("explored: snapshot vs import");
    using W = world<TestType>;
    const auto expect = [](W& w) {
        explorer::check(w.runs["a"] == 1 && w.runs["b"] == 1, "a or b loaded more than once");
        for (const outcome* o : w.all()) {
            explorer::check(o->error.empty(), o->what + " failed: " + o->error);
        }
        explorer::check(w.sys.dependencies("a") == std::vector<std::string>{"b"},
                        "a's dependency on b not recorded");
        explorer::check(w.sys.snapshot().empty(), "a snapshot after the imports is not empty");
    };
    SECTION("import a (imports b) / observe, observe") {
        explore<TestType>(
            "snapshot vs import", exhaustive(),
            [](W& w) {
                w.define("a", {"b"});
                w.define("b");
            },
            {[](W& w) { w.import("a"); },
             [](W& w) {
                 w.observe();
                 w.observe();
             }},
            expect);
    }
    SECTION("import a / import b, observe (pct)") {
        explore<TestType>(
            "snapshot vs two imports", pct(),
            [](W& w) {
                w.define("a", {"b"});
                w.define("b");
            },
            {[](W& w) { w.import("a"); },
             [](W& w) {
                 w.import("b");
                 w.observe();
             },
             [](W& w) { w.observe(); }},
            expect);
    }
}

TEMPLATE_LIST_TEST_CASE("explored: a hit against erase and re-import", "[explorer]",
                        explored_policies) {
    watchdog dog("explored: hit vs erase");
    using W = world<TestType>;
    explore<TestType>(
        "hit vs erase", exhaustive(),
        [](W& w) {
            w.define("a");
            w.sys.import_module("a");  // outside the schedule: loaded before the threads start
        },
        {[](W& w) {
             w.import("a");
             w.import("a");
         },
         [](W& w) {
             w.erase("a");
             w.import("a");
         }},
        [](W& w) {
            const auto erased = w.of("erase a");
            explorer::check(erased.size() == 1 && erased.front()->value, "erase a did not erase");
            explorer::check(w.runs["a"] == 2, "a loaded " + std::to_string(w.runs["a"]) + " times");
            explorer::check(w.ready("a") != nullptr, "a not ready at the end");
            // The re-import after the erase gets the new object.
            explorer::check(w.out[1].back().module == w.created.back(),
                            "the import after the erase did not get the new module");
        });
}

TEMPLATE_LIST_TEST_CASE("explored: block against import", "[explorer]", explored_policies) {
    watchdog dog("explored: block vs import");
    using W = world<TestType>;
    explore<TestType>(
        "block vs import", exhaustive(), [](W& w) { w.define("a"); },
        {[](W& w) { w.import("a"); }, [](W& w) { w.block("a"); }},
        [](W& w) {
            const outcome& imp = *w.of("import a").front();
            const outcome& blk = *w.of("block a").front();
            explorer::check(blk.error.empty() || blk.error == "import_error",
                            "block failed with " + blk.error);
            explorer::check(imp.error.empty() || imp.error == "halted",
                            "import failed with " + imp.error);
            if (blk.error.empty()) {
                explorer::check(w.sys.is_blocked("a") && !w.sys.contains("a"),
                                "a is not blocked after block succeeded");
            } else {
                // block refuses while a initialises: then the import finishes it.
                explorer::check(imp.error.empty() && w.ready("a"), "refused block, a not loaded");
            }
            if (imp.error == "halted") {
                explorer::check(blk.error.empty(), "import halted but block refused");
                explorer::check(w.runs["a"] == 0, "a halted import ran the loader");
            }
        });
}

TEMPLATE_LIST_TEST_CASE("explored: reload against import", "[explorer]", explored_policies) {
    watchdog dog("explored: reload vs import");
    using W = world<TestType>;
    SECTION("of a loaded key") {
        explore<TestType>(
            "reload vs import", exhaustive(),
            [](W& w) {
                w.define("a");
                w.sys.import_module("a");
            },
            {[](W& w) { w.reload("a"); },
             [](W& w) {
                 w.import("a");
                 w.import("a");
             }},
            [](W& w) {
                explorer::check(w.created.size() == 1, "reload created a module object");
                const xmodule& m = *w.created.front();
                explorer::check(w.runs["a"] == 2 && m.completed.load() == 2,
                                "the loader ran " + std::to_string(w.runs["a"]) + " times");
                for (const outcome* o : w.all()) {
                    explorer::check(o->error.empty(), o->what + " failed: " + o->error);
                    explorer::check(o->module.get() == &m, o->what + " got another object");
                }
            });
    }
    SECTION("racing the first import") {
        explore<TestType>(
            "reload vs first import", exhaustive(), [](W& w) { w.define("a"); },
            {[](W& w) { w.import("a"); }, [](W& w) { w.reload("a"); }},
            [](W& w) {
                const outcome& rel = *w.of("reload a").front();
                explorer::check(rel.error.empty() || rel.error == "import_error",
                                "reload failed with " + rel.error);
                explorer::check(w.runs["a"] == (rel.error.empty() ? 2 : 1),
                                "the loader ran " + std::to_string(w.runs["a"]) + " times");
                explorer::check(w.created.size() == 1, "two module objects for a");
            });
    }
}

TEMPLATE_LIST_TEST_CASE("explored: clear against import", "[explorer]", explored_policies) {
    watchdog dog("explored: clear vs import");
    using W = world<TestType>;
    explore<TestType>(
        "clear vs import", exhaustive(),
        [](W& w) {
            w.define("a", {"b"});
            w.define("b");
        },
        {[](W& w) { w.import("a"); }, [](W& w) { w.clear(); }},
        [](W& w) {
            for (const outcome* o : w.all()) {
                explorer::check(o->error.empty(), o->what + " failed: " + o->error);
            }
            explorer::check(w.runs["a"] == 1, "a loaded " + std::to_string(w.runs["a"]) + " times");
            // clear drops only ready modules: a, imported by the other thread, is
            // either still registered or was dropped after it became ready.
            explorer::check(w.runs["b"] == 1, "b loaded " + std::to_string(w.runs["b"]) + " times");
        });
}

TEMPLATE_LIST_TEST_CASE("explored: a failing loader with a waiter", "[explorer]",
                        explored_policies) {
    watchdog dog("explored: failing loader");
    using W = world<TestType>;
    SECTION("the first run fails") {
        explore<TestType>(
            "fails once", exhaustive(), [](W& w) { w.define("f", {}, failing::first_run); },
            {[](W& w) { w.import("f"); }, [](W& w) { w.import("f"); }},
            [](W& w) {
                const int failures = count_if_error(w, "import f", "loader");
                for (const outcome* o : w.all()) {
                    explorer::check(o->error.empty() || o->error == "loader",
                                    o->what + " failed with " + o->error);
                }
                if (failures == 2) {
                    explorer::check(shares_failures_v<TestType>,
                                    "a waiter got the failure instead of retrying");
                    const auto r = w.all();
                    explorer::check(r[0]->exception == r[1]->exception,
                                    "the waiter got another exception object");
                    explorer::check(w.runs["f"] == 1 && !w.sys.contains("f"),
                                    "a shared failure left f behind or ran again");
                } else {
                    explorer::check(failures == 1, std::to_string(failures) + " imports failed");
                    explorer::check(w.runs["f"] == 2 && w.ready("f") != nullptr,
                                    "the retry did not load f");
                }
            });
    }
    SECTION("every run fails") {
        explore<TestType>(
            "always fails", exhaustive(), [](W& w) { w.define("f", {}, failing::always); },
            {[](W& w) { w.import("f"); }, [](W& w) { w.import("f"); }},
            [](W& w) {
                explorer::check(count_if_error(w, "import f", "loader") == 2,
                                "an import of f did not fail");
                explorer::check(!w.sys.contains("f"), "the failed key is registered");
                const auto r = w.all();
                if (w.runs["f"] == 1) {
                    explorer::check(shares_failures_v<TestType>, "a waiter did not retry");
                    explorer::check(r[0]->exception == r[1]->exception,
                                    "the waiter got another exception object");
                } else {
                    explorer::check(w.runs["f"] == 2, "f ran " + std::to_string(w.runs["f"]));
                }
            });
    }
}

TEMPLATE_LIST_TEST_CASE("explored: a cross-thread cycle a -> b -> a", "[explorer]",
                        explored_policies) {
    watchdog dog("explored: cycle");
    using W = world<TestType>;
    explore<TestType>(
        "cycle", exhaustive(),
        [](W& w) {
            w.define("a", {"b"});
            w.define("b", {"a"});
        },
        {[](W& w) { w.import("a"); }, [](W& w) { w.import("b"); }},
        [](W& w) {
            for (const outcome* o : w.all()) {
                explorer::check(o->error.empty(), o->what + " failed: " + o->error);
            }
            explorer::check(w.runs["a"] == 1 && w.runs["b"] == 1, "a loader ran twice");
            explorer::check(w.nested.size() == 2, "expected two nested imports");
            int released = 0;
            for (const nested_import& n : w.nested) {
                if (n.got == "full") continue;
                ++released;
                explorer::check(n.got == (is_strict_v<TestType> ? "cycle" : "partial"),
                                n.from + " -> " + n.key + " got " + n.got);
            }
            explorer::check(released == 1, std::to_string(released) + " imports released");
        });
}

TEMPLATE_LIST_TEST_CASE("explored: parent and child keys", "[explorer]", explored_policies) {
    watchdog dog("explored: parent/child");
    using W = world<TestType>;
    const auto expect = [](W& w) {
        for (const outcome* o : w.all()) {
            explorer::check(o->error.empty(), o->what + " failed: " + o->error);
        }
        explorer::check(w.runs["p"] == 1 && w.runs["p.c"] == 1, "a loader ran twice");
        explorer::check(w.ready("p") && w.ready("p.c"), "p or p.c not ready");
        explorer::check(w.ready("p")->child_bound.load(), "p.c was not bound to p");
    };
    SECTION("independent parent") {
        explore<TestType>(
            "parent/child", exhaustive(),
            [](W& w) {
                w.define("p");
                w.define("p.c");
            },
            {[](W& w) { w.import("p.c"); }, [](W& w) { w.import("p"); }}, expect);
    }
    SECTION("a parent that imports its own child") {
        explore<TestType>(
            "package imports child", exhaustive(),
            [](W& w) {
                w.define("p", {"p.c"});
                w.define("p.c");
            },
            {[](W& w) { w.import("p.c"); }, [](W& w) { w.import("p"); }}, expect);
    }
}

TEMPLATE_LIST_TEST_CASE("explored: timed imports", "[explorer]", explored_policies) {
    watchdog dog("explored: timed imports");
    using W = world<TestType>;
    explorer::options opts = exhaustive(1000);
    opts.spurious_wakeups = 2;
    explore<TestType>(
        "timed", opts, [](W& w) { w.define("a"); },
        {[](W& w) { w.import("a"); }, [](W& w) { w.import_for("a", std::chrono::hours(1)); },
         [](W& w) { w.import_for("a", std::chrono::seconds(0)); }},
        [](W& w) {
            explorer::check(w.runs["a"] == 1, "a loaded " + std::to_string(w.runs["a"]) + " times");
            for (const outcome* o : w.all()) {
                const bool may_time_out = o->what == "import_module_for a" && o != w.out[1].data();
                explorer::check(o->error.empty() || (o->error == "timeout" && may_time_out),
                                o->what + " failed: " + o->error);
            }
        });
}

}  // namespace
