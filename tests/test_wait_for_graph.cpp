// SPDX-License-Identifier: BSL-1.0
// Unit tests of importlock::detail::wait_for_graph with a fake lock and int thread ids.
//
// Thread id 0 (int{}) means "free", so the tests use thread ids from 1. A deterministic part
// covers each shape of walk; a randomised part (abseil's style) checks find_cycle against a
// brute-force oracle over 100,000 random operations that keep the graph acyclic the way the
// import protocol does.
#include <importlock/importlock.hpp>

#include "support/catch.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <utility>
#include <vector>

namespace {

struct fake_lock {
    int holder = 0;  // 0: free
};

using graph = importlock::detail::wait_for_graph<fake_lock, int>;
using chain = std::vector<const fake_lock*>;

// Builds `n` locks forming a chain from locks[0] to locks[n - 1]: locks[i] is owned by
// thread i + 2, which waits on locks[i + 1]; the last lock is owned by `last_holder`.
void build_chain(graph& g, std::vector<fake_lock>& locks, std::size_t n, int last_holder) {
    locks.assign(n, fake_lock{});
    for (std::size_t i = 0; i + 1 < n; ++i) {
        const int thread = static_cast<int>(i) + 2;
        locks[i].holder = thread;
        g.add_wait(thread, &locks[i + 1]);
    }
    locks[n - 1].holder = last_holder;
}

chain addresses(const std::vector<fake_lock>& locks) {
    chain out;
    for (const fake_lock& l : locks) out.push_back(&l);
    return out;
}

}  // namespace

TEST_CASE("wait_for_graph: an empty graph has no cycle", "[wait_for_graph]") {
    graph g;
    fake_lock free_lock;
    fake_lock other_owned{2};
    CHECK(g.size() == 0);
    CHECK(g.find_cycle(1, &free_lock).empty());
    CHECK(g.find_cycle(1, &other_owned).empty());
    CHECK(g.find_cycle(1, nullptr).empty());
}

TEST_CASE("wait_for_graph: a lock held by self is a cycle of length 1", "[wait_for_graph]") {
    graph g;
    fake_lock own{1};
    CHECK(g.find_cycle(1, &own) == chain{&own});
    // Another thread wanting it sees no cycle: thread 1 waits on nothing.
    CHECK(g.find_cycle(2, &own).empty());
}

TEST_CASE("wait_for_graph: chains reaching self are returned in order", "[wait_for_graph]") {
    const std::size_t n = GENERATE(std::size_t{1}, std::size_t{4}, std::size_t{16});
    INFO("chain length " << n);
    graph g;
    std::vector<fake_lock> locks;
    build_chain(g, locks, n, 1);
    REQUIRE(g.size() == n - 1);

    const chain found = g.find_cycle(1, &locks[0]);
    REQUIRE(found.size() == n);
    CHECK(found == addresses(locks));
    CHECK(found.front() == &locks[0]);     // first: the lock wanted
    CHECK(found.back()->holder == 1);      // last: held by self
    CHECK(found.back() == &locks[n - 1]);  // ... and it is the end of the chain

    // Entering the chain in the middle finds the tail only.
    if (n > 1) {
        CHECK(g.find_cycle(1, &locks[n / 2]) ==
              chain(found.begin() + static_cast<std::ptrdiff_t>(n / 2), found.end()));
    }
    // A thread that owns nothing on the chain sees no cycle.
    CHECK(g.find_cycle(1000, &locks[0]).empty());
    // find_cycle is a query: the graph is unchanged.
    CHECK(g.size() == n - 1);
}

TEST_CASE("wait_for_graph: a chain ending at a free lock is no cycle", "[wait_for_graph]") {
    const std::size_t n = GENERATE(std::size_t{1}, std::size_t{2}, std::size_t{8});
    graph g;
    std::vector<fake_lock> locks;
    build_chain(g, locks, n, 0);
    CHECK(g.find_cycle(1, &locks[0]).empty());
}

TEST_CASE("wait_for_graph: a chain ending at a thread that waits on nothing is no cycle",
          "[wait_for_graph]") {
    const std::size_t n = GENERATE(std::size_t{1}, std::size_t{2}, std::size_t{8});
    graph g;
    std::vector<fake_lock> locks;
    build_chain(g, locks, n, 77);  // thread 77 runs, waiting on nothing
    CHECK(g.waiting_on(77) == nullptr);
    CHECK(g.find_cycle(1, &locks[0]).empty());
    // For thread 77 itself the same chain is a cycle.
    CHECK(g.find_cycle(77, &locks[0]) == addresses(locks));
}

