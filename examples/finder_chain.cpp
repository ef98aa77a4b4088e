// SPDX-License-Identifier: BSL-1.0
// Finders (42.14, sys.meta_path): a finder_chain asks a registry_finder before a
// function_finder, so explicit definitions override computed ones; a run-time
// meta_path_finder gets a finder appended, then removed while in use (an
// import already asking it still gets its answer).
#include <importlock/importlock.hpp>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>

struct number {
    long value = 0;
};

using spec_t = importlock::module_spec<std::string, number>;
using defined_t = importlock::registry_finder<std::string, number>;
using computed_t = importlock::function_finder<std::string, number>;

// Parses "<prefix>N" into N >= 0.
std::optional<long> parse(const std::string& key, const std::string& prefix) {
    if (key.rfind(prefix, 0) != 0) return std::nullopt;
    long n = -1;
    const char* first = key.data() + prefix.size();
    const char* last = key.data() + key.size();
    const auto [end, error] = std::from_chars(first, last, n);
    if (error != std::errc() || end != last || n < 0) return std::nullopt;
    return n;
}

int main() {
    bool ok = true;

    std::puts("finder_chain<registry_finder, function_finder>:");
    std::atomic<int> computed_runs{0};
    using chain_t = importlock::finder_chain<std::string, number, defined_t, computed_t>;
    chain_t chain(defined_t{}, computed_t([&](const std::string& key) -> std::optional<spec_t> {
                      // fib:N = fib:(N-1) + fib:(N-2), for every N (fib:-1 is not found).
                      const std::optional<long> n = parse(key, "fib:");
                      if (!n) return std::nullopt;
                      spec_t spec;
                      spec.loader = [&computed_runs, n = *n](number& m, auto& imp) {
                          ++computed_runs;
                          m.value = imp.import_ref("fib:" + std::to_string(n - 1)).value +
                                    imp.import_ref("fib:" + std::to_string(n - 2)).value;
                      };
                      return spec;
                  }));
    importlock::basic_import_system<std::string, number, importlock::per_key_locks, chain_t> fib(
        std::move(chain));
    int defined_runs = 0;
    fib.finder().get<defined_t>().define("fib:0", [&](number& m, auto&) {
        ++defined_runs;
        m.value = 0;
    });
    fib.finder().get<defined_t>().define("fib:1", [&](number& m, auto&) {
        ++defined_runs;
        m.value = 1;
    });
    const long fib20 = fib.import_ref("fib:20").value;
    const bool function_knows_fib1 = fib.finder().get<computed_t>().find_spec("fib:1").has_value();
    std::printf("  fib:20 = %ld; loaders run: %d computed, %d defined\n", fib20,
                computed_runs.load(), defined_runs);
    std::printf("  fib:1: the function_finder %s, but the registry_finder is asked first\n",
                function_knows_fib1 ? "has a spec too" : "has no spec");
    ok = ok && fib20 == 6765 && computed_runs == 19 && defined_runs == 2 && function_knows_fib1;

    std::puts("meta_path_finder, changed at run time:");
    std::latch asking(1);   // the ext finder is answering an import of ext:3
    std::latch removed(1);  // main has removed it meanwhile
    importlock::basic_import_system<std::string, number, importlock::per_key_locks,
                                    importlock::meta_path_finder<std::string, number>>
        modules;
    auto defined = std::make_shared<defined_t>();  // shared: keep defining on it
    defined->define("answer", [](number& m, auto&) { m.value = 42; });
    modules.finder().append(defined);
    const auto try_import = [&](const std::string& key) -> std::optional<long> {
        try {
            return modules.import_module(key)->value;
        } catch (const importlock::module_not_found_error& e) {
            std::printf("  import %s: %s\n", key.c_str(), e.what());
            return std::nullopt;
        }
    };
    ok = ok && try_import("answer") == 42 && !try_import("ext:1");

    const auto ext = modules.finder().append([&](const std::string& key) -> std::optional<spec_t> {
        const std::optional<long> n = parse(key, "ext:");
        if (!n) return std::nullopt;
        if (*n == 3) {
            asking.count_down();
            removed.wait();  // still answering after its removal
        }
        spec_t spec;
        spec.loader = [n = *n](number& m, auto&) { m.value = n * n; };
        return spec;
    });
    std::printf("  appended the ext finder: %zu finders\n", modules.finder().size());
    const std::optional<long> ext1 = try_import("ext:1");
    std::printf("  import ext:1 = %ld\n", ext1.value_or(-1));

    std::optional<long> ext3;
    std::thread importer([&] { ext3 = try_import("ext:3"); });
    asking.wait();
    const bool was_installed = modules.finder().remove(ext);
    std::printf("  removed the ext finder while it answers ext:3: %zu finder(s) left\n",
                modules.finder().size());
    removed.count_down();
    importer.join();
    std::printf("  import ext:3 (began before the removal) = %ld\n", ext3.value_or(-1));
    const std::optional<long> ext2 = try_import("ext:2");
    std::printf("  still loaded: ext:1 %d, ext:3 %d\n", modules.contains("ext:1"),
                modules.contains("ext:3"));
    ok = ok && ext1 == 1 && was_installed && ext3 == 9 && !ext2 && modules.contains("ext:1") &&
         modules.contains("ext:3") && modules.finder().size() == 1 && modules.lock_count() == 0;

    std::puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
