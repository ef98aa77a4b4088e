// SPDX-License-Identifier: BSL-1.0
// The "instantiate once" pattern as a user writes it: this header is what every
// translation unit includes; it declares the system types and says, with `extern
// template`, that their member functions are compiled in one other translation unit
// (explicit_instantiations.cpp), so that no includer compiles them again.
#pragma once

#include <importlock/importlock.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace importlock_test::instantiated {

struct service {
    int value = 0;
};

using string_system = importlock::import_system<service>;
using strict_system =
    importlock::basic_import_system<std::string, service, importlock::strict_per_key_locks>;
using sharded_system =
    importlock::basic_import_system<std::string, service, importlock::sharded_per_key_locks>;
using singleflight_system =
    importlock::basic_import_system<int, service, importlock::singleflight_per_key_locks>;
using global_system = importlock::basic_import_system<int, service, importlock::global_lock>;
using single_thread_system = importlock::basic_import_system<int, service, importlock::no_locks>;
using path_system = importlock::basic_import_system<std::filesystem::path, service>;
using sequence_system = importlock::basic_import_system<std::vector<std::string>, service>;
using function_finder_system =
    importlock::basic_import_system<int, service, importlock::per_key_locks,
                                    importlock::function_finder<int, service>>;

}  // namespace importlock_test::instantiated

extern template class importlock::basic_import_system<std::string,
                                                      importlock_test::instantiated::service>;
extern template class importlock::basic_import_system<
    std::string, importlock_test::instantiated::service, importlock::strict_per_key_locks>;
extern template class importlock::basic_import_system<
    std::string, importlock_test::instantiated::service, importlock::sharded_per_key_locks>;
extern template class importlock::basic_import_system<int, importlock_test::instantiated::service,
                                                      importlock::singleflight_per_key_locks>;
extern template class importlock::basic_import_system<int, importlock_test::instantiated::service,
                                                      importlock::global_lock>;
extern template class importlock::basic_import_system<int, importlock_test::instantiated::service,
                                                      importlock::no_locks>;
extern template class importlock::basic_import_system<std::filesystem::path,
                                                      importlock_test::instantiated::service>;
extern template class importlock::basic_import_system<std::vector<std::string>,
                                                      importlock_test::instantiated::service>;
extern template class importlock::basic_import_system<
    int, importlock_test::instantiated::service, importlock::per_key_locks,
    importlock::function_finder<int, importlock_test::instantiated::service>>;