TEST_CASE("wait_for_graph: a cycle that does not involve self terminates", "[wait_for_graph]") {
    // The protocol never builds one, but find_cycle bounds its walk anyway.
    graph g;
    fake_lock l0{2};
    fake_lock l1{3};
    g.add_wait(2, &l1);
    g.add_wait(3, &l0);
    CHECK(g.find_cycle(1, &l0).empty());
    CHECK(g.find_cycle(1, &l1).empty());
    CHECK(g.find_cycle(2, &l0) == chain{&l0});
    CHECK(g.find_cycle(3, &l0) == (chain{&l0, &l1}));
}

TEST_CASE("wait_for_graph: add_wait, remove_wait, waiting_on, size, for_each", "[wait_for_graph]") {
    graph g;
    fake_lock a{5};
    fake_lock b{6};
    g.add_wait(2, &a);
    g.add_wait(3, &b);
    g.add_wait(4, &a);
    CHECK(g.size() == 3);
    CHECK(g.waiting_on(2) == &a);
    CHECK(g.waiting_on(3) == &b);
    CHECK(g.waiting_on(4) == &a);
    CHECK(g.waiting_on(5) == nullptr);

    std::map<int, const fake_lock*> seen;
    g.for_each([&](int thread, const fake_lock* lock) { seen.emplace(thread, lock); });
    CHECK(seen == std::map<int, const fake_lock*>{{2, &a}, {3, &b}, {4, &a}});

    g.remove_wait(5);  // waits on nothing: no-op
    CHECK(g.size() == 3);
    g.remove_wait(3);
    CHECK(g.size() == 2);
    CHECK(g.waiting_on(3) == nullptr);
    g.remove_wait(2);
    g.remove_wait(4);
    CHECK(g.size() == 0);
    std::size_t visits = 0;
    g.for_each([&](int, const fake_lock*) { ++visits; });
    CHECK(visits == 0);
}

TEST_CASE("wait_for_graph: removing a wait or freeing a lock breaks a cycle", "[wait_for_graph]") {
    graph g;
    std::vector<fake_lock> locks;
    build_chain(g, locks, 4, 1);  // L0(2) <- 2 waits L1(3) <- 3 waits L2(4) <- 4 waits L3(1)
    REQUIRE(g.find_cycle(1, &locks[0]).size() == 4);

    SECTION("remove_wait in the middle") {
        g.remove_wait(3);
        CHECK(g.find_cycle(1, &locks[0]).empty());
        CHECK(g.find_cycle(1, &locks[2]) == (chain{&locks[2], &locks[3]}));
    }
    SECTION("the last lock is released") {
        locks[3].holder = 0;
        CHECK(g.find_cycle(1, &locks[0]).empty());
    }
    SECTION("the last lock changes holder to a running thread") {
        locks[3].holder = 9;
        CHECK(g.find_cycle(1, &locks[0]).empty());
        CHECK(g.find_cycle(9, &locks[0]).size() == 4);
    }
}

// ---------------------------------------------------------------------------------------
// Randomised: find_cycle agrees with a brute-force oracle.

namespace {

using importlock_test::catch_seed;

class oracle {
public:
    // The walk find_cycle is specified to do, with an explicit visited set.
    chain cycle(int self, const fake_lock* wanted) const {
        chain out;
        std::set<const fake_lock*> visited;
        for (const fake_lock* lock = wanted; lock != nullptr && visited.insert(lock).second;) {
            out.push_back(lock);
            if (lock->holder == self) return out;
            if (lock->holder == 0) break;
            const auto it = waits.find(lock->holder);
            lock = it == waits.end() ? nullptr : it->second;
        }
        return {};
    }

    // Brute force: true when following thread -> lock -> holder from some thread revisits.
    bool has_cycle() const {
        for (const auto& [start, ignored] : waits) {
            std::set<int> visited;
            int thread = start;
            while (true) {
                if (!visited.insert(thread).second) return true;
                const auto it = waits.find(thread);
                if (it == waits.end() || it->second->holder == 0) break;
                thread = it->second->holder;
            }
        }
        return false;
    }

    std::map<int, const fake_lock*> waits;
};

}  // namespace

