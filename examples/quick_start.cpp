// SPDX-License-Identifier: BSL-1.0
// The README's quick start, completed into a program: define loaders, import
// (import_module, import_ref, handle), then what a failing loader leaves
// behind (42.16: nothing, and the next import retries) and a dotted key whose
// parent is imported first (42.12).
#include <importlock/importlock.hpp>

#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

struct config {
    std::map<std::string, std::string> values;
};

importlock::import_system<config> configs;

// The loader's own exception type: importlock never wraps it.
struct vault_unreachable : std::runtime_error {
    using std::runtime_error::runtime_error;
};

int main() {
    // 1. Say how each key is built: a loader runs once, on the module object that is
    //    already registered as "initialising", and may import other keys.
    configs.finder().define("defaults", [](config& c, auto&) { c.values["port"] = "8080"; });
    configs.finder().define("server", [](config& c, auto& imp) {
        c.values = imp.import_module("defaults")->values;
        c.values["host"] = "0.0.0.0";
    });

    // 2. Import from any thread. The first import runs the loaders; concurrent importers
    //    of the same key wait; later imports are a lock-free hash lookup.
    std::shared_ptr<config> server = configs.import_module("server");
    config& fast = configs.import_ref("server");  // no refcount traffic on a hit
    auto handle = configs.handle("server");       // a resolved handle: one load per use
    const std::string host = handle->values.at("host");

    std::printf("server: host=%s port=%s\n", host.c_str(), server->values.at("port").c_str());
    std::printf("import_module, import_ref and handle share one object: %s\n",
                &fast == server.get() && &handle.get() == server.get() ? "yes" : "no");
    bool ok = host == "0.0.0.0" && server->values.at("port") == "8080" && &fast == server.get() &&
              &handle.get() == server.get();

    // 3. Failures propagate the loader's own exception and leave nothing behind;
    //    the next import runs the loader again.
    int vault_runs = 0;
    configs.finder().define("vault", [&](config& c, auto&) {
        ++vault_runs;
        c.values["token"] = "half-written";  // the object is discarded on failure
        if (vault_runs == 1) throw vault_unreachable("vault: connection refused");
        c.values["token"] = "s3cr3t";
    });
    try {
        configs.import_module("vault");
        ok = false;
    } catch (const vault_unreachable& e) {  // the loader's type, not an importlock error
        std::printf("import vault (run %d): vault_unreachable: %s\n", vault_runs, e.what());
    }
    std::printf("after the failure: contains(vault) = %d, lock_count() = %zu\n",
                configs.contains("vault"), configs.lock_count());
    ok = ok && !configs.contains("vault") && configs.lock_count() == 0;
    const auto vault = configs.import_module("vault");
    std::printf("import vault (run %d): token=%s\n", vault_runs, vault->values.at("token").c_str());
    ok = ok && vault_runs == 2 && vault->values.at("token") == "s3cr3t";

    // 4. Dotted keys import their parent first: "server.tls" needs "server".
    std::vector<std::string> runs;  // which loaders ran, in order
    configs.finder().define("server.tls", [&](config& c, auto& imp) {
        runs.push_back("server.tls");
        const auto parent = imp.get("server");  // already imported: get() does not import
        c.values["cert"] = "/etc/ssl/" + parent->values.at("host") + ".pem";
    });
    configs.finder().define("server", [&](config& c, auto& imp) {  // redefine, to log it
        runs.push_back("server");
        c.values = imp.import_module("defaults")->values;
        c.values["host"] = "0.0.0.0";
    });
    configs.erase("server");  // forget the loaded "server" (invalidates `fast`)
    const auto tls = configs.import_module("server.tls");
    std::printf("import server.tls ran: %s, %s; cert=%s\n", runs.at(0).c_str(), runs.at(1).c_str(),
                tls->values.at("cert").c_str());
    std::printf("the handle follows the new server: %s\n",
                &handle.get() == configs.get("server").get() ? "yes" : "no");
    ok = ok && runs == std::vector<std::string>{"server", "server.tls"} &&
         tls->values.at("cert") == "/etc/ssl/0.0.0.0.pem" &&
         &handle.get() == configs.get("server").get() && configs.lock_count() == 0;

    std::printf("%s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
