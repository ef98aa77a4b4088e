// SPDX-License-Identifier: BSL-1.0
// A lazy singleton registry (service locator): services built on first use,
// depending on each other (logger <- config <- database <- http_server, a
// dependency graph as in 42.25), each holding its dependencies in
// module_handle members, used from 4 worker threads at once (42.10, 42.11).
#include <importlock/importlock.hpp>

#include <atomic>
#include <cstdio>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

// Every service derives from `service`; the registry holds them as such.
struct service {
    virtual ~service() = default;
};

// Counts constructions per service name, and prints a transcript line.
class construction_log {
public:
    void constructed(const std::string& name) {
        std::lock_guard lock(mutex_);
        ++counts_[name];
        std::printf("  constructing %s\n", name.c_str());
    }
    int count(const std::string& name) const {
        std::lock_guard lock(mutex_);
        const auto it = counts_.find(name);
        return it == counts_.end() ? 0 : it->second;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::string, int> counts_;
};

// Owns the import system and hands out typed handles on it.
class service_locator {
public:
    using system_type = importlock::import_system<service>;

    // A typed module_handle: the first use imports the service, later uses
    // cost one acquire load.
    template <class T>
    class handle {
    public:
        handle(service_locator& locator, std::string name)
            : handle_(locator.system_.handle(std::move(name))) {}
        T& operator*() const { return static_cast<T&>(handle_.get()); }
        T* operator->() const { return &**this; }

    private:
        importlock::module_handle<system_type> handle_;
    };

    // Registers service T under `name`: constructed by the factory (T's
    // constructor only binds handles), then started by the loader.
    template <class T>
    void provide(const std::string& name) {
        system_.finder().define(
            name, [](service& s, auto&) { static_cast<T&>(s).start(); },
            [this](const std::string& key) -> std::shared_ptr<service> {
                log.constructed(key);
                return std::make_shared<T>(*this);
            });
    }

    template <class T>
    T& get(const std::string& name) {
        return static_cast<T&>(system_.import_ref(name));
    }

    std::size_t lock_count() const { return system_.lock_count(); }

    construction_log log;

private:
    system_type system_;
};

struct logger : service {
    explicit logger(service_locator&) {}
    void start() {}
    void write(const std::string&) { lines.fetch_add(1, std::memory_order_relaxed); }
    std::atomic<int> lines{0};
};

struct config : service {
    explicit config(service_locator& locator) : log(locator, "logger") {}
    void start() {
        pool_size = 4;
        log->write("config loaded");
    }
    service_locator::handle<logger> log;
    int pool_size = 0;
};

struct database : service {
    explicit database(service_locator& locator) : log(locator, "logger"), cfg(locator, "config") {}
    void start() {
        connections = cfg->pool_size;  // first use of cfg: imports "config" (nested)
        log->write("database connected");
    }
    int query(int id) const { return id * 10; }
    service_locator::handle<logger> log;
    service_locator::handle<config> cfg;
    int connections = 0;
};

struct http_server : service {
    explicit http_server(service_locator& locator)
        : log(locator, "logger"), db(locator, "database") {}
    void start() {
        db->query(0);  // warm up: imports "database", which imports "config"
        log->write("http server listening");
    }
    int handle_request(int id) {
        log->write("request");
        return db->query(id);
    }
    service_locator::handle<logger> log;
    service_locator::handle<database> db;
};

int main() {
    service_locator services;
    services.provide<logger>("logger");
    services.provide<config>("config");
    services.provide<database>("database");
    services.provide<http_server>("http_server");

    constexpr int workers = 4;
    constexpr int requests = 1000;
    std::latch start(workers);
    std::atomic<long> sum{0};
    std::puts("4 workers ask for http_server at once:");
    std::vector<std::thread> threads;
    for (int w = 0; w < workers; ++w) {
        threads.emplace_back([&, w] {
            start.arrive_and_wait();  // all workers race for the first import
            auto& server = services.get<http_server>("http_server");
            for (int i = 0; i < requests; ++i) sum += server.handle_request(w * requests + i);
        });
    }
    for (auto& thread : threads) thread.join();

    const auto& db = services.get<database>("database");
    const int lines = services.get<logger>("logger").lines.load();
    std::printf("requests served: %d, log lines: %d, database connections: %d\n",
                workers * requests, lines, db.connections);
    bool ok = true;
    for (const char* name : {"logger", "config", "database", "http_server"}) {
        std::printf("%-12s constructed %d time(s)\n", name, services.log.count(name));
        ok = ok && services.log.count(name) == 1;
    }
    const long n = workers * requests;
    std::printf("lock_count() = %zu\n", services.lock_count());
    ok = ok && sum == 10 * n * (n - 1) / 2 && lines == workers * requests + 3 &&
         db.connections == 4 && services.lock_count() == 0;
    std::puts(ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}