TEST_CASE("wait_for_graph: find_cycle agrees with a brute-force oracle (randomised)",
          "[wait_for_graph][random]") {
    const std::uint32_t seed = catch_seed();
    INFO("seed " << seed << " (rerun with --rng-seed " << seed << ")");
    std::mt19937 rng(seed);

    constexpr int thread_count = 10;  // thread ids 1..10
    constexpr std::size_t lock_count = 8;
    constexpr int operations = 100000;
    std::vector<fake_lock> locks(lock_count);
    graph g;
    oracle o;

    const auto random_thread = [&] {
        return std::uniform_int_distribution<int>(1, thread_count)(rng);
    };
    const auto random_lock = [&]() -> fake_lock& {
        return locks[std::uniform_int_distribution<std::size_t>(0, lock_count - 1)(rng)];
    };
    const auto not_waiting = [&] {
        std::vector<int> out;
        for (int t = 1; t <= thread_count; ++t) {
            if (o.waits.count(t) == 0) out.push_back(t);
        }
        return out;
    };
    const auto pick = [&](const std::vector<int>& from) {
        return from[std::uniform_int_distribution<std::size_t>(0, from.size() - 1)(rng)];
    };

    std::size_t cycles = 0;
    std::size_t no_cycles = 0;
    std::size_t waits_added = 0;
    std::size_t longest = 0;
    std::size_t mismatches = 0;
    for (int op = 0; op < operations; ++op) {
        const int kind = std::uniform_int_distribution<int>(0, 99)(rng);
        if (kind < 40) {
            // add_wait for a thread that waits on nothing, unless it would close a cycle.
            const std::vector<int> idle = not_waiting();
            if (idle.empty()) continue;
            const int self = pick(idle);
            const fake_lock& wanted = random_lock();
            const chain found = g.find_cycle(self, &wanted);
            const chain expected = o.cycle(self, &wanted);
            if (found != expected) {
                ++mismatches;
                FAIL_CHECK("op " << op << ": find_cycle(" << self << ", lock "
                                 << (&wanted - locks.data()) << ") returned " << found.size()
                                 << " locks, oracle " << expected.size());
            }
            longest = std::max(longest, found.size());
            if (found.empty()) {
                ++no_cycles;
                g.add_wait(self, &wanted);
                o.waits.emplace(self, &wanted);
                ++waits_added;
            } else {
                ++cycles;
            }
        } else if (kind < 60) {
            const int thread = random_thread();
            g.remove_wait(thread);
            o.waits.erase(thread);
        } else if (kind < 80) {
            // A lock is released, or taken by a running thread (never by a waiting one).
            fake_lock& lock = random_lock();
            const std::vector<int> idle = not_waiting();
            const bool release = idle.empty() || std::uniform_int_distribution<int>(0, 3)(rng) == 0;
            lock.holder = release ? 0 : pick(idle);
        } else {
            // A pure query, also for threads that are waiting.
            const int self = random_thread();
            const fake_lock& wanted = random_lock();
            const chain found = g.find_cycle(self, &wanted);
            const chain expected = o.cycle(self, &wanted);
            if (found != expected) {
                ++mismatches;
                FAIL_CHECK("op " << op << ": query find_cycle(" << self << ", lock "
                                 << (&wanted - locks.data()) << ") returned " << found.size()
                                 << " locks, oracle " << expected.size());
            }
            (found.empty() ? no_cycles : cycles) += 1;
            longest = std::max(longest, found.size());
        }
        if (g.size() != o.waits.size()) {
            ++mismatches;
            FAIL_CHECK("op " << op << ": size " << g.size() << ", oracle " << o.waits.size());
        }
        if (op % 1000 == 0) {
            // The test keeps the protocol's invariant: the graph never holds a cycle.
            REQUIRE_FALSE(o.has_cycle());
            for (int t = 1; t <= thread_count; ++t) {
                const auto it = o.waits.find(t);
                REQUIRE(g.waiting_on(t) == (it == o.waits.end() ? nullptr : it->second));
            }
        }
        if (mismatches > 10) FAIL("too many mismatches");
    }
    CHECK(mismatches == 0);
    CHECK_FALSE(o.has_cycle());
    // The run exercised both outcomes and long chains, or it proves little.
    INFO("cycles " << cycles << ", no cycles " << no_cycles << ", waits added " << waits_added
                   << ", longest chain " << longest);
    CHECK(cycles > 1000);
    CHECK(no_cycles > 1000);
    CHECK(waits_added > 1000);
    CHECK(longest >= 4);
}
