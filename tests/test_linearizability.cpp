// SPDX-License-Identifier: BSL-1.0
// Linearizability of the registry operations (issue 9): random concurrent histories
// of import / get / erase / block / reload on 1-2 keys from 3 threads, each checked
// against a sequential model of the registry with a Wing & Gong search (with
// memoisation, as in Lowe's and Horn & Kroening's checkers) for a linearization
// that respects real-time order.
//
// Each operation's invocation and response take a number from one atomic sequence
// counter; A precedes B in real time when A responded before B was invoked. Results
// are recorded as module identities (a load number the factory stamps into each
// module object), null, bool or an error kind. Histories come from real threads
// started together at a barrier, and from the schedule explorer (PCT) for controlled
// interleavings. Seeded from Catch2's seed; a failure prints the history.
//
// The model, per key: absent | ready(L) | blocked.
//   import   absent -> ready(L) with a load number L never made ready before, or a
//            loader failure (state unchanged); ready(L) -> L; blocked -> halted
//   get      null when not ready; L when ready(L); a module whose loader has not
//            finished yet (registered while initialising) is consistent with any state
//   erase    true and -> absent when ready or blocked; false when absent; refused
//            (import_error: an import or reload is in flight) when not blocked
//   block    -> blocked; refused (in flight) when not blocked
//   reload   ready(L) -> L, or a loader failure (stays ready(L)); absent ->
//            import_error; blocked -> halted
#include <importlock/importlock.hpp>

#include "support/catch.hpp"
#include "support/explored_locks.hpp"
#include "support/explorer_catch.hpp"
#include "support/schedule_explorer.hpp"
#include "support/watchdog.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

namespace explorer = importlock_test::explorer;
using importlock_test::watchdog;

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

struct lmodule {
    std::uint64_t load_no = 0;      // stamped by the factory: unique per key
    std::atomic<bool> done{false};  // set by the loader, last
};

struct loader_failure : std::runtime_error {
    loader_failure() : std::runtime_error("loader failure") {}
};

enum class op_kind { import, get, erase, block, reload };
enum class res_kind { module, null, yes, no, halted, loader_failure, import_error, initialising };

const char* name_of(op_kind k) {
    switch (k) {
        case op_kind::import: return "import";
        case op_kind::get: return "get";
        case op_kind::erase: return "erase";
        case op_kind::block: return "block";
        case op_kind::reload: return "reload";
    }
    return "?";
}

struct op_spec {
    op_kind kind;
    int key;
};

constexpr int thread_count = 3;
using program = std::array<std::vector<op_spec>, thread_count>;

// One completed operation of a history.
struct op_record {
    int thread = 0;
    op_spec spec{op_kind::get, 0};
    std::uint64_t inv = 0, resp = 0;
    res_kind result = res_kind::null;
    std::uint64_t load = 0;  // result == module / initialising
};

std::string describe(const op_record& r) {
    std::ostringstream out;
    out << "  [" << r.inv << ", " << r.resp << "] thread " << r.thread << ": "
        << name_of(r.spec.kind) << " k" << r.spec.key << " -> ";
    switch (r.result) {
        case res_kind::module: out << "module #" << r.load; break;
        case res_kind::initialising: out << "initialising module #" << r.load; break;
        case res_kind::null: out << "null"; break;
        case res_kind::yes: out << "true"; break;
        case res_kind::no: out << "false"; break;
        case res_kind::halted: out << "import_halted_error"; break;
        case res_kind::loader_failure: out << "loader failure"; break;
        case res_kind::import_error: out << "import_error"; break;
    }
    return out.str();
}

std::string describe(std::vector<op_record> history) {
    std::sort(history.begin(), history.end(),
              [](const op_record& a, const op_record& b) { return a.inv < b.inv; });
    std::string out;
    for (const op_record& r : history) out += describe(r) + "\n";
    return out;
}

