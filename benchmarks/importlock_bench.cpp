// SPDX-License-Identifier: BSL-1.0
// benchmarks/importlock_bench.cpp: importlock beside the code a user would
// otherwise write, measured in one run.
//
//   1. hit path (int and std::string keys, 1, 2 and 4 threads)
//   2. coalescing: 8 threads on one cold key with a 1 ms initialiser
//   3. cold inserts of distinct keys (1, 2 and 4 threads; 3b: string keys, 1 thread;
//      3c: hits on one thread while another imports); the 1-thread tables show
//      no_locks too, the cost of the data model without any synchronisation
//   4. independent slow loaders (2 threads x 20 keys x 50 us busy loaders)
//   5. deadlock-detection cost along wait-for chains of length 1..64
//   6. memory per registered module; lock_count() after the run
//   7. scale: cold and hit cost against 1e3..1e6 loaded keys (with the default
//      finder, and with a function_finder to tell the registry's growth from the
//      finder's), cycle closing against the depth of a same-thread chain
//   8. tracked_mutex: uncontended lock + unlock against std::mutex
//
// Sections 1-4 (and 7, TBB) show third-party peers beside importlock when
// their packages are installed (bench_peers.hpp).
//
// Usage: importlock_bench [--quick] [--only=hit,coalesce,cold,slow,cycle,memory,scale,mutex]
// Exit status: 0, or 1 when an invariant broke (an initialiser ran != 1 time,
// lock_count() != 0, a lookup returned the wrong module). A missed
// performance target is reported as MISS and does not change the status.
#include <importlock/importlock.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bench_peers.hpp"
#include "bench_support.hpp"

// ============================================================ allocation counting
//
// Every allocation of the program carries a 16-byte header holding its size,
// so that live bytes can be counted while counting is enabled (section 6 only,
// single-threaded). Elsewhere the only cost is the header and one relaxed load.
namespace alloc_count {

std::atomic<bool> enabled{false};
std::atomic<std::int64_t> live_bytes{0};      // bytes requested through operator new
std::atomic<std::int64_t> live_footprint{0};  // estimated glibc chunk sizes
std::atomic<std::int64_t> live_blocks{0};

constexpr std::size_t header = 16;  // keeps __STDCPP_DEFAULT_NEW_ALIGNMENT__ (16)

// glibc (x86-64): a request of n bytes takes a chunk of max(32, round16(n + 8)).
inline std::int64_t chunk_size(std::size_t n) noexcept {
    const std::size_t c = (n + 8 + 15) & ~static_cast<std::size_t>(15);
    return static_cast<std::int64_t>(c < 32 ? 32 : c);
}

// Out of line, so that the compiler does not pair operator delete with free().
[[gnu::noinline]] void* allocate(std::size_t n) noexcept {
    void* base = std::malloc(n + header);
    if (base == nullptr) return nullptr;
    std::memcpy(base, &n, sizeof n);
    if (enabled.load(std::memory_order_relaxed)) {
        live_bytes.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
        live_footprint.fetch_add(chunk_size(n), std::memory_order_relaxed);
        live_blocks.fetch_add(1, std::memory_order_relaxed);
    }
    return static_cast<char*>(base) + header;
}

[[gnu::noinline]] void deallocate(void* p) noexcept {
    if (p == nullptr) return;
    void* base = static_cast<char*>(p) - header;
    if (enabled.load(std::memory_order_relaxed)) {
        std::size_t n = 0;
        std::memcpy(&n, base, sizeof n);
        live_bytes.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
        live_footprint.fetch_sub(chunk_size(n), std::memory_order_relaxed);
        live_blocks.fetch_sub(1, std::memory_order_relaxed);
    }
    std::free(base);
}

struct snapshot {
    std::int64_t bytes, footprint, blocks;
};

inline snapshot take() noexcept {
    return {live_bytes.load(), live_footprint.load(), live_blocks.load()};
}

}  // namespace alloc_count

