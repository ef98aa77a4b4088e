// SPDX-License-Identifier: BSL-1.0
// benchmarks/bench_peers.hpp: the third-party containers a user would pick
// instead of importlock, wrapped behind one small interface for
// importlock_bench.cpp. Each peer is compiled only when its package is there:
//
//   IMPORTLOCK_BENCH_HAVE_TBB        oneTBB tbb::concurrent_hash_map (libtbb-dev)
//   IMPORTLOCK_BENCH_HAVE_ABSL       abseil flat_hash_map + Mutex, node_hash_map +
//                                    call_once (libabsl-dev)
//   IMPORTLOCK_BENCH_HAVE_LIBCUCKOO  libcuckoo::cuckoohash_map (libcuckoo-dev)
//
// The build system defines each macro to 1 when it found (and links) the
// library and to 0 when it did not; left undefined (a build by hand), each one
// follows __has_include, and TBB and abseil then need their libraries on the
// command line (see benchmarks/README.md). With libc++ the compiled TBB and
// abseil of the distribution (built against libstdc++) are left out.
//
// Every peer stores std::shared_ptr<Module> made with std::make_shared (as the
// std baselines of the benchmark do) and offers:
//
//   Module& find(const Key&)        the hit path: the library's read-only
//                                   lookup of a key known to be there (aborts
//                                   when it is not)
//   Module& get(const Key&, init)   insert-if-absent: the first caller makes the
//                                   module and runs init(Module&) under the
//                                   library's own per-key (or map) exclusion;
//                                   the others wait for it and share the module
//
// References stay valid while the peer lives (nothing is ever erased).
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <version>  // _LIBCPP_VERSION

#if !defined(IMPORTLOCK_BENCH_HAVE_TBB)
#if __has_include(<tbb/concurrent_hash_map.h>) && !defined(_LIBCPP_VERSION)
#define IMPORTLOCK_BENCH_HAVE_TBB 1
#else
#define IMPORTLOCK_BENCH_HAVE_TBB 0
#endif
#endif

#if !defined(IMPORTLOCK_BENCH_HAVE_ABSL)
#if !defined(_LIBCPP_VERSION) && __has_include(<absl/container/flat_hash_map.h>) && \
    __has_include(<absl/container/node_hash_map.h>) && \
    __has_include(<absl/synchronization/mutex.h>) && __has_include(<absl/base/call_once.h>)
#define IMPORTLOCK_BENCH_HAVE_ABSL 1
#else
#define IMPORTLOCK_BENCH_HAVE_ABSL 0
#endif
#endif

#if !defined(IMPORTLOCK_BENCH_HAVE_LIBCUCKOO)
#if __has_include(<libcuckoo/cuckoohash_map.hh>)
#define IMPORTLOCK_BENCH_HAVE_LIBCUCKOO 1
#else
#define IMPORTLOCK_BENCH_HAVE_LIBCUCKOO 0
#endif
#endif

#if IMPORTLOCK_BENCH_HAVE_TBB
#include <tbb/concurrent_hash_map.h>
#include <tbb/version.h>
#endif
#if IMPORTLOCK_BENCH_HAVE_ABSL
#include <absl/base/call_once.h>
#include <absl/base/config.h>
#include <absl/container/flat_hash_map.h>
#include <absl/container/node_hash_map.h>
#include <absl/synchronization/mutex.h>
#endif
#if IMPORTLOCK_BENCH_HAVE_LIBCUCKOO
#include <libcuckoo/cuckoohash_map.hh>
#endif

namespace bench::peers {

[[noreturn]] inline void missing_key() {
    std::abort();  // the hit path looked up a key that was never inserted
}

#if IMPORTLOCK_BENCH_HAVE_TBB
// tbb::concurrent_hash_map: find() takes a const_accessor (a read lock on the
// element); get() takes an accessor with insert(acc, key), which holds the
// element's write lock while the first caller initialises the module.
template <class Key, class Module>
class tbb_map {
public:
    static constexpr const char* id = "tbb";
    static constexpr const char* name = "TBB concurrent_hash_map (accessor insert)";

    Module& find(const Key& key) const {
        typename map_type::const_accessor acc;
        if (!map_.find(acc, key)) missing_key();
        return *acc->second;
    }

    template <class Init>
    Module& get(const Key& key, Init&& init) {
        typename map_type::accessor acc;
        if (map_.insert(acc, key)) {
            acc->second = std::make_shared<Module>();
            init(*acc->second);
        }
        return *acc->second;
    }

    std::size_t size() const { return map_.size(); }

private:
    using map_type = tbb::concurrent_hash_map<Key, std::shared_ptr<Module>>;
    map_type map_;
};
#endif

#if IMPORTLOCK_BENCH_HAVE_ABSL
// absl::flat_hash_map guarded by one absl::Mutex: find() under a reader lock,
// get() under the writer lock, initialiser included (the map is locked while
// it runs).
template <class Key, class Module>
class absl_mutex_map {
public:
    static constexpr const char* id = "absl_mutex";
    static constexpr const char* name = "absl::flat_hash_map + absl::Mutex";

    Module& find(const Key& key) const {
        absl::ReaderMutexLock lock(&mutex_);
        const auto it = map_.find(key);
        if (it == map_.end()) missing_key();
        return *it->second;
    }

