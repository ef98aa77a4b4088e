// SPDX-License-Identifier: BSL-1.0
// A custom mutex paired with std::condition_variable, which only waits on std::mutex.
// expect: use std::condition_variable_any
#include <importlock/importlock.hpp>

#include <condition_variable>
#include <mutex>
#include <string>

struct my_mutex {
    void lock() { m.lock(); }
    void unlock() { m.unlock(); }
    std::mutex m;
};

struct module {};

int main() {
    importlock::basic_import_system<
        std::string, module, importlock::basic_per_key_locks<my_mutex, std::condition_variable>>
        system;
    return static_cast<int>(system.size());
}
