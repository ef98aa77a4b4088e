// SPDX-License-Identifier: BSL-1.0
// libFuzzer target: a random sequence of operations on a small key space,
// checking importlock's invariants after every step.
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
//       tests/fuzz/fuzz_import_system.cpp -o fuzz_import_system
//   ./fuzz_import_system -max_total_time=60
// Each input byte pair is (operation, key); the first bytes define the
// dependency graph (with cycles) and which loaders fail.
#include <importlock/importlock.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int key_count = 8;

struct module {
    int key = -1;
    int generation = 0;
};

struct loader_failure : std::runtime_error {
    loader_failure() : std::runtime_error("loader failure") {}
};

[[noreturn]] void violated(const char* what) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
}

class byte_reader {
public:
    byte_reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    bool empty() const { return pos_ >= size_; }
    std::uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
};

template <class Policy>
void run(byte_reader& in) {
    importlock::basic_import_system<int, module, Policy> system;
    std::array<std::vector<int>, key_count> deps;
    std::array<int, key_count> fail_every{};   // 0: never fails
    std::array<int, key_count> runs{};         // loader runs, successful or not
    std::array<int, key_count> completions{};  // loader runs that returned
    int generation = 0;

    for (int k = 0; k < key_count; ++k) {
        const std::uint8_t spec = in.next();
        for (int d = 0; d < key_count; ++d) {
            if ((spec >> (d % 8)) & 1U && d != k && ((spec ^ d) & 3) == 0) deps[k].push_back(d);
        }
        fail_every[k] = (spec & 0x30) == 0x30 ? 2 : 0;
        system.finder().define(k, [&, k](module& m, importlock::importer<int, module>& imp) {
            const int run_no = ++runs[static_cast<std::size_t>(k)];
            for (int d : deps[static_cast<std::size_t>(k)]) imp.import_module(d);
            const int every = fail_every[static_cast<std::size_t>(k)];
            if (every != 0 && run_no % every == 1) throw loader_failure();
            m.key = k;
            m.generation = ++generation;
            ++completions[static_cast<std::size_t>(k)];
        });
    }

    const auto check = [&] {
        if (system.lock_count() != 0) violated("lock_count() != 0 at quiescence");
        if (!system.snapshot().empty()) violated("snapshot not empty at quiescence");
        std::size_t present = 0;
        for (int k = 0; k < key_count; ++k) {
            if (system.is_initializing(k)) violated("a key is initialising at quiescence");
            if (system.contains(k)) {
                ++present;
                const auto m = system.get(k);
                if (!m || m->key != k) violated("a registered module is not initialised");
                if (system.is_blocked(k)) violated("a key is both registered and blocked");
            }
        }
        if (present != system.size()) violated("size() disagrees with contains()");
    };

    while (!in.empty()) {
        const std::uint8_t op = in.next();
        const int k = in.next() % key_count;
        try {
            switch (op % 7) {
                case 0: {
                    const auto m = system.import_module(k);
                    // Partial modules only come from cycles, which need a
                    // loader on the stack: at top level a module is finished.
                    if (m->key != k) violated("import_module returned an unfinished module");
                    break;
                }
                case 1:
                    if (system.import_ref(k).key != k) violated("import_ref returned unfinished");
                    break;
                case 2: system.erase(k); break;
                case 3: system.block(k); break;
                case 4: {
                    const auto before = system.get(k);
                    try {
                        system.reload(k);
                    } catch (...) {
                        if (before && system.get(k) != before) violated("failed reload lost it");
                        throw;
                    }
                    if (system.get(k) != before) violated("reload replaced the object");
                    break;
                }
                case 5: system.clear(); break;
                case 6: {
                    auto handle = system.handle(k);
                    if (handle->key != k) violated("handle returned unfinished");
                    break;
                }
            }
        } catch (const loader_failure&) {
        } catch (const importlock::import_error&) {
        }
        check();
    }
    (void)completions;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    byte_reader in(data, size);
    switch (in.next() % 3) {
        case 0: run<importlock::per_key_locks>(in); break;
        case 1: run<importlock::strict_per_key_locks>(in); break;
        default: run<importlock::global_lock>(in); break;
    }
    return 0;
}