program random_program(std::mt19937_64& rng, int keys) {
    program p;
    std::uniform_int_distribution<int> ops(3, 5);
    std::uniform_int_distribution<int> key(0, keys - 1);
    // import and get dominate; the others change the state now and then.
    std::discrete_distribution<int> kind({5, 3, 1, 1, 1});
    for (auto& thread : p) {
        const int n = ops(rng);
        for (int i = 0; i < n; ++i) thread.push_back({static_cast<op_kind>(kind(rng)), key(rng)});
    }
    return p;
}

// --- the checker ---------------------------------------------------------------------------

// Searches for a linearization of `history` (at most 32 operations) that the model
// accepts; returns whether one exists.
class linearizability_checker {
public:
    explicit linearizability_checker(std::vector<op_record> history) : ops_(std::move(history)) {}

    bool check() {
        if (ops_.size() > 32) throw std::logic_error("history too long for the checker");
        std::vector<key_state> state(2);
        return search(0, state);
    }

private:
    enum class status : unsigned char { absent, ready, blocked };
    struct key_state {
        status s = status::absent;
        std::uint64_t load = 0;
        bool operator==(const key_state&) const = default;
    };

    // Applies op to the state; returns false when the model cannot produce its result.
    bool apply(const op_record& op, std::vector<key_state>& state, std::uint32_t done) const {
        key_state& k = state[static_cast<std::size_t>(op.spec.key)];
        switch (op.spec.kind) {
            case op_kind::import:
                switch (op.result) {
                    case res_kind::module:
                        if (k.s == status::ready) return k.load == op.load;
                        if (k.s == status::blocked) return false;
                        if (used_before(op, done)) return false;
                        k = {status::ready, op.load};
                        return true;
                    case res_kind::loader_failure: return k.s == status::absent;
                    case res_kind::halted: return k.s == status::blocked;
                    default: return false;
                }
            case op_kind::get:
                switch (op.result) {
                    case res_kind::null: return k.s != status::ready;
                    case res_kind::module: return k.s == status::ready && k.load == op.load;
                    case res_kind::initialising: return true;
                    default: return false;
                }
            case op_kind::erase:
                switch (op.result) {
                    case res_kind::yes:
                        if (k.s == status::absent) return false;
                        k = {};
                        return true;
                    case res_kind::no: return k.s == status::absent;
                    case res_kind::import_error: return k.s != status::blocked;
                    default: return false;
                }
            case op_kind::block:
                switch (op.result) {
                    case res_kind::null: k = {status::blocked, 0}; return true;
                    case res_kind::import_error: return k.s != status::blocked;
                    default: return false;
                }
            case op_kind::reload:
                switch (op.result) {
                    case res_kind::module: return k.s == status::ready && k.load == op.load;
                    case res_kind::loader_failure: return k.s == status::ready;
                    case res_kind::import_error: return k.s == status::absent;
                    case res_kind::halted: return k.s == status::blocked;
                    default: return false;
                }
        }
        return false;
    }

    // Whether a linearized import (in `done`) already made op.load ready.
    bool used_before(const op_record& op, std::uint32_t done) const {
        for (std::size_t i = 0; i < ops_.size(); ++i) {
            const op_record& o = ops_[i];
            if ((done >> i & 1u) == 0 || &o == &op) continue;
            if (o.spec.kind == op_kind::import && o.result == res_kind::module &&
                o.spec.key == op.spec.key && o.load == op.load) {
                return true;
            }
        }
        return false;
    }

    bool search(std::uint32_t done, std::vector<key_state>& state) {
        if (done == full()) return true;
        const std::uint64_t memo_key = (static_cast<std::uint64_t>(done) << 32) ^ encode(state);
        if (!failed_.insert(memo_key).second) return false;
        // The earliest response among pending operations bounds the candidates:
        // an operation invoked after it cannot go first.
        std::uint64_t first_resp = UINT64_MAX;
        for (std::size_t i = 0; i < ops_.size(); ++i) {
            if ((done >> i & 1u) == 0) first_resp = std::min(first_resp, ops_[i].resp);
        }
        for (std::size_t i = 0; i < ops_.size(); ++i) {
            if ((done >> i & 1u) != 0 || ops_[i].inv > first_resp) continue;
            std::vector<key_state> next = state;
            if (!apply(ops_[i], next, done)) continue;
            if (search(done | (1u << i), next)) return true;
        }
        return false;
    }