void* operator new(std::size_t n) {
    if (void* p = alloc_count::allocate(n)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
    if (void* p = alloc_count::allocate(n)) return p;
    throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    return alloc_count::allocate(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
    return alloc_count::allocate(n);
}
void operator delete(void* p) noexcept {
    alloc_count::deallocate(p);
}
void operator delete[](void* p) noexcept {
    alloc_count::deallocate(p);
}
void operator delete(void* p, std::size_t) noexcept {
    alloc_count::deallocate(p);
}
void operator delete[](void* p, std::size_t) noexcept {
    alloc_count::deallocate(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
    alloc_count::deallocate(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
    alloc_count::deallocate(p);
}

namespace {

using bench::now;
using bench::ns_between;
using bench::row;
using bench::stats;
using bench::summarize;

// ============================================================ common types

// The module every implementation stores: 32 bytes, `id` identifies the key.
struct bench_module {
    std::uint64_t id = 0;
    std::uint64_t payload[3] = {};
};

using int_system = importlock::basic_import_system<int, bench_module>;
using str_system = importlock::import_system<bench_module>;  // std::string keys
using int_global_system =
    importlock::basic_import_system<int, bench_module, importlock::global_lock>;

template <class Key>
using importer_t = importlock::importer<Key, bench_module>;

// A function_finder's function for the rows that import keys nobody defined (3c, 6b, 7): key k's
// module gets id k.
struct spec_of_id {
    std::optional<importlock::module_spec<int, bench_module>> operator()(int key) const {
        importlock::module_spec<int, bench_module> spec;
        spec.loader = [key](bench_module& m, importer_t<int>&) {
            m.id = static_cast<std::uint64_t>(key);
        };
        return spec;
    }
};

// A string-keyed function_finder's function (3b): every module gets id 1.
struct spec_of_string {
    std::optional<importlock::module_spec<std::string, bench_module>> operator()(
        const std::string&) const {
        importlock::module_spec<std::string, bench_module> spec;
        spec.loader = [](bench_module& m, importer_t<std::string>&) { m.id = 1; };
        return spec;
    }
};

// Whether System's finder is a registry_finder, whose loaders define_trivial defines.
template <class System>
constexpr bool defines_loaders =
    std::is_same_v<typename System::finder_type,
                   importlock::registry_finder<typename System::key_type, bench_module>>;

constexpr std::uint32_t key_count = 1000;
constexpr std::size_t order_length = 4096;  // power of two: cycled with a mask

struct config {
    bool quick = false;
    std::set<std::string> only;  // empty: every section
    int reps = 7;                // repetitions of the hit-path and chain measurements
    int cheap_reps = 15;         // repetitions of the ~1 ms measurements (sections 2-4)
    std::size_t hit_lookups = std::size_t{1} << 21;  // per thread per sample
    int close_calls = 1000;                          // cycle-closing calls per chain build

    bool runs(const std::string& section) const { return only.empty() || only.count(section) != 0; }
};

// Medians (and spreads) by id, for the ratios and the targets block.
std::map<std::string, stats> g_results;

// Broken invariants: each makes the exit status 1.
std::vector<std::string> g_broken;

// Systems checked for lock_count() == 0 when they were done.
std::size_t g_lock_checks = 0;
std::size_t g_lock_leaks = 0;

void broken(const std::string& what) {
    std::printf("  !! INVARIANT BROKEN: %s\n", what.c_str());
    g_broken.push_back(what);
}

template <class System>
void check_locks(const System& sys, const std::string& where) {
    ++g_lock_checks;
    if (const std::size_t n = sys.lock_count(); n != 0) {
        ++g_lock_leaks;
        broken(where + ": lock_count() == " + std::to_string(n) + " after the imports ended");
    }
}

void put(const std::string& id, const stats& s) {
    g_results[id] = s;
}

std::optional<double> median_of(const std::string& id) {
    const auto it = g_results.find(id);
    if (it == g_results.end()) return std::nullopt;
    return it->second.median;
}

std::vector<std::string> string_keys(std::uint32_t count) {
    std::vector<std::string> keys;
    keys.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) keys.push_back("package.module_" + std::to_string(i));
    return keys;
}

std::vector<int> int_keys(std::uint32_t count) {
    std::vector<int> keys(count);
    for (std::uint32_t i = 0; i < count; ++i) keys[i] = static_cast<int>(i);
    return keys;
}

// Defines `keys[i]` with a loader setting id = i (and "package", the parent of
// the string keys, with id = 1'000'000).
template <class System>
void define_trivial(System& sys, const std::vector<typename System::key_type>& keys) {
    using Key = typename System::key_type;
    if constexpr (std::is_same_v<Key, std::string>) {
        sys.finder().define("package", [](bench_module& m, importer_t<Key>&) { m.id = 1'000'000; });
    }
    for (std::size_t i = 0; i < keys.size(); ++i) {
        const std::uint64_t id = i;
        sys.finder().define(keys[i], [id](bench_module& m, importer_t<Key>&) { m.id = id; });
    }
}

// ============================================================ function-local statics

// An accessor as a user writes it in another translation unit: called, never
// inlined, and opaque to interprocedural analysis (GCC's noipa), so that the
// compiler cannot hoist or merge the calls of a timed loop.
#if defined(__clang__)
#define IMPORTLOCK_BENCH_ACCESSOR [[gnu::noinline]]
#else
#define IMPORTLOCK_BENCH_ACCESSOR [[gnu::noipa]]
#endif

// The initialiser reads an atomic, so the static cannot be constant-initialised
// and keeps its guard: what `static T& get() { static T t = init(); return t; }`
// costs.
bench_module make_static_module(int n) {
    const std::uint64_t salt = bench::g_sink.load(std::memory_order_relaxed);
    bench_module m;
    m.id = static_cast<std::uint64_t>(n) + (salt & 0u);
    return m;
}

template <int N>
IMPORTLOCK_BENCH_ACCESSOR bench_module& local_static() {
    static bench_module m = make_static_module(N);
    return m;
}

using static_accessor = bench_module& (*)();

template <std::size_t... I>
constexpr std::array<static_accessor, sizeof...(I)> make_static_table(std::index_sequence<I...>) {
    return {{&local_static<static_cast<int>(I)>...}};
}

constexpr auto static_table = make_static_table(std::make_index_sequence<key_count>{});

// The same accessors around a module_handle: handle_accessor<S, N>() returns
// the handle in global slot N (a constant address, as a user's global handle),
// reached through a table of function pointers like static_table.
template <class System>
union handle_slot {
    constexpr handle_slot() noexcept {}
    ~handle_slot() {}
    importlock::module_handle<System> handle;
};

template <class System>
std::array<handle_slot<System>, key_count> g_handle_slots;

template <class System, int N>
IMPORTLOCK_BENCH_ACCESSOR bench_module& handle_accessor() {
    return std::get<static_cast<std::size_t>(N)>(g_handle_slots<System>).handle.get();
}

template <class System, std::size_t... I>
constexpr std::array<static_accessor, sizeof...(I)> make_handle_table(std::index_sequence<I...>) {
    return {{&handle_accessor<System, static_cast<int>(I)>...}};
}

template <class System>
constexpr auto handle_table = make_handle_table<System>(std::make_index_sequence<key_count>{});

// Constructs the handle slots of System (slot n bound to keys[n]), and
// destroys them when it goes out of scope.
template <class System>
class handle_slots {
public:
    handle_slots(System& sys, const std::vector<typename System::key_type>& keys) {
        for (std::size_t n = 0; n < key_count; ++n) {
            new (&g_handle_slots<System>[n].handle) importlock::module_handle<System>(sys, keys[n]);
        }
    }
    ~handle_slots() {
        for (auto& slot : g_handle_slots<System>) slot.handle.~module_handle();
    }
    handle_slots(const handle_slots&) = delete;
    handle_slots& operator=(const handle_slots&) = delete;
};

// Fresh statics for the coalescing race: instantiation N is used by repetition N only.
constexpr int max_coalesce_reps = 64;
std::array<std::atomic<int>, max_coalesce_reps> g_static_inits{};

bench_module slow_static_init(int n) {
    g_static_inits[static_cast<std::size_t>(n)].fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return make_static_module(n);
}

template <int N>
bench_module& coalesce_static() {
    static bench_module m = slow_static_init(N);
    return m;
}

template <std::size_t... I>
constexpr std::array<static_accessor, sizeof...(I)> make_coalesce_table(std::index_sequence<I...>) {
    return {{&coalesce_static<static_cast<int>(I)>...}};
}

constexpr auto coalesce_table = make_coalesce_table(std::make_index_sequence<max_coalesce_reps>{});

// ============================================================ machine check

// How much a second thread adds on this machine right now: a register-only
// loop on 1 and on 2 threads (ideal 2.00x). Other load on a shared machine
// shows up here first; 2-thread ratios below it mean little.
double parallel_headroom(int reps) {
    const auto spin = [](std::uint64_t n) {
        std::uint64_t x = 88172645463325252ull;
        for (std::uint64_t i = 0; i < n; ++i) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        return x;
    };
    constexpr std::uint64_t n = 1u << 22;
    std::vector<double> r;
    for (int rep = 0; rep < reps; ++rep) {
        const double one = bench::run_parallel(1, [&](unsigned) { bench::sink(spin(n)); });
        const double two = bench::run_parallel(2, [&](unsigned) { bench::sink(spin(n)); });
        r.push_back(2.0 * one / two);
    }
    return summarize(r).median;
}

void print_headroom(const char* when, double h) {
    std::printf(
        "parallel headroom %s: %.2fx (2-thread / 1-thread throughput of a register-only loop; "
        "ideal 2.00x)%s\n",
        when, h,
        h < 1.8 ? "\n  WARNING: the second core was busy: 2-thread results of this run are "
                  "unreliable; rerun on a quieter machine"
                : "");
}

// ============================================================ section 1: hit path

// Runs n lookups starting at `offset` in the shared order; returns the sum of ids.
using batch_fn = std::function<std::uint64_t(std::size_t offset, std::size_t n)>;

template <class Lookup>
batch_fn make_batch(Lookup lookup, const std::vector<std::uint32_t>& order) {
    return [lookup, &order](std::size_t offset, std::size_t n) -> std::uint64_t {
        const std::uint32_t* o = order.data();
        const std::size_t mask = order.size() - 1;
        std::uint64_t acc = 0;
        std::size_t j = offset & mask;
        for (std::size_t i = 0; i < n; ++i) {
            acc += lookup(o[j]);
            j = (j + 1) & mask;
        }
        bench::do_not_optimize(acc);
        return acc;
    };
}

// The sum of ids a correct batch returns.
std::uint64_t expected_sum(const std::vector<std::uint32_t>& order, std::size_t offset,
                           std::size_t n) {
    const std::size_t mask = order.size() - 1;
    std::uint64_t acc = 0;
    for (std::size_t i = 0, j = offset & mask; i < n; ++i, j = (j + 1) & mask) acc += order[j];
    return acc;
}

struct hit_row {
    std::string id;    // for g_results
    std::string name;  // for the tables
    batch_fn batch;
    bool one_key;                 // looks up key 0 (id 0) every time
    bool peer;                    // a third-party container: compared with import_ref
    std::vector<double> ns_1t;    // ns per lookup, 1 thread
    std::vector<double> mops_2t;  // aggregate million lookups/s, 2 threads
    std::vector<double> mops_4t;  // aggregate million lookups/s, 4 threads
};

// The parallel speed-up a perfect implementation shows with `threads` threads.
double ideal_scaling(unsigned threads) {
    const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
    return static_cast<double>(std::min(threads, hw));
}

template <class Key>
void section_hit(const config& cfg, const std::string& label, const std::vector<Key>& keys) {
    const auto order = bench::shuffled_order(key_count, order_length, 0x1234'5678u);

    // importlock, everything imported (and the handles resolved) before timing.
    using System = importlock::basic_import_system<Key, bench_module>;
    System sys;
    define_trivial(sys, keys);
    for (const Key& k : keys) bench::sink(sys.import_ref(k).id);
    std::vector<importlock::module_handle<System>> handles;
    handles.reserve(keys.size());
    for (const Key& k : keys) {
        handles.push_back(sys.handle(k));
        bench::sink(handles.back().get().id);
    }
    const handle_slots<System> slots(sys, keys);  // behind handle_table<System>
    for (std::uint32_t i = 0; i < key_count; ++i) bench::sink(handle_table<System>[i]().id);

    // Owning handles: one set per thread (a shared_module_handle is used by one
    // thread at a time), resolved before timing.
    std::array<std::vector<importlock::shared_module_handle<System>>, 4> shared_handles;
    for (auto& set : shared_handles) {
        set.reserve(keys.size());
        for (const auto& k : keys) {
            set.push_back(sys.shared_handle(k));
            bench::sink(set.back()->id);
        }
    }

    // Baselines, same content.
    std::unordered_map<Key, std::shared_ptr<bench_module>> map;
    for (std::size_t i = 0; i < keys.size(); ++i) {
        auto m = std::make_shared<bench_module>();
        m->id = i;
        map.emplace(keys[i], std::move(m));
    }
    std::mutex map_mutex;
    std::shared_mutex map_shared_mutex;

    struct once_slot {
        std::once_flag flag;
        std::shared_ptr<bench_module> module;
    };
    std::unordered_map<Key, once_slot> once_map;
    std::mutex once_mutex;
    const auto once_lookup = [&once_map, &once_mutex, &keys](std::uint32_t i) -> std::uint64_t {
        once_slot* slot = nullptr;
        {
            std::lock_guard guard(once_mutex);
            auto it = once_map.find(keys[i]);
            if (it == once_map.end()) it = once_map.try_emplace(keys[i]).first;
            slot = &it->second;
        }
        std::call_once(slot->flag, [slot, i] {
            slot->module = std::make_shared<bench_module>();
            slot->module->id = i;
        });
        return slot->module->id;
    };
    for (std::uint32_t i = 0; i < key_count; ++i) bench::sink(once_lookup(i));
    for (std::uint32_t i = 0; i < key_count; ++i) bench::sink(static_table[i]().id);

    std::vector<hit_row> rows;
    const auto add = [&](std::string id, std::string name, auto lookup, bool one_key = false,
                         bool peer = false) {
        rows.push_back(
            {std::move(id), std::move(name), make_batch(lookup, order), one_key, peer, {}, {}, {}});
    };
    add("find", "unordered_map::find (no lock)",
        [&map, &keys](std::uint32_t i) -> std::uint64_t { return map.find(keys[i])->second->id; });
    add("import_ref", "importlock import_ref",
        [&sys, &keys](std::uint32_t i) -> std::uint64_t { return sys.import_ref(keys[i]).id; });
    add("import_module", "importlock import_module (shared_ptr copy)",
        [&sys, &keys](std::uint32_t i) -> std::uint64_t { return sys.import_module(keys[i])->id; });
    add("shared_handle", "importlock shared_module_handle, 1000 per thread",
        [&shared_handles](std::uint32_t i) -> std::uint64_t {
            return shared_handles[bench::thread_slot][i]->id;
        });
    add("find_copy", "unordered_map::find + shared_ptr copy",
        [&map, &keys](std::uint32_t i) -> std::uint64_t {
            const std::shared_ptr<bench_module> p = map.find(keys[i])->second;
            return p->id;
        });
    add("mutex", "std::mutex + unordered_map",
        [&map, &map_mutex, &keys](std::uint32_t i) -> std::uint64_t {
            std::lock_guard guard(map_mutex);
            return map.find(keys[i])->second->id;
        });
    add("shared_mutex", "std::shared_mutex (shared_lock) + unordered_map",
        [&map, &map_shared_mutex, &keys](std::uint32_t i) -> std::uint64_t {
            std::shared_lock guard(map_shared_mutex);
            return map.find(keys[i])->second->id;
        });
    add("call_once", "mutex map of once_flag slots + call_once", once_lookup);

    // Third-party peers, same keys and content, filled through their
    // insert-if-absent path before timing; timed on their lookup path.
    std::vector<std::shared_ptr<void>> peers;
    bench::peers::for_each_peer<Key, bench_module>([&]<class Peer>(std::type_identity<Peer>) {
        auto p = std::make_shared<Peer>();
        for (std::size_t i = 0; i < keys.size(); ++i) {
            const std::uint64_t id = i;
            bench::sink(p->get(keys[i], [id](bench_module& m) { m.id = id; }).id);
        }
        if (p->size() != keys.size()) broken(std::string("hit path: ") + Peer::name + " size");
        Peer* raw = p.get();
        add(
            Peer::id, Peer::name,
            [raw, &keys](std::uint32_t i) -> std::uint64_t { return raw->find(keys[i]).id; }, false,
            true);
        peers.push_back(std::move(p));
    });

    // Handles against function-local statics, like with like. 1000 keys: the
    // inline get() on an array of handles (how a handle is used), then the
    // same 1000 accessor functions (one per key, never inlined) around a
    // handle and around a guarded static, called through a table of function
    // pointers in the shuffled order: both rows pay the same unpredictable
    // indirect call. One key: the handle's inline get(), and direct calls of
    // one accessor.
    add("handle", "importlock module_handle::get(), 1000 handles",
        [&handles](std::uint32_t i) -> std::uint64_t { return handles[i].get().id; });
    add("handle_fn", "handle.get() in 1000 accessors (fn-pointer table)",
        [](std::uint32_t i) -> std::uint64_t { return handle_table<System>[i]().id; });
    add("local_static", "function-local static in 1000 accessors (fn-pointer table)",
        [](std::uint32_t i) -> std::uint64_t { return static_table[i]().id; });
    const auto& handle0 = handles[0];
    add(
        "handle_one", "  one key: module_handle::get() (inline)",
        [&handle0](std::uint32_t) -> std::uint64_t { return handle0.get().id; }, true);
    add(
        "handle_one_fn", "  one key: accessor returning handle.get(), direct call",
        [](std::uint32_t) -> std::uint64_t { return handle_accessor<System, 0>().id; }, true);
    add(
        "local_static_one", "  one key: accessor with a function-local static, direct call",
        [](std::uint32_t) -> std::uint64_t { return local_static<0>().id; }, true);

    // Correctness and warm-up (untimed).
    const std::size_t n = cfg.hit_lookups;
    for (auto& r : rows) {
        const std::uint64_t want = r.one_key ? 0 : expected_sum(order, 0, order_length);
        if (const std::uint64_t got = r.batch(0, order_length); got != want) {
            broken("hit path " + label + " " + r.name + ": wrong modules returned");
        }
        bench::sink(r.batch(0, n / 8));
    }

    // Repetition-major, so that a noisy period hits every row alike. 2 threads
    // do n lookups each, 4 threads n / 2 each (the same total).
    for (int rep = 0; rep < cfg.reps; ++rep) {
        for (auto& r : rows) {
            std::uint64_t acc1 = 0;
            const double wall1 = bench::run_parallel(1, [&](unsigned) { acc1 = r.batch(0, n); });
            r.ns_1t.push_back(wall1 / static_cast<double>(n));
            std::array<std::uint64_t, 4> acc{};
            const double wall2 = bench::run_parallel(
                2, [&](unsigned t) { acc[t] = r.batch(t * (order_length / 2), n); });
            r.mops_2t.push_back(2.0 * static_cast<double>(n) / wall2 * 1e3);
            const double wall4 = bench::run_parallel(
                4, [&](unsigned t) { acc[t] += r.batch(t * (order_length / 4), n / 2); });
            r.mops_4t.push_back(2.0 * static_cast<double>(n) / wall4 * 1e3);
            bench::sink(acc1 + acc[0] + acc[1] + acc[2] + acc[3]);
        }
    }

    // Tables.
    std::map<std::string, stats> s1, s2, s4;
    for (auto& r : rows) {
        s1[r.id] = summarize(r.ns_1t);
        s2[r.id] = summarize(r.mops_2t);
        s4[r.id] = summarize(r.mops_4t);
        put("hit." + label + ".1t." + r.id, s1[r.id]);
        put("hit." + label + ".2t." + r.id, s2[r.id]);
        put("hit." + label + ".4t." + r.id, s4[r.id]);
    }
    const double find_ns = s1["find"].median;
    const auto vs = [&](std::map<std::string, stats>& s, const std::string& a,
                        const std::string& b) {
        return bench::ratio_str(s[a].median / s[b].median);
    };
    std::vector<row> t1;
    for (auto& r : rows) {
        std::string note;
        if (r.id == "import_ref") note = "target <= 1.00x";
        if (r.id == "import_module") note = "vs find+copy: " + vs(s1, r.id, "find_copy");
        if (r.id == "shared_handle") note = "vs import_module: " + vs(s1, r.id, "import_module");
        if (r.peer) note = "time import_ref/this: " + vs(s1, "import_ref", r.id);
        if (r.id == "handle") note = "vs 1000 static accessors: " + vs(s1, r.id, "local_static");
        if (r.id == "handle_fn") {
            note =
                "vs 1000 static accessors: " + vs(s1, r.id, "local_static") + " (target <= 2.00x)";
        }
        if (r.id == "handle_one") {
            note = "vs static accessor: " + vs(s1, r.id, "local_static_one") + " (target <= 2.00x)";
        }
        if (r.id == "handle_one_fn") {
            note = "vs static accessor: " + vs(s1, r.id, "local_static_one");
        }
        t1.push_back({r.name, s1[r.id], s1[r.id].median / find_ns, note});
    }
    bench::print_table("1. Hit path, " + label + " keys, 1 thread: ns per lookup (lower is better)",
                       "ns", "x find", t1);

    for (const unsigned threads : {2u, 4u}) {
        auto& s = threads == 2 ? s2 : s4;
        const std::string tt = std::to_string(threads) + "t";
        const double shared_mt = s["shared_mutex"].median;
        std::vector<row> t;
        for (auto& r : rows) {
            const double mops_1t = 1e3 / s1[r.id].median;
            const double scaling = s[r.id].median / mops_1t;
            put("hit." + label + ".scaling" + (threads == 2 ? "" : "4") + "." + r.id,
                {scaling, scaling, scaling, 1});
            // Interference only slows a run down: best of the threaded samples
            // over the best 1-thread sample shows what the hardware allows when
            // the median is hit by other load.
            const double best = s[r.id].max / (1e3 / s1[r.id].min);
            std::string note = "1t " + bench::num(mops_1t) + " M/s; vs shared_mutex map at " + tt +
                               ": " + bench::ratio_str(s[r.id].median / shared_mt);
            if (r.peer)
                note += "; time import_ref/this at " + tt + ": " + vs(s, r.id, "import_ref");
            note += "; best-of-reps " + tt + "/1t " + bench::ratio_str(best);
            t.push_back({r.name, s[r.id], scaling, note});
        }
        bench::print_table(
            "1. Hit path, " + label + " keys, " + std::to_string(threads) +
                " threads: aggregate M lookups/s (higher is better); ratio = " + tt +
                " / 1t throughput (ideal " + bench::ratio_str(ideal_scaling(threads)) + " on " +
                std::to_string(std::thread::hardware_concurrency()) + " hardware threads)",
            "M/s", tt + "/1t", t);
    }
    check_locks(sys, "hit path " + label);
}

// ============================================================ section 2: coalescing

constexpr unsigned coalesce_threads = 8;

// Releases `threads` threads blocked on a latch, each calls get(); returns ns
// from the release until the last thread has its module.
template <class Get>
double coalesce_once(Get get) {
    std::atomic<unsigned> arrived{0};
    std::atomic<int> go{0};
    std::array<bench::clock_type::time_point, coalesce_threads> done{};
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < coalesce_threads; ++t) {
        pool.emplace_back([&, t] {
            arrived.fetch_add(1);
            go.wait(0);
            bench::sink(get());
            done[t] = now();
        });
    }
    while (arrived.load() < coalesce_threads) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::microseconds(500));  // let them block in wait()
    const auto t0 = now();
    go.store(1);
    go.notify_all();
    for (auto& th : pool) th.join();
    return ns_between(t0, *std::max_element(done.begin(), done.end()));
}

void section_coalesce(const config& cfg) {
    const int reps = std::min(cfg.cheap_reps, max_coalesce_reps);
    std::vector<double> il, ls, co;
    bool counts_ok = true;
    int worst_il = 1, worst_ls = 1, worst_co = 1;
    // Third-party peers: a fresh container per repetition, get() of one key.
    struct peer_impl {
        std::string id, name;
        std::function<std::pair<double, int>()> run;  // wall ns, initialiser runs
        std::vector<double> ns;
        int worst = 1;
    };
    std::vector<peer_impl> peers;
    bench::peers::for_each_peer<int, bench_module>([&]<class Peer>(std::type_identity<Peer>) {
        peers.push_back({Peer::id,
                         Peer::name,
                         [] {
                             Peer p;
                             std::atomic<int> inits{0};
                             const double ns = coalesce_once([&p, &inits] {
                                 return p
                                     .get(7,
                                          [&inits](bench_module& m) {
                                              inits.fetch_add(1);
                                              std::this_thread::sleep_for(
                                                  std::chrono::milliseconds(1));
                                              m.id = 7;
                                          })
                                     .id;
                             });
                             return std::pair<double, int>{ns, inits.load()};
                         },
                         {},
                         1});
    });
    for (int rep = 0; rep < reps; ++rep) {
        for (auto& p : peers) {
            const auto [ns, inits] = p.run();
            p.ns.push_back(ns);
            if (inits != 1) {
                counts_ok = false;
                p.worst = inits;
            }
        }
        {  // importlock: a fresh system, one cold key.
            int_system sys;
            std::atomic<int> inits{0};
            sys.finder().define(7, [&inits](bench_module& m, importer_t<int>&) {
                inits.fetch_add(1);
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
                m.id = 7;
            });
            il.push_back(coalesce_once([&sys] { return sys.import_ref(7).id; }));
            if (inits.load() != 1) {
                counts_ok = false;
                worst_il = inits.load();
            }
            check_locks(sys, "coalescing");
        }
        {  // function-local static: instantiation `rep` is fresh.
            const auto get = coalesce_table[static_cast<std::size_t>(rep)];
            ls.push_back(coalesce_once([get] { return get().id; }));
            const int c = g_static_inits[static_cast<std::size_t>(rep)].load();
            if (c != 1) {
                counts_ok = false;
                worst_ls = c;
            }
        }
        {  // std::call_once on a fresh once_flag.
            std::once_flag flag;
            bench_module module;
            std::atomic<int> inits{0};
            co.push_back(coalesce_once([&] {
                std::call_once(flag, [&] {
                    inits.fetch_add(1);
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                    module.id = 7;
                });
                return module.id;
            }));
            if (inits.load() != 1) {
                counts_ok = false;
                worst_co = inits.load();
            }
        }
    }
    const stats s_il = summarize(il), s_ls = summarize(ls), s_co = summarize(co);
    for (auto* v : {&il, &ls, &co})
        for (auto& x : *v) x /= 1e3;
    const stats u_il = summarize(il), u_ls = summarize(ls), u_co = summarize(co);
    put("coalesce.importlock", s_il);
    put("coalesce.local_static", s_ls);
    put("coalesce.call_once", s_co);
    put("coalesce.inits_ok", {counts_ok ? 1.0 : 0.0, 0, 0, 1});
    std::vector<row> rows = {
        {"importlock import_ref (fresh system)", u_il, s_il.median / s_ls.median,
         "initialiser runs per rep: " + std::to_string(counts_ok ? 1 : worst_il) + " (must be 1)"},
        {"function-local static (fresh instantiation)", u_ls, 1.0,
         "initialiser runs per rep: " + std::to_string(counts_ok ? 1 : worst_ls)},
        {"std::call_once (fresh once_flag)", u_co, s_co.median / s_ls.median,
         "initialiser runs per rep: " + std::to_string(counts_ok ? 1 : worst_co)}};
    for (auto& p : peers) {
        const stats sp = summarize(p.ns);
        put("coalesce." + p.id, sp);
        for (auto& x : p.ns) x /= 1e3;
        rows.push_back(
            {p.name + " (fresh)", summarize(p.ns), sp.median / s_ls.median,
             "initialiser runs per rep: " + std::to_string(counts_ok ? 1 : p.worst) +
                 "; time importlock/this: " + bench::ratio_str(s_il.median / sp.median)});
    }
    bench::print_table(
        "2. Coalescing: 8 threads, one cold key, 1 ms sleeping initialiser: wall us from "
        "latch release until all 8 hold the module (lower is better)",
        "us", "x static", rows);
    if (!counts_ok) broken("coalescing: an initialiser ran more or fewer than once");
}

// ============================================================ section 3: cold inserts

// Prints the 1-thread rows of a cold-insert table: each implementation's M imports/s
// (summaries `s1`, by id), its ratio to the "mutex" row, its ns per import and, for a
// peer, importlock's time per import over the peer's.
template <class Impl>
void print_cold_1t(const std::string& title, const std::vector<Impl>& impls,
                   std::map<std::string, stats>& s1) {
    std::vector<row> r1;
    for (const auto& i : impls) {
        std::string note = bench::num(1e3 / s1[i.id].median) + " ns per import";
        if (i.peer) {
            note += "; time importlock/this: " +
                    bench::ratio_str(s1[i.id].median / s1["importlock"].median);
        } else if (s1.count("tbb") != 0 && i.id != "mutex" && i.id != "shared_mutex") {
            note += "; time this/TBB: " + bench::ratio_str(s1["tbb"].median / s1[i.id].median);
        }
        r1.push_back({i.name, s1[i.id], s1[i.id].median / s1["mutex"].median, note});
    }
    bench::print_table(title, "M/s", "x mutex", r1);
}

void section_cold(const config& cfg) {
    // 1000 fresh keys per thread (issue 10's measurement): `threads` threads
    // import threads x 1000 keys into one fresh container, so that every
    // thread does a 1-thread sample's work and the time a thread takes to
    // start counts as little at 4 threads as at 1.
    constexpr unsigned most_threads = 4;
    const auto keys = int_keys(key_count * most_threads);
    const auto keys_for = [&](unsigned threads) {
        return std::vector<int>(keys.begin(), keys.begin() + std::ptrdiff_t{threads} * key_count);
    };
    // One sample: a fresh container (untimed), `threads` threads import their
    // 1000 keys each; returns M imports/s.
    const auto share = [](unsigned t, unsigned) {
        return std::pair<std::size_t, std::size_t>{std::size_t{t} * key_count,
                                                   (std::size_t{t} + 1) * key_count};
    };
    const auto to_mops = [](double wall_ns, unsigned threads) {
        return static_cast<double>(threads) * key_count / wall_ns * 1e3;
    };

    // One system of type System, `threads` threads importing their share of the keys.
    const auto run_one_system = [&]<class System>(unsigned threads, const char* what) {
        auto sys = std::make_unique<System>();
        if constexpr (defines_loaders<System>) define_trivial(*sys, keys_for(threads));
        const double wall = bench::run_parallel(threads, [&](unsigned t) {
            const auto [b, e] = share(t, threads);
            std::uint64_t acc = 0;
            for (std::size_t i = b; i < e; ++i) acc += sys->import_ref(keys[i]).id;
            bench::do_not_optimize(acc);
        });
        if (sys->size() != std::size_t{threads} * key_count) {
            broken(std::string(what) + ": size() != 1000 per thread");
        }
        check_locks(*sys, what);
        return to_mops(wall, threads);
    };
    const auto run_importlock = [&](unsigned threads) {
        return run_one_system.template operator()<int_system>(threads, "cold inserts");
    };
    // The loader computed from the key by a function_finder, as each peer's
    // initialiser is given at the call: no lookup of a defined loader.
    const auto run_importlock_fn = [&](unsigned threads) {
        using computed_system = importlock::basic_import_system<
            int, bench_module, importlock::per_key_locks,
            importlock::function_finder<int, bench_module, spec_of_id>>;
        return run_one_system.template operator()<computed_system>(threads,
                                                                   "cold inserts, function_finder");
    };
    // The floor of the data model: a single-threaded policy (no_locks: no
    // mutex, no claim word read-modify-write, no read sections), 1 thread only.
    const auto run_importlock_no_locks = [&](unsigned threads) {
        using system_type =
            importlock::basic_import_system<int, bench_module, importlock::no_locks>;
        return run_one_system.template operator()<system_type>(threads, "cold inserts, no_locks");
    };
    const auto run_importlock_no_locks_fn = [&](unsigned threads) {
        using system_type = importlock::basic_import_system<
            int, bench_module, importlock::no_locks,
            importlock::function_finder<int, bench_module, spec_of_id>>;
        return run_one_system.template operator()<system_type>(
            threads, "cold inserts, no_locks, function_finder");
    };
    // The same with the state split into 8 shards by key hash (a policy).
    const auto run_importlock_sharded = [&](unsigned threads) {
        using sharded_system =
            importlock::basic_import_system<int, bench_module, importlock::sharded_per_key_locks>;
        return run_one_system.template operator()<sharded_system>(threads, "cold inserts, sharded");
    };
    // The sharded system again, each thread's keys in shards of their own (8 / threads
    // each; a key's shard is its hash's low 3 bits, std::hash<int> is the identity): no
    // cache line of a shard is written by two threads. The ceiling of the two rows above
    // on this machine, not a way to use the library.
    const auto run_importlock_sharded_disjoint = [&](unsigned threads) {
        using system_type = importlock::basic_import_system<
            int, bench_module, importlock::sharded_per_key_locks,
            importlock::function_finder<int, bench_module, spec_of_id>>;
        auto sys = std::make_unique<system_type>();
        const std::size_t per = 8 / threads;  // shards per thread (1, 2 or 4 threads)
        const auto key_of = [per](unsigned t, std::size_t i) {
            return static_cast<int>((i / per) * 8 + t * per + i % per);
        };
        const double wall = bench::run_parallel(threads, [&](unsigned t) {
            std::uint64_t acc = 0;
            for (std::size_t i = 0; i < key_count; ++i) acc += sys->import_ref(key_of(t, i)).id;
            bench::do_not_optimize(acc);
        });
        if (sys->size() != std::size_t{threads} * key_count) {
            broken("cold inserts, disjoint shards: size() != 1000 per thread");
        }
        check_locks(*sys, "cold inserts, disjoint shards");
        return to_mops(wall, threads);
    };
    // Independent systems: nothing is shared but what the library shares
    // between instances (ideal 2t/1t: 2.00x).
    const auto run_importlock_per_thread = [&](unsigned threads) {
        std::vector<std::unique_ptr<int_system>> systems;
        for (unsigned t = 0; t < threads; ++t) {
            systems.push_back(std::make_unique<int_system>());
            const auto [b, e] = share(t, threads);
            define_trivial(*systems.back(),
                           std::vector<int>(keys.begin() + static_cast<std::ptrdiff_t>(b),
                                            keys.begin() + static_cast<std::ptrdiff_t>(e)));
        }
        const double wall = bench::run_parallel(threads, [&](unsigned t) {
            const auto [b, e] = share(t, threads);
            std::uint64_t acc = 0;
            for (std::size_t i = b; i < e; ++i) acc += systems[t]->import_ref(keys[i]).id;
            bench::do_not_optimize(acc);
        });
        for (const auto& sys : systems) check_locks(*sys, "cold inserts, a system per thread");
        return to_mops(wall, threads);
    };
    const auto run_mutex_map = [&](unsigned threads) {
        auto map = std::make_unique<std::unordered_map<int, std::shared_ptr<bench_module>>>();
        std::mutex mutex;
        const double wall = bench::run_parallel(threads, [&](unsigned t) {
            const auto [b, e] = share(t, threads);
            std::uint64_t acc = 0;
            for (std::size_t i = b; i < e; ++i) {
                std::lock_guard guard(mutex);
                auto [it, inserted] = map->try_emplace(keys[i]);
                if (inserted) {
                    it->second = std::make_shared<bench_module>();
                    it->second->id = i;
                }
                acc += it->second->id;
            }
            bench::do_not_optimize(acc);
        });
        return to_mops(wall, threads);
    };
    const auto run_shared_map = [&](unsigned threads) {
        auto map = std::make_unique<std::unordered_map<int, std::shared_ptr<bench_module>>>();
        std::shared_mutex mutex;
        const double wall = bench::run_parallel(threads, [&](unsigned t) {
            const auto [b, e] = share(t, threads);
            std::uint64_t acc = 0;
            for (std::size_t i = b; i < e; ++i) {
                {
                    std::shared_lock guard(mutex);
                    if (auto it = map->find(keys[i]); it != map->end()) {
                        acc += it->second->id;
                        continue;
                    }
                }
                std::lock_guard guard(mutex);
                auto [it, inserted] = map->try_emplace(keys[i]);
                if (inserted) {
                    it->second = std::make_shared<bench_module>();
                    it->second->id = i;
                }
                acc += it->second->id;
            }
            bench::do_not_optimize(acc);
        });
        return to_mops(wall, threads);
    };

    // Third-party peers: a fresh container per sample, get() of each key.
    const auto run_peer = [&]<class Peer>(std::type_identity<Peer>, unsigned threads) {
        auto p = std::make_unique<Peer>();
        const double wall = bench::run_parallel(threads, [&](unsigned t) {
            const auto [b, e] = share(t, threads);
            std::uint64_t acc = 0;
            for (std::size_t i = b; i < e; ++i) {
                const std::uint64_t id = i;
                acc += p->get(keys[i], [id](bench_module& m) { m.id = id; }).id;
            }
            bench::do_not_optimize(acc);
        });
        if (p->size() != std::size_t{threads} * key_count) {
            broken(std::string("cold inserts: ") + Peer::name + " size");
        }
        return to_mops(wall, threads);
    };

    struct impl {
        std::string id, name;
        std::function<double(unsigned)> run;
        bool peer = false;
        std::vector<double> t1, t2, t4;
        bool one_thread_only = false;  // a single-threaded policy: no 2- and 4-thread rows
    };
    std::vector<impl> impls;
    impls.push_back({"importlock", "importlock import_ref", run_importlock, false, {}, {}, {}});
    impls.push_back({"importlock_fn",
                     "importlock import_ref, function_finder (loader from the key)",
                     run_importlock_fn,
                     false,
                     {},
                     {},
                     {}});
    impls.push_back({"importlock_no_locks",
                     "importlock import_ref, no_locks (no synchronisation: the floor)",
                     run_importlock_no_locks,
                     false,
                     {},
                     {},
                     {},
                     true});
    impls.push_back({"importlock_no_locks_fn",
                     "importlock import_ref, no_locks, function_finder",
                     run_importlock_no_locks_fn,
                     false,
                     {},
                     {},
                     {},
                     true});
    impls.push_back({"importlock_sharded",
                     "importlock import_ref, sharded_per_key_locks (8 shards)",
                     run_importlock_sharded,
                     false,
                     {},
                     {},
                     {}});
    impls.push_back({"importlock_disjoint",
                     "importlock import_ref, 8 shards, each thread's keys in its own shards",
                     run_importlock_sharded_disjoint,
                     false,
                     {},
                     {},
                     {}});
    impls.push_back({"importlock_per_thread",
                     "importlock import_ref, a system per thread",
                     run_importlock_per_thread,
                     false,
                     {},
                     {},
                     {}});
    impls.push_back({"mutex", "std::mutex + unordered_map", run_mutex_map, false, {}, {}, {}});
    impls.push_back({"shared_mutex",
                     "std::shared_mutex + unordered_map (double-checked)",
                     run_shared_map,
                     false,
                     {},
                     {},
                     {}});
    bench::peers::for_each_peer<int, bench_module>([&]<class Peer>(std::type_identity<Peer> tag) {
        impls.push_back({Peer::id,
                         Peer::name,
                         [run_peer, tag](unsigned threads) { return run_peer(tag, threads); },
                         true,
                         {},
                         {},
                         {}});
    });
    for (auto& i : impls) bench::sink(static_cast<std::uint64_t>(i.run(1)));  // warm-up
    for (int rep = 0; rep < cfg.cheap_reps; ++rep) {
        for (auto& i : impls) {
            i.t1.push_back(i.run(1));
            if (i.one_thread_only) continue;
            i.t2.push_back(i.run(2));
            i.t4.push_back(i.run(4));
        }
    }
    std::map<std::string, stats> s1, s2, s4;
    for (auto& i : impls) {
        s1[i.id] = summarize(i.t1);
        put("cold.1t." + i.id, s1[i.id]);
        if (i.one_thread_only) continue;
        s2[i.id] = summarize(i.t2);
        s4[i.id] = summarize(i.t4);
        put("cold.2t." + i.id, s2[i.id]);
        put("cold.4t." + i.id, s4[i.id]);
    }
    print_cold_1t(
        "3. Cold inserts, 1000 distinct int keys into a fresh container, 1 thread: "
        "M imports/s (higher is better); ratio = row / mutex map",
        impls, s1);
    for (const unsigned threads : {2u, 4u}) {
        auto& s = threads == 2 ? s2 : s4;
        const std::string tt = std::to_string(threads) + "t";
        std::vector<row> r;
        for (auto& i : impls) {
            if (i.one_thread_only) continue;
            const double scaling = s[i.id].median / s1[i.id].median;
            put("cold.scaling" + std::string(threads == 2 ? "" : "4") + "." + i.id,
                {scaling, scaling, scaling, 1});
            const double best = s[i.id].max / s1[i.id].max;
            std::string note = i.id == "importlock" && threads == 2 ? "target >= 1.50x; "
                               : i.id == "importlock_per_thread"
                                   ? "independent systems: ideal " +
                                         bench::ratio_str(ideal_scaling(threads)) + "; "
                               : i.id == "importlock_disjoint"
                                   ? "no shard line written by two threads; "
                                   : std::string();
            if (i.peer) {
                note += "time importlock/this at " + tt + ": " +
                        bench::ratio_str(s[i.id].median / s["importlock"].median) + "; ";
            }
            note += "best-of-reps " + tt + "/1t " + bench::ratio_str(best);
            r.push_back({i.name, s[i.id], scaling, note});
        }
        bench::print_table("3. Cold inserts, " + std::to_string(threads) + " threads (" +
                               std::to_string(key_count) +
                               " fresh keys each, one container): aggregate M imports/s "
                               "(higher is better); "
                               "ratio = " +
                               tt + " / 1t (ideal " + bench::ratio_str(ideal_scaling(threads)) +
                               ")",
                           "M/s", tt + "/1t", r);
    }
}

// Section 3c: hits beside cold imports. Thread 0 looks up 1000 loaded int keys
// (shuffled order) while thread 1 imports fresh keys into the same container
// without pause, until thread 0 is done (timed once thread 1 has imported 100
// keys); or, for the reference, while thread 1 sleeps (the two cores of a small
// machine may be one core's two hardware threads: a spinning thread 1 would slow
// thread 0 down by itself). Returns thread 0's ns per lookup; sets `imported` to
// the keys thread 1 imported while thread 0 was timed. A hit that writes nothing
// can still read a cache line that an import writes (a mutex, a counter): then
// imports make the lookups miss that line.
template <class Hit, class Import>
double hits_beside_imports(const config& cfg, const std::vector<std::uint32_t>& order, Hit hit,
                           Import import, bool importing, std::uint64_t& imported) {
    // Thread 1's count of imports, on a line of its own (thread 0 reads it twice).
    struct alignas(64) counter {
        std::atomic<std::uint64_t> n{0};
    } count;
    std::atomic<bool> started{false};
    std::atomic<bool> done{false};
    double ns = 0;
    bench::run_parallel(2, [&](unsigned t) {
        if (t == 1) {
            started.store(true, std::memory_order_release);
            if (!importing) {
                done.wait(false, std::memory_order_acquire);  // asleep: the core to itself
                return;
            }
            for (std::uint32_t k = 1'000'000; !done.load(std::memory_order_acquire); ++k) {
                import(k);  // fresh keys, above the loaded ones
                count.n.store(k - 999'999, std::memory_order_relaxed);
            }
            return;
        }
        // Timing starts once thread 1 runs (importing: 100 imports in), so that
        // a thread 1 not yet scheduled does not pass for one that disturbs nothing.
        while (!started.load(std::memory_order_acquire)) std::this_thread::yield();
        while (importing && count.n.load(std::memory_order_relaxed) < 100)
            std::this_thread::yield();
        const std::size_t n = cfg.hit_lookups;
        const std::uint32_t* o = order.data();
        const std::size_t mask = order.size() - 1;
        std::uint64_t acc = 0;
        const std::uint64_t before = count.n.load(std::memory_order_relaxed);
        const auto t0 = now();
        for (std::size_t i = 0; i < n; ++i) acc += hit(o[i & mask]);
        ns = bench::ns_between(t0, now()) / static_cast<double>(n);
        imported = count.n.load(std::memory_order_relaxed) - before;
        done.store(true, std::memory_order_release);
        done.notify_one();
        bench::do_not_optimize(acc);
    });
    return ns;
}

void section_hits_beside_imports(const config& cfg) {
    const auto order = bench::shuffled_order(key_count, order_length, 0x2468'ace0u);
    using computed_system =
        importlock::basic_import_system<int, bench_module, importlock::per_key_locks,
                                        importlock::function_finder<int, bench_module, spec_of_id>>;
    struct impl {
        std::string id, name;
        // One sample on a fresh container holding keys 0..999: thread 0's ns per
        // lookup, thread 1 importing or not; sets the keys it imported.
        std::function<double(bool importing, std::uint64_t& imported)> run;
        std::vector<double> idle, busy, imported;
    };
    std::vector<impl> impls;
    impls.push_back(
        {"importlock",
         "importlock import_ref",
         [&](bool importing, std::uint64_t& imported) {
             auto sys = std::make_unique<computed_system>();
             for (std::uint32_t k = 0; k < key_count; ++k)
                 bench::sink(sys->import_ref(static_cast<int>(k)).id);
             const double ns = hits_beside_imports(
                 cfg, order,
                 [&](std::uint32_t k) { return sys->import_ref(static_cast<int>(k)).id; },
                 [&](std::uint32_t k) { bench::sink(sys->import_ref(static_cast<int>(k)).id); },
                 importing, imported);
             check_locks(*sys, "hits beside imports");
             return ns;
         },
         {},
         {},
         {}});
    impls.push_back({"shared_mutex",
                     "std::shared_mutex + unordered_map (double-checked)",
                     [&](bool importing, std::uint64_t& imported) {
                         std::unordered_map<int, std::shared_ptr<bench_module>> map;
                         std::shared_mutex mutex;
                         const auto get = [&](std::uint32_t k) -> bench_module& {
                             {
                                 std::shared_lock guard(mutex);
                                 if (auto it = map.find(static_cast<int>(k)); it != map.end())
                                     return *it->second;
                             }
                             std::lock_guard guard(mutex);
                             auto [it, inserted] = map.try_emplace(static_cast<int>(k));
                             if (inserted) {
                                 it->second = std::make_shared<bench_module>();
                                 it->second->id = k;
                             }
                             return *it->second;
                         };
                         for (std::uint32_t k = 0; k < key_count; ++k) bench::sink(get(k).id);
                         return hits_beside_imports(
                             cfg, order, [&](std::uint32_t k) { return get(k).id; },
                             [&](std::uint32_t k) { bench::sink(get(k).id); }, importing, imported);
                     },
                     {},
                     {},
                     {}});
    bench::peers::for_each_peer<int, bench_module>([&]<class Peer>(std::type_identity<Peer>) {
        impls.push_back(
            {Peer::id,
             Peer::name,
             [&](bool importing, std::uint64_t& imported) {
                 auto p = std::make_unique<Peer>();
                 const auto init = [](std::uint32_t k) {
                     return [k](bench_module& m) { m.id = k; };
                 };
                 for (std::uint32_t k = 0; k < key_count; ++k)
                     bench::sink(p->get(static_cast<int>(k), init(k)).id);
                 return hits_beside_imports(
                     cfg, order, [&](std::uint32_t k) { return p->find(static_cast<int>(k)).id; },
                     [&](std::uint32_t k) { bench::sink(p->get(static_cast<int>(k), init(k)).id); },
                     importing, imported);
             },
             {},
             {},
             {}});
    });
    for (int rep = 0; rep < cfg.reps; ++rep) {
        for (auto& i : impls) {
            std::uint64_t imported = 0;
            i.idle.push_back(i.run(false, imported));
            i.busy.push_back(i.run(true, imported));
            i.imported.push_back(static_cast<double>(imported));
        }
    }
    std::vector<row> rows;
    for (auto& i : impls) {
        const stats idle = summarize(i.idle), busy = summarize(i.busy);
        put("beside.idle." + i.id, idle);
        put("beside.busy." + i.id, busy);
        rows.push_back({i.name, busy, busy.median / idle.median,
                        "thread 1 idle: " + bench::num(idle.median) + " ns; it imported " +
                            bench::num(summarize(i.imported).median) +
                            " keys while thread 0 was timed (median)"});
    }
    bench::print_table(
        "3c. Hits beside cold imports: ns per lookup on thread 0 over 1000 loaded int keys "
        "(shuffled order) while thread 1 imports fresh keys into the same container (lower "
        "is better); ratio = beside imports / thread 1 idle",
        "ns", "x idle", rows);
}

// Section 3b: the 1-thread cold rows with std::string keys ("package_module_N":
// as long as the hit section's keys, but without a dot, so that importlock
// imports no parent and every row does the same work: one lookup that misses,
// one insert, one module).
void section_cold_string(const config& cfg) {
    std::vector<std::string> keys;
    keys.reserve(key_count);
    for (std::uint32_t i = 0; i < key_count; ++i) {
        keys.push_back("package_module_" + std::to_string(i));
    }
    const auto to_mops = [](double wall_ns) {
        return static_cast<double>(key_count) / wall_ns * 1e3;
    };
    const auto run_system = [&]<class System>(std::type_identity<System>) {
        auto sys = std::make_unique<System>();
        if constexpr (defines_loaders<System>) define_trivial(*sys, keys);
        const double wall = bench::run_parallel(1, [&](unsigned) {
            std::uint64_t acc = 0;
            for (const std::string& k : keys) acc += sys->import_ref(k).id;
            bench::do_not_optimize(acc);
        });
        // define_trivial also defines "package"; no key here imports it.
        if (sys->size() != key_count) broken("cold string inserts: size() != 1000");
        check_locks(*sys, "cold string inserts");
        return to_mops(wall);
    };
    const auto run_importlock = [&] { return run_system(std::type_identity<str_system>{}); };
    const auto run_importlock_fn = [&] {
        using computed_system = importlock::basic_import_system<
            std::string, bench_module, importlock::per_key_locks,
            importlock::function_finder<std::string, bench_module, spec_of_string>>;
        return run_system(std::type_identity<computed_system>{});
    };
    const auto run_importlock_no_locks = [&] {
        using system_type =
            importlock::basic_import_system<std::string, bench_module, importlock::no_locks>;
        return run_system(std::type_identity<system_type>{});
    };
    const auto run_importlock_no_locks_fn = [&] {
        using system_type = importlock::basic_import_system<
            std::string, bench_module, importlock::no_locks,
            importlock::function_finder<std::string, bench_module, spec_of_string>>;
        return run_system(std::type_identity<system_type>{});
    };
    const auto run_mutex_map = [&] {
        auto map =
            std::make_unique<std::unordered_map<std::string, std::shared_ptr<bench_module>>>();
        std::mutex mutex;
        const double wall = bench::run_parallel(1, [&](unsigned) {
            std::uint64_t acc = 0;
            for (std::size_t i = 0; i < keys.size(); ++i) {
                std::lock_guard guard(mutex);
                auto [it, inserted] = map->try_emplace(keys[i]);
                if (inserted) {
                    it->second = std::make_shared<bench_module>();
                    it->second->id = i;
                }
                acc += it->second->id;
            }
            bench::do_not_optimize(acc);
        });
        return to_mops(wall);
    };
    const auto run_peer = [&]<class Peer>(std::type_identity<Peer>) {
        auto p = std::make_unique<Peer>();
        const double wall = bench::run_parallel(1, [&](unsigned) {
            std::uint64_t acc = 0;
            for (std::size_t i = 0; i < keys.size(); ++i) {
                const std::uint64_t id = i;
                acc += p->get(keys[i], [id](bench_module& m) { m.id = id; }).id;
            }
            bench::do_not_optimize(acc);
        });
        if (p->size() != key_count) {
            broken(std::string("cold string inserts: ") + Peer::name + " size");
        }
        return to_mops(wall);
    };
    struct impl {
        std::string id, name;
        std::function<double()> run;
        bool peer = false;
        std::vector<double> t1;
    };
    std::vector<impl> impls;
    impls.push_back({"importlock", "importlock import_ref", run_importlock, false, {}});
    impls.push_back({"importlock_fn",
                     "importlock import_ref, function_finder (loader from the key)",
                     run_importlock_fn,
                     false,
                     {}});
    impls.push_back({"importlock_no_locks",
                     "importlock import_ref, no_locks (no synchronisation: the floor)",
                     run_importlock_no_locks,
                     false,
                     {}});
    impls.push_back({"importlock_no_locks_fn",
                     "importlock import_ref, no_locks, function_finder",
                     run_importlock_no_locks_fn,
                     false,
                     {}});
    impls.push_back({"mutex", "std::mutex + unordered_map", run_mutex_map, false, {}});
    bench::peers::for_each_peer<std::string, bench_module>(
        [&]<class Peer>(std::type_identity<Peer> tag) {
            impls.push_back(
                {Peer::id, Peer::name, [run_peer, tag] { return run_peer(tag); }, true, {}});
        });
    for (auto& i : impls) bench::sink(static_cast<std::uint64_t>(i.run()));  // warm-up
    for (int rep = 0; rep < cfg.cheap_reps; ++rep) {
        for (auto& i : impls) i.t1.push_back(i.run());
    }
    std::map<std::string, stats> s1;
    for (auto& i : impls) {
        s1[i.id] = summarize(i.t1);
        put("coldstr.1t." + i.id, s1[i.id]);
    }
    print_cold_1t(
        "3b. Cold inserts, 1000 distinct std::string keys (\"package_module_N\", no parent) "
        "into a fresh container, 1 thread: M imports/s (higher is better); ratio = row / "
        "mutex map",
        impls, s1);
}

// ============================================================ section 4: slow loaders

void section_slow(const config& cfg) {
    constexpr int per_thread = 20;
    constexpr auto spin = std::chrono::microseconds(50);
    const auto busy_loader = [spin](bench_module& m, importer_t<int>&) {
        bench::busy_wait(spin);
        m.id = 1;
    };
    const auto keys_of = [](unsigned t, int j) { return static_cast<int>(t) * per_thread + j; };

    const auto run_system = [&](auto& sys) {
        for (unsigned t = 0; t < 2; ++t)
            for (int j = 0; j < per_thread; ++j) sys.finder().define(keys_of(t, j), busy_loader);
        const double wall = bench::run_parallel(2, [&](unsigned t) {
            std::uint64_t acc = 0;
            for (int j = 0; j < per_thread; ++j) acc += sys.import_ref(keys_of(t, j)).id;
            bench::do_not_optimize(acc);
        });
        check_locks(sys, "independent slow loaders");
        return wall;
    };
    const auto run_per_key = [&] {
        int_system sys;
        return run_system(sys);
    };
    const auto run_global = [&] {
        int_global_system sys;
        return run_system(sys);
    };
    const auto run_once_map = [&] {
        struct once_slot {
            std::once_flag flag;
            bench_module module;
        };
        std::unordered_map<int, once_slot> map;
        std::mutex mutex;
        return bench::run_parallel(2, [&](unsigned t) {
            std::uint64_t acc = 0;
            for (int j = 0; j < per_thread; ++j) {
                once_slot* slot = nullptr;
                {
                    std::lock_guard guard(mutex);
                    slot = &map.try_emplace(keys_of(t, j)).first->second;
                }
                std::call_once(slot->flag, [slot, spin] {
                    bench::busy_wait(spin);
                    slot->module.id = 1;
                });
                acc += slot->module.id;
            }
            bench::do_not_optimize(acc);
        });
    };
    const auto run_mutex_map = [&] {
        std::unordered_map<int, std::shared_ptr<bench_module>> map;
        std::mutex mutex;
        return bench::run_parallel(2, [&](unsigned t) {
            std::uint64_t acc = 0;
            for (int j = 0; j < per_thread; ++j) {
                std::lock_guard guard(mutex);
                auto [it, inserted] = map.try_emplace(keys_of(t, j));
                if (inserted) {
                    auto m = std::make_shared<bench_module>();
                    bench::busy_wait(spin);
                    m->id = 1;
                    it->second = std::move(m);
                }
                acc += it->second->id;
            }
            bench::do_not_optimize(acc);
        });
    };
    // Third-party peers: a fresh container per sample, the busy initialiser run by get().
    const auto run_peer = [&]<class Peer>(std::type_identity<Peer>) {
        Peer p;
        return bench::run_parallel(2, [&](unsigned t) {
            std::uint64_t acc = 0;
            for (int j = 0; j < per_thread; ++j) {
                acc += p.get(keys_of(t, j), [spin](bench_module& m) {
                            bench::busy_wait(spin);
                            m.id = 1;
                        }).id;
            }
            bench::do_not_optimize(acc);
        });
    };
    struct impl {
        std::string id, name;
        std::function<double()> run;
        bool peer = false;
        std::vector<double> us;
    };
    std::vector<impl> impls;
    impls.push_back({"per_key", "importlock per_key_locks", run_per_key, false, {}});
    impls.push_back({"global", "importlock global_lock", run_global, false, {}});
    impls.push_back(
        {"once_map", "mutex map of once_flag slots + call_once", run_once_map, false, {}});
    impls.push_back(
        {"mutex_map", "std::mutex + unordered_map, init under the lock", run_mutex_map, false, {}});
    bench::peers::for_each_peer<int, bench_module>([&]<class Peer>(std::type_identity<Peer> tag) {
        impls.push_back(
            {Peer::id, Peer::name, [run_peer, tag] { return run_peer(tag); }, true, {}});
    });
    for (auto& i : impls) bench::sink(static_cast<std::uint64_t>(i.run()));  // warm-up
    for (int rep = 0; rep < cfg.cheap_reps; ++rep)
        for (auto& i : impls) i.us.push_back(i.run() / 1e3);
    std::vector<row> rows;
    std::map<std::string, stats> s;
    for (auto& i : impls) {
        s[i.id] = summarize(i.us);
        put("slow." + i.id, s[i.id]);
    }
    for (auto& i : impls) {
        std::string note = i.id == "per_key"  ? "target <= 1100 us (ideal ~1000)"
                           : i.id == "global" ? "serialised: ~2000 expected"
                                              : std::string();
        if (i.peer) {
            note =
                "time importlock/this: " + bench::ratio_str(s["per_key"].median / s[i.id].median);
        }
        rows.push_back({i.name, s[i.id], s[i.id].median / s["once_map"].median, note});
    }
    bench::print_table(
        "4. Independent slow loaders: 2 threads x 20 distinct keys, 50 us busy "
        "loaders: wall us (lower is better); ratio = row / once_flag map",
        "us", "x once", rows);
}

// ============================================================ section 5: deadlock detection

struct chain_sample {
    double park_ns = 0;     // new thread's blocking import of key 0, until parked
    double close_ns = 0;    // one cycle-closing import (returns the partial module)
    double timeout_ns = 0;  // one import_module_for(key 0, 0 ns): the walk, then the timeout
};

// Builds a wait-for chain of `length` parked threads: thread i (0 <= i < length)
// holds key i inside its loader and imports key i+1; thread `length` holds key
// `length` and its loader waits on a latch. Then (a) thread `length` imports
// key 0 `close_calls` times, each closing a cycle of length+1 locks and
// returning the partial module at once, and (b) a new thread imports key 0 and
// blocks; the time until waiter_count(0) shows it is parked is recorded.
chain_sample run_chain(unsigned length, int close_calls) {
    int_system sys;
    const int last = static_cast<int>(length);
    std::atomic<unsigned> holding{0};
    std::atomic<int> close_go{0}, close_done{0}, release{0};
    double close_ns = 0;
    for (int i = 0; i <= last; ++i) {
        sys.finder().define(i, [&, i](bench_module& m, importer_t<int>& imp) {
            m.id = static_cast<std::uint64_t>(i);
            holding.fetch_add(1);
            while (holding.load() < length + 1) std::this_thread::yield();
            if (i < last) {
                bench::sink(imp.import_ref(i + 1).id);
                return;
            }
            close_go.wait(0);
            std::uint64_t acc = 0;
            const auto t0 = now();
            for (int c = 0; c < close_calls; ++c) acc += imp.import_ref(0).id;  // partial module
            close_ns = ns_between(t0, now()) / close_calls;
            bench::do_not_optimize(acc);
            close_done.store(1);
            close_done.notify_all();
            release.wait(0);
        });
    }
    std::vector<std::thread> chain;
    for (int i = 0; i <= last; ++i)
        chain.emplace_back([&sys, i] { bench::sink(sys.import_ref(i).id); });
    // Wait until every chain thread but the last is parked on the next key.
    for (int i = 1; i <= last; ++i)
        while (sys.waiter_count(i) != 1) std::this_thread::sleep_for(std::chrono::microseconds(20));
    while (holding.load() < length + 1) std::this_thread::yield();

    chain_sample out;
    close_go.store(1);
    close_go.notify_all();
    close_done.wait(0);
    out.close_ns = close_ns;

    // The same walk as a blocking acquire, without parking: a zero timeout
    // throws import_timeout_error right after the deadlock check.
    std::thread prober([&] {
        int timed_out = 0;
        const auto t0 = now();
        for (int c = 0; c < close_calls; ++c) {
            try {
                bench::sink(sys.import_module_for(0, std::chrono::nanoseconds(0))->id);
            } catch (const importlock::import_timeout_error&) {
                ++timed_out;
            }
        }
        out.timeout_ns = ns_between(t0, now()) / close_calls;
        if (timed_out != close_calls) broken("zero-timeout import of a held key did not time out");
    });
    prober.join();

    std::atomic<std::int64_t> start_ns{0};
    std::thread blocker([&] {
        start_ns.store(now().time_since_epoch().count());
        bench::sink(sys.import_ref(0).id);
    });
    while (sys.waiter_count(0) == 0)
        std::this_thread::yield();  // yield: the blocker may share this core
    const auto parked = now();
    while (start_ns.load() == 0) std::this_thread::yield();
    out.park_ns = static_cast<double>(parked.time_since_epoch().count() - start_ns.load());

    release.store(1);
    release.notify_all();
    for (auto& th : chain) th.join();
    blocker.join();
    check_locks(sys, "wait-for chain of " + std::to_string(length));
    return out;
}

void section_cycle(const config& cfg) {
    const std::vector<unsigned> lengths = {0, 1, 4, 16, 64};
    std::map<unsigned, std::vector<double>> park, close, timeout;
    for (int rep = 0; rep < cfg.reps; ++rep) {
        for (unsigned L : lengths) {
            const chain_sample s = run_chain(L, cfg.close_calls);
            park[L].push_back(s.park_ns / 1e3);
            close[L].push_back(s.close_ns);
            timeout[L].push_back(s.timeout_ns);
        }
    }
    std::vector<row> rp, rc, rt;
    const double park1 = summarize(park[1]).median, close1 = summarize(close[1]).median;
    const double timeout1 = summarize(timeout[1]).median;
    for (unsigned L : lengths) {
        const stats sp = summarize(park[L]), sc = summarize(close[L]), st = summarize(timeout[L]);
        put("cycle.park." + std::to_string(L), sp);
        put("cycle.close." + std::to_string(L), sc);
        put("cycle.timeout." + std::to_string(L), st);
        rt.push_back({"chain length " + std::to_string(L), st, st.median / timeout1,
                      L == 0 ? "walk of one lock; the rest is the exception" : ""});
        rp.push_back({"chain length " + std::to_string(L), sp, sp.median / park1,
                      L == 0 ? "owner not waiting: no walk beyond one lock" : ""});
        rc.push_back({L == 0 ? std::string("length 0 (same-thread re-entry)")
                             : "chain length " + std::to_string(L) + " (cycle of " +
                                   std::to_string(L + 1) + " locks)",
                      sc, sc.median / close1, L == 0 ? "own import stack, no graph walk" : ""});
    }
    bench::print_table(
        "5a. Blocking acquire at the end of a wait-for chain: us from the call until "
        "waiter_count() shows the thread parked (includes polling latency); "
        "ratio = row / length 1",
        "us", "x len 1", rp);
    bench::print_table(
        "5b. Closing a cycle (int keys): ns per import that finds the cycle and "
        "returns the partial module; ratio = row / length 1",
        "ns", "x len 1", rc);
    bench::print_table(
        "5c. The blocking acquire's check without the parking: ns per import_module_for(key 0, "
        "0 ns) at the end of the chain (deadlock walk, then import_timeout_error thrown and "
        "caught); ratio = row / length 1",
        "ns", "x len 1", rt);
}

// ============================================================ section 6: memory

struct mem_result {
    double bytes_per = 0;
    double footprint_per = 0;
    double blocks_per = 0;
};

mem_result per_module(alloc_count::snapshot before, alloc_count::snapshot after,
                      std::size_t modules, alloc_count::snapshot unit) {
    const double n = static_cast<double>(modules);
    mem_result r;
    r.bytes_per =
        (static_cast<double>(after.bytes - before.bytes) - n * static_cast<double>(unit.bytes)) / n;
    r.footprint_per = (static_cast<double>(after.footprint - before.footprint) -
                       n * static_cast<double>(unit.footprint)) /
                      n;
    r.blocks_per =
        (static_cast<double>(after.blocks - before.blocks) - n * static_cast<double>(unit.blocks)) /
        n;
    return r;
}

void section_memory(const config& cfg) {
    // What one module costs on its own (make_shared: control block + object).
    alloc_count::enabled.store(true);
    alloc_count::snapshot unit{};
    {
        const auto b = alloc_count::take();
        auto p = std::make_shared<bench_module>();
        const auto a = alloc_count::take();
        unit = {a.bytes - b.bytes, a.footprint - b.footprint, a.blocks - b.blocks};
        bench::sink(p->id);
    }
    alloc_count::enabled.store(false);

    std::vector<row> rows;
    for (const std::uint32_t count : {std::uint32_t{1000}, std::uint32_t{100'000}}) {
        const auto keys = string_keys(count);
        mem_result il, um;
        double finder_per = 0;
        {
            auto sys = std::make_unique<str_system>();
            alloc_count::enabled.store(true);
            const auto f0 = alloc_count::take();
            define_trivial(*sys, keys);
            const auto f1 = alloc_count::take();
            for (const auto& k : keys) bench::sink(sys->import_ref(k).id);
            const auto f2 = alloc_count::take();
            alloc_count::enabled.store(false);
            finder_per = static_cast<double>(f1.bytes - f0.bytes) / static_cast<double>(count + 1);
            il = per_module(f1, f2, sys->size(), unit);
            if (sys->size() != count + 1) broken("memory: size() != keys + 1");
            check_locks(*sys, "memory");
        }
        {
            std::unordered_map<std::string, std::shared_ptr<bench_module>> map;
            alloc_count::enabled.store(true);
            const auto m0 = alloc_count::take();
            map.emplace("package", std::make_shared<bench_module>());
            for (std::size_t i = 0; i < keys.size(); ++i) {
                auto m = std::make_shared<bench_module>();
                m->id = i;
                map.emplace(keys[i], std::move(m));
            }
            const auto m1 = alloc_count::take();
            alloc_count::enabled.store(false);
            um = per_module(m0, m1, map.size(), unit);
        }
        const std::string n = std::to_string(count);
        put("mem." + n + ".importlock", {il.bytes_per, il.bytes_per, il.bytes_per, 1});
        put("mem." + n + ".map", {um.bytes_per, um.bytes_per, um.bytes_per, 1});
        put("mem." + n + ".importlock_fp",
            {il.footprint_per, il.footprint_per, il.footprint_per, 1});
        put("mem." + n + ".map_fp", {um.footprint_per, um.footprint_per, um.footprint_per, 1});
        const auto one = [](double v) { return stats{v, v, v, 1}; };
        rows.push_back({"importlock registry, " + n + " modules", one(il.bytes_per),
                        il.bytes_per / um.bytes_per,
                        "est. heap footprint " + bench::num(il.footprint_per) + " B (" +
                            bench::ratio_str(il.footprint_per / um.footprint_per) + "), " +
                            bench::num(il.blocks_per) + " allocations/module"});
        rows.push_back({"unordered_map<string, shared_ptr>, " + n, one(um.bytes_per), 1.0,
                        "est. heap footprint " + bench::num(um.footprint_per) + " B, " +
                            bench::num(um.blocks_per) + " allocations/module"});
        rows.push_back({"  (registry_finder definitions, " + n + ")", one(finder_per), std::nullopt,
                        "loaders kept by the default finder, not counted above"});
    }
    bench::print_table(
        "6. Memory: bytes requested per registered module, modules themselves "
        "excluded (" +
            std::to_string(unit.bytes) +
            " B each), keys "
            "\"package.module_N\" (deterministic: one run); ratio = row / unordered_map",
        "B", "x map", rows);
    std::printf(
        "  registry entry (import_system<M>::entry_bytes()) = %zu B, sizeof(std::string) = %zu B, "
        "sizeof(std::shared_ptr) = %zu B\n",
        importlock::import_system<bench_module>::entry_bytes(), sizeof(std::string),
        sizeof(std::shared_ptr<bench_module>));

    // Issue 10, target 3: what a system still holds once every key it imported
    // was erased (size() == 0, no call in flight), against what it held empty,
    // and what erasing costs now that it frees (a grace period per erase). A
    // function_finder, so that no definition is counted; int keys. Three loops:
    // import and erase one key at a time; import every key, then erase every
    // key (the table grows to n and must shrink back); one key at a time while
    // another thread owns a reader record (it did a hit and sleeps), so that
    // each erase's grace period takes the process-wide barrier.
    {
        const std::uint32_t n = cfg.quick ? 100'000 : 1'000'000;
        using computed_system = importlock::basic_import_system<
            int, bench_module, importlock::per_key_locks,
            importlock::function_finder<int, bench_module, spec_of_id>>;
        struct outcome {
            std::int64_t empty_bytes = 0, left_bytes = 0;
            double ns_per_key = 0;
        };
        enum class loop { one_at_a_time, all_then_erase, beside_a_reader };
        const auto run = [&](loop how) {
            outcome o;
            auto idle_reader = std::make_unique<computed_system>();
            std::atomic<int> reader_state{0};  // 1: its record exists; 2: may end
            std::thread reader;
            if (how == loop::beside_a_reader) {
                (void)idle_reader->import_ref(-1);
                reader = std::thread([&] {
                    bench::sink(idle_reader->import_ref(-1).id);  // a hit: the record
                    reader_state.store(1);
                    reader_state.notify_all();
                    int seen = 1;
                    while (seen != 2) {
                        reader_state.wait(seen);
                        seen = reader_state.load();
                    }
                });
                int seen = 0;
                while (seen != 1) {
                    reader_state.wait(seen);
                    seen = reader_state.load();
                }
            }
            alloc_count::enabled.store(true);
            const auto before = alloc_count::take();
            std::size_t left_size = 0;
            {
                auto sys = std::make_unique<computed_system>();
                o.empty_bytes = alloc_count::take().bytes - before.bytes;
                const auto start = bench::clock_type::now();
                if (how == loop::all_then_erase) {
                    for (std::uint32_t k = 0; k < n; ++k) {
                        bench::sink(sys->import_ref(static_cast<int>(k)).id);
                    }
                    for (std::uint32_t k = 0; k < n; ++k) sys->erase(static_cast<int>(k));
                } else {
                    for (std::uint32_t k = 0; k < n; ++k) {
                        bench::sink(sys->import_ref(static_cast<int>(k)).id);
                        sys->erase(static_cast<int>(k));
                    }
                }
                o.ns_per_key =
                    std::chrono::duration<double, std::nano>(bench::clock_type::now() - start)
                        .count() /
                    n;
                o.left_bytes = alloc_count::take().bytes - before.bytes;
                left_size = sys->size();
                check_locks(*sys, "memory after erase");
            }
            alloc_count::enabled.store(false);
            if (reader.joinable()) {
                reader_state.store(2);
                reader_state.notify_all();
                reader.join();
            }
            if (left_size != 0) broken("memory after erase: size() != 0");
            return o;
        };
        const outcome one = run(loop::one_at_a_time);
        const outcome all = run(loop::all_then_erase);
        const outcome beside = run(loop::beside_a_reader);
        const auto ratio_of = [](const outcome& o) {
            return static_cast<double>(o.left_bytes) / static_cast<double>(o.empty_bytes);
        };
        const auto per_key_of = [n](const outcome& o) {
            return static_cast<double>(o.left_bytes - o.empty_bytes) / static_cast<double>(n);
        };
        // The target reads the worse of the two loops without a reader.
        const outcome& worse = ratio_of(all) > ratio_of(one) ? all : one;
        const double ratio = ratio_of(worse);
        const double per_key = per_key_of(worse);
        put("mem.erased.ratio", {ratio, ratio, ratio, 1});
        put("mem.erased.per_key", {per_key, per_key, per_key, 1});
        put("mem.erased.mb", {static_cast<double>(worse.left_bytes) / 1e6, 0, 0, 1});
        std::printf(
            "\n6b. Memory after importing and erasing %u distinct int keys (size() == 0; "
            "function_finder), against %.2f KB held empty (its first table), and the time of "
            "an import plus its erase (one run each)\n",
            n, static_cast<double>(one.empty_bytes) / 1e3);
        const auto row = [&](const char* what, const outcome& o) {
            std::printf("  %-58s %8.3f MB held  %8.2fx empty  %7.1f B per key  %8.1f ns per key\n",
                        what, static_cast<double>(o.left_bytes) / 1e6, ratio_of(o), per_key_of(o),
                        o.ns_per_key);
        };
        row("one key at a time", one);
        row("every key imported, then every key erased", all);
        row("one key at a time, another thread owning a reader record", beside);
        std::printf(
            "  (an erase frees the entry after a grace period: no wait and a fence when no other "
            "thread owns a reader record, else one process-wide barrier (membarrier) per erase: "
            "the third row)\n");
    }
}

// ============================================================ section 7: scale

// Cold-import and hit cost against the number of keys already loaded, and the
// cost of closing a cycle against the depth of a same-thread import chain.
void section_scale(const config& cfg) {
    std::vector<std::uint32_t> sizes = {1'000, 10'000, 100'000, 1'000'000};
    if (cfg.quick) sizes.pop_back();
    constexpr std::uint32_t batch = 1000;  // fresh keys per cold sample
    const int reps = cfg.quick ? 3 : 5;

    struct impl {
        std::string id, name;
        // Builds a container holding keys [0, n) (untimed; keys up to `limit`
        // may be imported later).
        std::function<void(std::uint32_t n, std::uint32_t limit)> build;
        std::function<std::uint64_t(std::uint32_t first, std::uint32_t count)> cold;  // sum of ids
        batch_fn hit;  // over the shuffled order of the current size
        std::function<void()> reset;
        std::map<std::uint32_t, std::vector<double>> cold_ns, hit_ns;
    };
    std::vector<std::uint32_t> order;

    std::unique_ptr<int_system> sys;
    std::unique_ptr<std::unordered_map<int, std::shared_ptr<bench_module>>> map;
    std::vector<impl> impls;
    impls.push_back(
        {"importlock",
         "importlock import_ref",
         [&](std::uint32_t n, std::uint32_t limit) {
             sys = std::make_unique<int_system>();
             for (std::uint32_t k = 0; k < limit; ++k) {
                 const std::uint64_t id = k;
                 sys->finder().define(static_cast<int>(k),
                                      [id](bench_module& m, importer_t<int>&) { m.id = id; });
             }
             for (std::uint32_t k = 0; k < n; ++k)
                 bench::sink(sys->import_ref(static_cast<int>(k)).id);
         },
         [&](std::uint32_t first, std::uint32_t count) {
             std::uint64_t acc = 0;
             for (std::uint32_t k = first; k < first + count; ++k)
                 acc += sys->import_ref(static_cast<int>(k)).id;
             return acc;
         },
         make_batch([&](std::uint32_t i)
                        -> std::uint64_t { return sys->import_ref(static_cast<int>(i)).id; },
                    order),
         [&] {
             if (sys) check_locks(*sys, "scale");
             sys.reset();
         },
         {},
         {}});
    // The same registry with one computed loader for every key: the cold rows
    // above include the registry_finder's lookup among `limit` definitions (a
    // map of its own, as large as the registry); these do not.
    using computed_finder = importlock::function_finder<int, bench_module, spec_of_id>;
    using computed_system =
        importlock::basic_import_system<int, bench_module, importlock::per_key_locks,
                                        computed_finder>;
    std::unique_ptr<computed_system> computed;
    impls.push_back({"importlock_fn",
                     "importlock import_ref, function_finder",
                     [&](std::uint32_t n, std::uint32_t) {
                         computed =
                             std::make_unique<computed_system>(computed_finder(spec_of_id{}));
                         for (std::uint32_t k = 0; k < n; ++k)
                             bench::sink(computed->import_ref(static_cast<int>(k)).id);
                     },
                     [&](std::uint32_t first, std::uint32_t count) {
                         std::uint64_t acc = 0;
                         for (std::uint32_t k = first; k < first + count; ++k)
                             acc += computed->import_ref(static_cast<int>(k)).id;
                         return acc;
                     },
                     make_batch(
                         [&](std::uint32_t i) -> std::uint64_t {
                             return computed->import_ref(static_cast<int>(i)).id;
                         },
                         order),
                     [&] {
                         if (computed) check_locks(*computed, "scale");
                         computed.reset();
                     },
                     {},
                     {}});
    impls.push_back(
        {"map",
         "std::unordered_map (no lock)",
         [&](std::uint32_t n, std::uint32_t) {
             map = std::make_unique<std::unordered_map<int, std::shared_ptr<bench_module>>>();
             for (std::uint32_t k = 0; k < n; ++k) {
                 auto m = std::make_shared<bench_module>();
                 m->id = k;
                 map->emplace(static_cast<int>(k), std::move(m));
             }
         },
         [&](std::uint32_t first, std::uint32_t count) {
             std::uint64_t acc = 0;
             for (std::uint32_t k = first; k < first + count; ++k) {
                 auto [it, inserted] = map->try_emplace(static_cast<int>(k));
                 if (inserted) {
                     it->second = std::make_shared<bench_module>();
                     it->second->id = k;
                 }
                 acc += it->second->id;
             }
             return acc;
         },
         make_batch([&](std::uint32_t i)
                        -> std::uint64_t { return map->find(static_cast<int>(i))->second->id; },
                    order),
         [&] { map.reset(); },
         {},
         {}});
#if IMPORTLOCK_BENCH_HAVE_TBB
    using tbb_peer = bench::peers::tbb_map<int, bench_module>;
    std::unique_ptr<tbb_peer> tbb;
    impls.push_back(
        {tbb_peer::id,
         tbb_peer::name,
         [&](std::uint32_t n, std::uint32_t) {
             tbb = std::make_unique<tbb_peer>();
             for (std::uint32_t k = 0; k < n; ++k) {
                 const std::uint64_t id = k;
                 bench::sink(
                     tbb->get(static_cast<int>(k), [id](bench_module& m) { m.id = id; }).id);
             }
         },
         [&](std::uint32_t first, std::uint32_t count) {
             std::uint64_t acc = 0;
             for (std::uint32_t k = first; k < first + count; ++k) {
                 const std::uint64_t id = k;
                 acc += tbb->get(static_cast<int>(k), [id](bench_module& m) { m.id = id; }).id;
             }
             return acc;
         },
         make_batch(
             [&](std::uint32_t i) -> std::uint64_t { return tbb->find(static_cast<int>(i)).id; },
             order),
         [&] { tbb.reset(); },
         {},
         {}});
#endif

    const std::size_t lookups = cfg.hit_lookups;
    // ns per key of destroying each container with its modules (importlock:
    // the destructor's teardown, dependents first), by impl and size.
    std::vector<std::map<std::uint32_t, std::vector<double>>> teardown_ns(impls.size());
    for (const std::uint32_t n : sizes) {
        // Up to 1e5 keys every repetition builds fresh containers; at 1e6 one
        // build serves every repetition, whose fresh keys follow the last one's
        // (the container grows by reps x 1000 keys, under 1%).
        const bool rebuild = n <= 100'000;
        const std::uint32_t limit = n + static_cast<std::uint32_t>(reps) * batch;
        order = bench::shuffled_order(n, std::max<std::size_t>(order_length, std::bit_ceil(n)),
                                      0x5eed'0000u + n);
        const std::uint64_t want_hit = expected_sum(order, 0, lookups);
        for (int rep = 0; rep < reps; ++rep) {
            const std::uint32_t first = rebuild ? n : n + static_cast<std::uint32_t>(rep) * batch;
            for (std::size_t which = 0; which < impls.size(); ++which) {
                impl& i = impls[which];
                if (rebuild || rep == 0) i.build(n, limit);
                const auto t0 = now();
                const std::uint64_t got = i.cold(first, batch);
                const auto t1 = now();
                i.cold_ns[n].push_back(ns_between(t0, t1) / batch);
                const std::uint64_t want = std::uint64_t{batch} * first + batch * (batch - 1) / 2;
                if (got != want)
                    broken("scale: " + i.name + " cold imports returned wrong modules");
                bench::sink(i.hit(0, lookups / 8));  // warm-up
                const auto t2 = now();
                const std::uint64_t hit = i.hit(0, lookups);
                const auto t3 = now();
                i.hit_ns[n].push_back(ns_between(t2, t3) / static_cast<double>(lookups));
                if (hit != want_hit) broken("scale: " + i.name + " lookups returned wrong modules");
                if (rebuild || rep + 1 == reps) {
                    const std::uint32_t held = rebuild ? n + batch : limit;
                    const auto t4 = now();
                    i.reset();
                    teardown_ns[which][n].push_back(ns_between(t4, now()) / held);
                }
            }
        }
    }

    const auto size_name = [](std::uint32_t n) {
        switch (n) {
            case 1'000: return std::string("1e3");
            case 10'000: return std::string("1e4");
            case 100'000: return std::string("1e5");
            default: return std::string("1e6");
        }
    };
    for (const bool cold : {true, false}) {
        std::vector<row> rows;
        for (auto& i : impls) {
            const double base = summarize(cold ? i.cold_ns[sizes[0]] : i.hit_ns[sizes[0]]).median;
            for (const std::uint32_t n : sizes) {
                const stats st = summarize(cold ? i.cold_ns[n] : i.hit_ns[n]);
                put(std::string("scale.") + (cold ? "cold." : "hit.") + i.id + "." + size_name(n),
                    st);
                std::string note;
                if (i.id != "importlock") {
                    const double il =
                        summarize(cold ? impls[0].cold_ns[n] : impls[0].hit_ns[n]).median;
                    note = "time importlock/this: " + bench::ratio_str(il / st.median);
                }
                rows.push_back(
                    {i.name + ", " + size_name(n) + " loaded", st, st.median / base, note});
            }
        }
        bench::print_table(
            cold ? "7a. Scale, cold imports: ns per import of 1000 fresh int keys into a container "
                   "already holding N keys, 1 thread (includes any rehash); ratio = row / same "
                   "implementation at 1e3"
                 : "7b. Scale, hit path: ns per lookup over N loaded int keys (shuffled order), 1 "
                   "thread; ratio = row / same implementation at 1e3",
            "ns", "x 1e3", rows);
    }

    {
        std::vector<row> rows;
        for (std::size_t which = 0; which < impls.size(); ++which) {
            const impl& i = impls[which];
            const double base = summarize(teardown_ns[which][sizes[0]]).median;
            for (const std::uint32_t n : sizes) {
                const stats st = summarize(teardown_ns[which][n]);
                put("scale.teardown." + i.id + "." + size_name(n), st);
                std::string note;
                if (which != 0) {
                    const double il = summarize(teardown_ns[0][n]).median;
                    note = "time importlock/this: " + bench::ratio_str(il / st.median);
                }
                rows.push_back(
                    {i.name + ", " + size_name(n) + " loaded", st, st.median / base, note});
            }
        }
        bench::print_table(
            "7e. Scale, teardown: ns per key of destroying the container of 7a with its modules "
            "(importlock: the destructor, dependents first; 1e6: one sample), 1 thread; ratio = "
            "row / same implementation at 1e3",
            "ns", "x 1e3", rows);
    }

    // Same-thread chains: the loader of key i imports key i + 1, the loader of
    // key depth - 1 imports key 0 (the cycle closes at the import stack).
    const std::vector<int> depths = {10, 100, 1000};
    std::map<int, std::vector<double>> per_level, close_ns;
    for (int rep = 0; rep < cfg.reps; ++rep) {
        for (const int depth : depths) {
            int_system chain;
            const std::size_t need = static_cast<std::size_t>(depth) + 1;  // + the closing import
            if (chain.max_import_depth() < need) chain.set_max_import_depth(need);
            double closing = 0;
            for (int k = 0; k < depth; ++k) {
                chain.finder().define(k, [&, k](bench_module& m, importer_t<int>& imp) {
                    m.id = static_cast<std::uint64_t>(k);
                    if (k + 1 < depth) {
                        bench::sink(imp.import_ref(k + 1).id);
                        return;
                    }
                    std::uint64_t acc = 0;
                    const auto t0 = now();
                    for (int c = 0; c < cfg.close_calls; ++c) acc += imp.import_ref(0).id;
                    closing = ns_between(t0, now()) / cfg.close_calls;
                    bench::do_not_optimize(acc);
                });
            }
            const auto t0 = now();
            bench::sink(chain.import_ref(0).id);
            const double total = ns_between(t0, now());
            if (chain.size() != static_cast<std::size_t>(depth))
                broken("scale: chain of " + std::to_string(depth) + " did not import every key");
            check_locks(chain, "scale chain");
            // The closing calls ran inside the chain: take them out of its time.
            per_level[depth].push_back((total - closing * cfg.close_calls) / depth);
            close_ns[depth].push_back(closing);
        }
    }
    std::vector<row> rl, rc;
    const double level10 = summarize(per_level[depths[0]]).median;
    const double close10 = summarize(close_ns[depths[0]]).median;
    for (const int depth : depths) {
        const stats sl = summarize(per_level[depth]), sc = summarize(close_ns[depth]);
        put("scale.chain." + std::to_string(depth), sl);
        put("scale.close." + std::to_string(depth), sc);
        rl.push_back({"depth " + std::to_string(depth), sl, sl.median / level10,
                      "whole chain " + bench::num(sl.median * depth / 1e3) + " us"});
        rc.push_back({"depth " + std::to_string(depth), sc, sc.median / close10,
                      bench::num(sc.median / depth) + " ns per level of the stack"});
    }
    bench::print_table(
        "7c. Scale, a same-thread import chain of depth D closed into a cycle: ns per level "
        "(the chain's import of key 0, minus the timed closing calls, / D); ratio = row / depth 10",
        "ns", "x D=10", rl);
    bench::print_table(
        "7d. Scale, the closing import alone: ns per import of key 0 from the deepest loader "
        "(finds the cycle, returns the partial module; mean of the close calls); ratio = row / "
        "depth 10",
        "ns", "x D=10", rc);
}

// ============================================================ targets

int g_pass = 0, g_miss = 0;
double g_headroom = 2.0;  // the lower of the two parallel-headroom checks

std::string two_thread_caveat() {
    return g_headroom < 1.8
               ? " [unreliable: parallel headroom " + bench::ratio_str(g_headroom) + "]"
               : std::string();
}

// ============================================================ section 8: tracked_mutex

// Lock and unlock of one uncontended mutex, `n` times, in ns per pair. The
// mutex is reached through a pointer the compiler cannot see through, as a
// user's member or global would be.
template <class Mutex>
double lock_unlock_ns(Mutex& m, std::size_t n) {
    Mutex* volatile where = &m;
    Mutex& mutex = *where;
    const auto start = bench::now();
    for (std::size_t i = 0; i < n; ++i) {
        mutex.lock();
        mutex.unlock();
    }
    return bench::ns_between(start, bench::now()) / static_cast<double>(n);
}

void section_mutex(const config& cfg) {
    const std::size_t n = cfg.quick ? 200000 : 2000000;
    std::mutex plain;
    importlock::tracked_mutex tracked{"bench"};
    std::vector<double> tp, tt;
    bench::sink(static_cast<std::uint64_t>(lock_unlock_ns(plain, n / 10)));  // warm-up
    bench::sink(static_cast<std::uint64_t>(lock_unlock_ns(tracked, n / 10)));
    for (int rep = 0; rep < cfg.reps; ++rep) {
        tp.push_back(lock_unlock_ns(plain, n));
        tt.push_back(lock_unlock_ns(tracked, n));
    }
    const stats sp = summarize(tp), st = summarize(tt);
    put("mutex.std", sp);
    put("mutex.tracked", st);
    std::vector<row> rows;
    rows.push_back({"std::mutex lock + unlock", sp, 1.0, ""});
    rows.push_back({"importlock::tracked_mutex lock + unlock", st, st.median / sp.median,
                    "target <= 2.00x; the wait-for graph is not touched"});
    bench::print_table(
        "8. Uncontended lock and unlock, 1 thread: ns per pair; ratio = row / std::mutex", "ns",
        "x mutex", rows);
}

void target(const std::string& what, std::optional<double> value, bool ok,
            const std::string& shown) {
    if (!value) {
        std::printf("  n/a   %s (section not run)\n", what.c_str());
        return;
    }
    (ok ? g_pass : g_miss)++;
    std::printf("  %s  %s: %s\n", ok ? "PASS" : "MISS", what.c_str(), shown.c_str());
}

void ratio_target(const std::string& what, const std::string& num_id, const std::string& den_id,
                  double limit, bool at_most, bool threaded = false) {
    const auto a = median_of(num_id), b = median_of(den_id);
    if (!a || !b) return target(what, std::nullopt, false, "");
    const double r = *a / *b;
    target(what, r, at_most ? r <= limit : r >= limit,
           bench::ratio_str(r) + (at_most ? " (limit <= " : " (limit >= ") +
               bench::ratio_str(limit) + ")" + (threaded ? two_thread_caveat() : std::string()));
}

void print_targets() {
    std::printf("\nTargets\n");
    for (const char* k : {"int", "string"}) {
        const std::string p = std::string("hit.") + k;
        ratio_target(
            std::string("import_ref hit, 1 thread, ") + k + " keys: <= 1.0x unordered_map::find",
            p + ".1t.import_ref", p + ".1t.find", 1.0, true);
    }
    for (const char* k : {"int", "string"}) {
        const std::string p = std::string("hit.") + k;
        const auto sc = median_of(p + ".scaling.import_ref");
        target(std::string("import_ref hit, 2 threads, ") + k +
                   " keys: >= 1.9x its 1-thread throughput",
               sc, sc && *sc >= 1.9,
               sc ? bench::ratio_str(*sc) + " (limit >= 1.90x)" + two_thread_caveat() : "");
        ratio_target(
            std::string("import_ref hit, 2 threads, ") + k + " keys: >= 10x shared_mutex map",
            p + ".2t.import_ref", p + ".2t.shared_mutex", 10.0, false, true);
    }
    for (const char* k : {"int", "string"}) {
        const std::string p = std::string("hit.") + k;
        const auto sc = median_of(p + ".scaling.shared_handle");
        target(std::string("owning hit (shared_module_handle), 2 threads, ") + k +
                   " keys: >= 1.5x its 1-thread throughput",
               sc, sc && *sc >= 1.5,
               sc ? bench::ratio_str(*sc) + " (limit >= 1.50x)" + two_thread_caveat() : "");
    }
    for (const char* k : {"int", "string"}) {
        const std::string p = std::string("hit.") + k;
        ratio_target(std::string("handle hit, ") + k +
                         " keys, one key: get() <= 2x a direct call of a static's accessor",
                     p + ".1t.handle_one", p + ".1t.local_static_one", 2.0, true);
        ratio_target(std::string("handle hit, ") + k +
                         " keys, 1000 keys: accessors over handles <= 2x accessors over statics",
                     p + ".1t.handle_fn", p + ".1t.local_static", 2.0, true);
    }
    ratio_target("tracked_mutex lock + unlock: <= 2x std::mutex", "mutex.tracked", "mutex.std", 2.0,
                 true);
    ratio_target("coalescing wall: <= 1.1x function-local static", "coalesce.importlock",
                 "coalesce.local_static", 1.1, true, true);
    {
        const auto ok = median_of("coalesce.inits_ok");
        target("coalescing: initialiser runs once", ok, ok && *ok == 1.0,
               ok && *ok == 1.0 ? "1 run per repetition" : "ran != 1 times");
    }
    // Throughputs: TBB's M/s over importlock's is importlock's time over TBB's.
    ratio_target("cold import, 1 thread, int keys: <= 1.5x the time of TBB's accessor insert",
                 "cold.1t.tbb", "cold.1t.importlock", 1.5, true);
    ratio_target("cold import, 1 thread, string keys: <= 1.5x the time of TBB's accessor insert",
                 "coldstr.1t.tbb", "coldstr.1t.importlock", 1.5, true);
    // Like for like: the loader computed from the key, as each peer's initialiser is
    // given at the call (the rows above also look up the key's defined loader).
    ratio_target("the same, int keys, function_finder (loader from the key): <= 1.5x TBB",
                 "cold.1t.tbb", "cold.1t.importlock_fn", 1.5, true);
    ratio_target("the same, string keys, function_finder (loader from the key): <= 1.5x TBB",
                 "coldstr.1t.tbb", "coldstr.1t.importlock_fn", 1.5, true);
    {
        const auto sc = median_of("cold.scaling.importlock");
        target("cold distinct keys, 2 threads: aggregate >= 1.5x 1 thread", sc, sc && *sc >= 1.5,
               sc ? bench::ratio_str(*sc) + " (limit >= 1.50x)" + two_thread_caveat() : "");
        const auto sh = median_of("cold.scaling.importlock_sharded");
        target("the same with sharded_per_key_locks", sh, sh && *sh >= 1.5,
               sh ? bench::ratio_str(*sh) + " (limit >= 1.50x)" + two_thread_caveat() : "");
    }
    {
        const auto us = median_of("slow.per_key");
        target("independent 50 us loaders (2 x 20): <= 1.1 ms", us, us && *us <= 1100.0,
               us ? bench::num(*us) + " us (limit <= 1100 us)" + two_thread_caveat() : "");
    }
    {
        const bool ok = g_lock_leaks == 0;
        target("lock_count() == 0 at the end", static_cast<double>(g_lock_checks), ok,
               std::to_string(g_lock_checks) + " systems checked, " + std::to_string(g_lock_leaks) +
                   " with locks left");
    }
    // The first round's bound (2x), then issue 10's (1.5x an unordered_map node).
    for (const char* n : {"1000", "100000"}) {
        ratio_target(
            std::string("registry bytes per module, ") + n + " modules: <= 2x unordered_map's",
            std::string("mem.") + n + ".importlock", std::string("mem.") + n + ".map", 2.0, true);
    }
    {
        const auto r = median_of("mem.erased.ratio");
        const auto per_key = median_of("mem.erased.per_key");
        const auto mb = median_of("mem.erased.mb");
        target("memory after importing and erasing every key: <= 1.1x the empty system's", r,
               r && *r <= 1.1,
               r && per_key && mb ? bench::num(*mb) + " MB held, " + bench::num(*per_key) +
                                        " B per erased key (limit: 10% over the empty system)"
                                  : "");
    }
    for (const char* n : {"1000", "100000"}) {
        ratio_target(std::string("registry bytes per module, ") + n +
                         " modules: <= 1.5x unordered_map's (issue 10)",
                     std::string("mem.") + n + ".importlock", std::string("mem.") + n + ".map", 1.5,
                     true);
    }
}

}  // namespace

int main(int argc, char** argv) {
    config cfg;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--quick") {
            cfg.quick = true;
        } else if (arg.rfind("--only=", 0) == 0) {
            std::string list = arg.substr(7);
            std::size_t pos = 0;
            while (pos <= list.size()) {
                const std::size_t comma = std::min(list.find(',', pos), list.size());
                if (comma > pos) cfg.only.insert(list.substr(pos, comma - pos));
                pos = comma + 1;
            }
        } else if (arg == "--help" || arg == "-h") {
            std::printf(
                "usage: %s [--quick] [--only=hit,coalesce,cold,slow,cycle,memory,scale,mutex]\n",
                argv[0]);
            return 0;
        } else {
            std::fprintf(stderr, "unknown argument: %s (try --help)\n", arg.c_str());
            return 2;
        }
    }
    if (cfg.quick) {
        cfg.reps = 3;
        cfg.cheap_reps = 5;
        cfg.hit_lookups = std::size_t{1} << 16;
        cfg.close_calls = 100;
    }

    std::printf("importlock benchmarks (importlock %d.%d.%d)%s\n", IMPORTLOCK_VERSION_MAJOR,
                IMPORTLOCK_VERSION_MINOR, IMPORTLOCK_VERSION_PATCH, cfg.quick ? " --quick" : "");
    std::printf("date:     %s\n", bench::utc_date().c_str());
    std::printf("machine:  %s %s %s; %s; %u hardware threads\n",
                bench::read_first_line("/proc/sys/kernel/ostype").c_str(),
                bench::read_first_line("/proc/sys/kernel/osrelease").c_str(),
                bench::machine_arch().c_str(), bench::cpu_model().c_str(),
                std::thread::hardware_concurrency());
    std::printf("compiler: %s\n", bench::compiler_id().c_str());
    std::printf("flags:    %s\n", bench::compile_flags().c_str());
    std::printf("peers:    %s\n", bench::peers::description().c_str());
    std::printf(
        "runs:     %d repetitions (hit path, chains), %d (1 ms sections), %zu lookups "
        "per thread per sample (4 threads: half as many each; scale: per sample); median and "
        "min - max over repetitions\n",
        cfg.reps, cfg.cheap_reps, cfg.hit_lookups);

    const double headroom_before = parallel_headroom(cfg.quick ? 3 : 7);
    print_headroom("at start", headroom_before);
    const auto started = now();
    if (cfg.runs("hit")) {
        section_hit(cfg, "int", int_keys(key_count));
        section_hit(cfg, "string", string_keys(key_count));
    }
    if (cfg.runs("coalesce")) section_coalesce(cfg);
    if (cfg.runs("cold")) {
        section_cold(cfg);
        section_cold_string(cfg);
        section_hits_beside_imports(cfg);
    }
    if (cfg.runs("slow")) section_slow(cfg);
    if (cfg.runs("cycle")) section_cycle(cfg);
    if (cfg.runs("memory")) section_memory(cfg);
    if (cfg.runs("scale")) section_scale(cfg);
    if (cfg.runs("mutex")) section_mutex(cfg);

    const double headroom_after = parallel_headroom(cfg.quick ? 3 : 7);
    std::printf("\n");
    print_headroom("at end", headroom_after);
    g_headroom = std::min(headroom_before, headroom_after);
    print_targets();
    std::printf("\n%d PASS, %d MISS; %zu invariant(s) broken; %.1f s\n", g_pass, g_miss,
                g_broken.size(), ns_between(started, now()) / 1e9);
    for (const auto& b : g_broken) std::printf("  broken: %s\n", b.c_str());
    return g_broken.empty() ? 0 : 1;
}
