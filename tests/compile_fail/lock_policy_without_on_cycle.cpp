// SPDX-License-Identifier: BSL-1.0
// A lock policy that does not say what a cycle gets.
// expect: the LockPolicy has no `static constexpr cycle_resolution on_cycle`
#include <importlock/importlock.hpp>

#include <condition_variable>
#include <mutex>
#include <string>

struct policy_without_on_cycle {
    using mutex_type = std::mutex;
    using condition_variable_type = std::condition_variable;
    static constexpr importlock::lock_scope scope = importlock::lock_scope::per_key;
};

struct module {};

int main() {
    importlock::basic_import_system<std::string, module, policy_without_on_cycle> system;
    return static_cast<int>(system.size());
}