    std::uint32_t full() const { return ops_.size() == 32 ? ~0u : (1u << ops_.size()) - 1u; }

    static std::uint64_t encode(const std::vector<key_state>& state) {
        std::uint64_t h = 0;
        for (const key_state& k : state) {
            h = h * 0x100000001B3ull ^ (static_cast<std::uint64_t>(k.s) << 20 ^ k.load);
        }
        return h & 0xFFFFFFFFull;
    }

    std::vector<op_record> ops_;
    std::unordered_set<std::uint64_t> failed_;  // (done, state) pairs known to fail
};

// --- running histories ---------------------------------------------------------------------

// A system and what its loaders need; `pause` is called inside loaders to widen
// the windows (std::this_thread::yield for real threads, explorer::yield under the
// explorer).
template <class Policy>
struct subject {
    using system_type = importlock::basic_import_system<std::string, lmodule, Policy>;

    explicit subject(void (*pause_fn)()) : pause(pause_fn) {
        for (int k = 0; k < 2; ++k) {
            const std::string key = "k" + std::to_string(k);
            sys.finder().define(
                key,
                [this](lmodule& m, importlock::importer<std::string, lmodule>&) {
                    pause();
                    // Every third loader run fails, first loads and reloads alike.
                    if (attempts.fetch_add(1) % 3 == 2) throw loader_failure();
                    pause();
                    m.done.store(true);
                },
                [this, k](const std::string&) {
                    auto m = std::make_shared<lmodule>();
                    m->load_no = ++created[static_cast<std::size_t>(k)];
                    return m;
                });
        }
    }

    op_record execute(int thread, const op_spec& spec) {
        op_record r;
        r.thread = thread;
        r.spec = spec;
        const std::string key = "k" + std::to_string(spec.key);
        const auto module_result = [&](const std::shared_ptr<lmodule>& m) {
            if (!m) {
                r.result = res_kind::null;
                return;
            }
            r.load = m->load_no;
            r.result = m->done.load() ? res_kind::module : res_kind::initialising;
        };
        r.inv = sequence.fetch_add(1);
        try {
            switch (spec.kind) {
                case op_kind::import: module_result(sys.import_module(key)); break;
                case op_kind::get: module_result(sys.get(key)); break;
                case op_kind::erase:
                    r.result = sys.erase(key) ? res_kind::yes : res_kind::no;
                    break;
                case op_kind::block:
                    sys.block(key);
                    r.result = res_kind::null;
                    break;
                case op_kind::reload: module_result(sys.reload(key)); break;
            }
        } catch (const importlock::import_halted_error&) {
            r.result = res_kind::halted;
        } catch (const importlock::import_error&) {
            r.result = res_kind::import_error;
        } catch (const loader_failure&) {
            r.result = res_kind::loader_failure;
        }
        r.resp = sequence.fetch_add(1);
        return r;
    }

    void (*pause)();
    std::atomic<std::uint64_t> sequence{0};
    std::atomic<int> attempts{0};
    std::array<std::uint64_t, 2> created{};  // factories run under a key's lock: no race
    system_type sys;
};

// What a batch of histories found.
struct verdict {
    std::size_t histories = 0;
    std::size_t overlapping = 0;  // histories with at least two concurrent operations
    std::string failure;          // the first history without a linearization
};

bool overlaps(const std::vector<op_record>& h) {
    for (std::size_t i = 0; i < h.size(); ++i) {
        for (std::size_t j = i + 1; j < h.size(); ++j) {
            if (h[i].inv < h[j].resp && h[j].inv < h[i].resp) return true;
        }
    }
    return false;
}

void judge(verdict& v, const std::vector<op_record>& history, const std::string& where) {
    ++v.histories;
    if (overlaps(history)) ++v.overlapping;
    if (!v.failure.empty()) return;
    if (!linearizability_checker(history).check()) {
        v.failure = where + ": no linearization of\n" + describe(history);
    }
}