    template <class Init>
    Module& get(const Key& key, Init&& init) {
        absl::MutexLock lock(&mutex_);
        auto [it, inserted] = map_.try_emplace(key);
        if (inserted) {
            it->second = std::make_shared<Module>();
            init(*it->second);
        }
        return *it->second;
    }

    std::size_t size() const {
        absl::ReaderMutexLock lock(&mutex_);
        return map_.size();
    }

private:
    mutable absl::Mutex mutex_;
    absl::flat_hash_map<Key, std::shared_ptr<Module>> map_;
};

// absl::node_hash_map (stable slots) of {absl::once_flag, module}, the map
// guarded by an absl::Mutex (reader lock to find a slot, writer lock to add
// one); absl::call_once on the slot outside the map's lock, so initialisers
// of different keys run in parallel. find() is the same path (the call_once
// fast path included), as the std once_flag map of the benchmark.
template <class Key, class Module>
class absl_once_map {
public:
    static constexpr const char* id = "absl_once";
    static constexpr const char* name = "absl::node_hash_map of once_flag + call_once";

    Module& find(const Key& key) {
        slot& s = slot_for(key);
        absl::call_once(s.flag, [] { missing_key(); });
        return *s.module;
    }

    template <class Init>
    Module& get(const Key& key, Init&& init) {
        slot& s = slot_for(key);
        absl::call_once(s.flag, [&s, &init] {
            s.module = std::make_shared<Module>();
            init(*s.module);
        });
        return *s.module;
    }

    std::size_t size() const {
        absl::ReaderMutexLock lock(&mutex_);
        return map_.size();
    }

private:
    struct slot {
        absl::once_flag flag;
        std::shared_ptr<Module> module;
    };

    slot& slot_for(const Key& key) {
        {
            absl::ReaderMutexLock lock(&mutex_);
            if (const auto it = map_.find(key); it != map_.end()) return it->second;
        }
        absl::MutexLock lock(&mutex_);
        return map_.try_emplace(key).first->second;
    }

    mutable absl::Mutex mutex_;
    absl::node_hash_map<Key, slot> map_;
};
#endif

#if IMPORTLOCK_BENCH_HAVE_LIBCUCKOO
// libcuckoo::cuckoohash_map: find() is find_fn (the key's two bucket locks,
// spin locks, around the read); get() is uprase_fn, which constructs a new
// value from its arguments while it holds the bucket locks: the argument here
// converts to the module pointer by making and initialising the module, so the
// initialiser runs under the bucket locks, and only for the inserting caller.
template <class Key, class Module>
class cuckoo_map {
public:
    static constexpr const char* id = "libcuckoo";
    static constexpr const char* name = "libcuckoo cuckoohash_map (uprase_fn)";

    Module& find(const Key& key) const {
        Module* out = nullptr;
        if (!map_.find_fn(key, [&out](const std::shared_ptr<Module>& v) { out = v.get(); })) {
            missing_key();
        }
        return *out;
    }

    template <class Init>
    Module& get(const Key& key, Init&& init) {
        Module* out = nullptr;
        map_.uprase_fn(
            key,
            [&out](std::shared_ptr<Module>& v) {
                out = v.get();
                return false;  // keep the element
            },
            lazy_module<std::remove_reference_t<Init>>{&init, &out});
        return *out;
    }

    std::size_t size() const { return map_.size(); }

private:
    // Converted to the mapped value only when uprase_fn inserts.
    template <class Init>
    struct lazy_module {
        Init* init;
        Module** out;
        operator std::shared_ptr<Module>() const {
            auto m = std::make_shared<Module>();
            (*init)(*m);
            *out = m.get();
            return m;
        }
    };

    libcuckoo::cuckoohash_map<Key, std::shared_ptr<Module>> map_;
};
#endif

// Calls f(std::type_identity<Peer>{}) for each peer compiled in, in table order.
template <class Key, class Module, class F>
void for_each_peer([[maybe_unused]] F&& f) {
#if IMPORTLOCK_BENCH_HAVE_TBB
    f(std::type_identity<tbb_map<Key, Module>>{});
#endif
#if IMPORTLOCK_BENCH_HAVE_ABSL
    f(std::type_identity<absl_mutex_map<Key, Module>>{});
    f(std::type_identity<absl_once_map<Key, Module>>{});
#endif
#if IMPORTLOCK_BENCH_HAVE_LIBCUCKOO
    f(std::type_identity<cuckoo_map<Key, Module>>{});
#endif
}

// One line for the header of the output: which peers are in, which are not.
inline std::string description() {
    std::string in, out;
    const auto add = [](std::string& s, const std::string& what) {
        if (!s.empty()) s += ", ";
        s += what;
    };
#if IMPORTLOCK_BENCH_HAVE_TBB
    add(in, std::string("oneTBB ") + TBB_VERSION_STRING);
#else
    add(out, "oneTBB (libtbb-dev)");
#endif
#if IMPORTLOCK_BENCH_HAVE_ABSL
    add(in, "abseil " + std::to_string(ABSL_LTS_RELEASE_VERSION));
#else
    add(out, "abseil (libabsl-dev)");
#endif
#if IMPORTLOCK_BENCH_HAVE_LIBCUCKOO
    add(in, "libcuckoo");
#else
    add(out, "libcuckoo (libcuckoo-dev)");
#endif
    return (in.empty() ? std::string("none") : in) +
           (out.empty() ? std::string() : "; not built (package missing): " + out);
}

}  // namespace bench::peers
