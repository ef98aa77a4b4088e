// SPDX-License-Identifier: BSL-1.0
// A lock policy that forgot its mutex type.
// expect: the LockPolicy has no `using mutex_type = ...;`
#include <importlock/importlock.hpp>

#include <condition_variable>
#include <string>

struct policy_without_mutex {
    using condition_variable_type = std::condition_variable;
    static constexpr importlock::lock_scope scope = importlock::lock_scope::per_key;
    static constexpr importlock::cycle_resolution on_cycle =
        importlock::cycle_resolution::partial_module;
};

struct module {};

int main() {
    importlock::basic_import_system<std::string, module, policy_without_mutex> system;
    return static_cast<int>(system.size());
}