// Runs `histories` random programs on real threads released by one barrier.
template <class Policy>
verdict real_thread_histories(std::uint64_t seed, std::size_t histories, int keys) {
    verdict v;
    std::mt19937_64 rng(seed);
    for (std::size_t h = 0; h < histories && v.failure.empty(); ++h) {
        const program p = random_program(rng, keys);
        subject<Policy> subj([] { std::this_thread::yield(); });
        std::array<std::vector<op_record>, thread_count> records;
        std::barrier start(thread_count);
        std::vector<std::thread> threads;
        for (int t = 0; t < thread_count; ++t) {
            threads.emplace_back([&, t] {
                start.arrive_and_wait();
                for (const op_spec& spec : p[static_cast<std::size_t>(t)]) {
                    records[static_cast<std::size_t>(t)].push_back(subj.execute(t, spec));
                }
            });
        }
        for (auto& thread : threads) thread.join();
        std::vector<op_record> history;
        for (const auto& r : records) history.insert(history.end(), r.begin(), r.end());
        judge(v, history, "history " + std::to_string(h) + " (seed " + std::to_string(seed) + ")");
    }
    return v;
}

// Runs `programs` random programs under the explorer (PCT, `schedules` each); each
// schedule's history is checked in the explorer's final check.
template <class Policy>
verdict explored_histories(std::uint64_t seed, std::size_t programs, std::size_t schedules,
                           int keys, std::size_t& explored) {
    verdict v;
    std::mt19937_64 rng(seed);
    for (std::size_t n = 0; n < programs && v.failure.empty(); ++n) {
        const program p = random_program(rng, keys);
        struct state {
            subject<Policy> subj{[] { explorer::yield("loader"); }};
            std::array<std::vector<op_record>, thread_count> records;
        };
        explorer::scenario<state> scen;
        for (int t = 0; t < thread_count; ++t) {
            scen.threads.push_back([ops = p[static_cast<std::size_t>(t)], t](state& s) {
                for (const op_spec& spec : ops) {
                    s.records[static_cast<std::size_t>(t)].push_back(s.subj.execute(t, spec));
                }
            });
        }
        scen.final_check = [&v, n](state& s) {
            std::vector<op_record> history;
            for (const auto& r : s.records) history.insert(history.end(), r.begin(), r.end());
            const bool was_ok = v.failure.empty();
            judge(v, history, "program " + std::to_string(n));
            explorer::check(!was_ok || v.failure.empty(), "not linearizable");
        };
        explorer::options opts;
        opts.name =
            std::string("linearizability program ") + std::to_string(n) + " [" + Policy::name + "]";
        opts.mode = explorer::strategy::pct;
        opts.seed = seed + n;
        opts.max_schedules = schedules;
        const explorer::result r = explorer::run(opts, scen);
        explored += r.schedules;
        if (!r.ok()) v.failure += "\n" + r.report();
    }
    return v;
}

void print(const std::string& what, const verdict& v, double seconds) {
    std::printf("linearizability: %s: %zu histories (%zu with overlapping operations), %.3g s\n",
                what.c_str(), v.histories, v.overlapping, seconds);
    std::fflush(stdout);
}

template <class F>
double timed(F&& f) {
    const auto start = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// --- the checker's own tests ----------------------------------------------------------------

op_record rec(int thread, op_kind kind, std::uint64_t inv, std::uint64_t resp, res_kind result,
              std::uint64_t load = 0) {
    op_record r;
    r.thread = thread;
    r.spec = {kind, 0};
    r.inv = inv;
    r.resp = resp;
    r.result = result;
    r.load = load;
    return r;
}

TEST_CASE("linearizability checker: accepts and rejects known histories", "[linearizability]") {
    using enum op_kind;
    using enum res_kind;
    // Two overlapping imports seeing one load: fine; sequential ones seeing two: not.
    CHECK(
        linearizability_checker({rec(0, import, 0, 3, module, 1), rec(1, import, 1, 2, module, 1)})
            .check());
    CHECK_FALSE(
        linearizability_checker({rec(0, import, 0, 1, module, 1), rec(1, import, 2, 3, module, 2)})
            .check());
    // An erase between them makes a second load legal, but only in real-time order.
    CHECK(linearizability_checker({rec(0, import, 0, 1, module, 1), rec(1, erase, 2, 3, yes),
                                   rec(0, import, 4, 5, module, 2)})
              .check());
    CHECK_FALSE(linearizability_checker({rec(0, import, 0, 1, module, 1), rec(1, erase, 4, 5, yes),
                                         rec(0, import, 2, 3, module, 2)})
                    .check());
    // A concurrent erase may go either side of a get.
    CHECK(linearizability_checker({rec(0, import, 0, 1, module, 1), rec(1, erase, 2, 5, yes),
                                   rec(0, get, 3, 4, module, 1)})
              .check());
    CHECK_FALSE(linearizability_checker({rec(0, import, 0, 1, module, 1), rec(1, erase, 2, 3, yes),
                                         rec(0, get, 4, 5, module, 1)})
                    .check());
    // A load number never comes back after an erase; a blocked key halts.
    CHECK_FALSE(linearizability_checker({rec(0, import, 0, 1, module, 1), rec(1, erase, 2, 3, yes),
                                         rec(0, import, 4, 5, module, 1)})
                    .check());
    CHECK(linearizability_checker({rec(0, block, 0, 1, null), rec(1, import, 2, 3, halted),
                                   rec(1, reload, 4, 5, halted)})
              .check());
    CHECK_FALSE(
        linearizability_checker({rec(0, block, 0, 1, null), rec(1, import, 2, 3, module, 1)})
            .check());
}

// --- histories of the import system ---------------------------------------------------------

using linearizability_policies =
    std::tuple<importlock::per_key_locks, importlock::singleflight_per_key_locks,
               importlock::global_lock>;

template <class Policy>
const char* policy_name() {
    if constexpr (std::is_same_v<Policy, importlock::per_key_locks>) return "per_key";
    if constexpr (std::is_same_v<Policy, importlock::singleflight_per_key_locks>)
        return "singleflight";
    return "global";
}

TEMPLATE_LIST_TEST_CASE("linearizability: real threads", "[linearizability]",
                        linearizability_policies) {
    watchdog dog("linearizability: real threads", std::chrono::seconds(240));
    const std::uint64_t seed = explorer::catch_seed();
    const std::size_t histories = under_tsan ? 400 : 1500;
    for (const int keys : {1, 2}) {
        verdict v;
        const double s = timed([&] {
            v = real_thread_histories<TestType>(seed + static_cast<std::uint64_t>(keys), histories,
                                                keys);
        });
        print(std::string(policy_name<TestType>()) + ", " + std::to_string(keys) +
                  " key(s), seed " + std::to_string(seed),
              v, s);
        INFO(v.failure);
        CHECK(v.failure.empty());
        CHECK(v.histories == histories);
    }
}

TEMPLATE_LIST_TEST_CASE("linearizability: explored interleavings", "[linearizability]",
                        importlock_test::explored_policies) {
    watchdog dog("linearizability: explored", std::chrono::seconds(240));
    const std::uint64_t seed = explorer::catch_seed();
    const std::size_t programs = under_tsan ? 10 : 25;
    const std::size_t schedules = under_tsan ? 20 : 40;
    for (const int keys : {1, 2}) {
        verdict v;
        std::size_t explored = 0;
        const double s = timed([&] {
            v = explored_histories<TestType>(seed + static_cast<std::uint64_t>(keys), programs,
                                             schedules, keys, explored);
        });
        print(std::string(TestType::name) + " (explorer, pct), " + std::to_string(keys) +
                  " key(s), seed " + std::to_string(seed),
              v, s);
        INFO(v.failure);
        CHECK(v.failure.empty());
        CHECK(explored == programs * schedules);
    }
}

}  // namespace
