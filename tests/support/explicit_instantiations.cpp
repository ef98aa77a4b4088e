// SPDX-License-Identifier: BSL-1.0
// The one translation unit that compiles the systems explicit_instantiations.hpp
// declares: an explicit instantiation definition compiles every member function of the
// class, so this file also proves that every member compiles for each policy, finder
// and key type below (implicit instantiation compiles only the members a program uses).
#include "explicit_instantiations.hpp"

template class importlock::basic_import_system<std::string, importlock_test::instantiated::service>;
template class importlock::basic_import_system<std::string, importlock_test::instantiated::service,
                                               importlock::strict_per_key_locks>;
template class importlock::basic_import_system<std::string, importlock_test::instantiated::service,
                                               importlock::sharded_per_key_locks>;
template class importlock::basic_import_system<int, importlock_test::instantiated::service,
                                               importlock::singleflight_per_key_locks>;
template class importlock::basic_import_system<int, importlock_test::instantiated::service,
                                               importlock::global_lock>;
template class importlock::basic_import_system<int, importlock_test::instantiated::service,
                                               importlock::no_locks>;
template class importlock::basic_import_system<std::filesystem::path,
                                               importlock_test::instantiated::service>;
template class importlock::basic_import_system<std::vector<std::string>,
                                               importlock_test::instantiated::service>;
template class importlock::basic_import_system<
    int, importlock_test::instantiated::service, importlock::per_key_locks,
    importlock::function_finder<int, importlock_test::instantiated::service>>;

// The handles and the finders are class templates too.
template class importlock::module_handle<importlock_test::instantiated::string_system>;
template class importlock::shared_module_handle<importlock_test::instantiated::string_system>;
template class importlock::registry_finder<std::string, importlock_test::instantiated::service>;
template class importlock::function_finder<int, importlock_test::instantiated::service>;

// Modules that cannot be default-constructed (built by a factory or a builder) and
// abstract ones instantiate as well.
namespace importlock_test::instantiated {
struct needs_argument {
    explicit needs_argument(int v) : value(v) {}
    int value;
};
struct abstract_service {
    virtual ~abstract_service() = default;
    virtual int value() const = 0;
};
}  // namespace importlock_test::instantiated
template class importlock::basic_import_system<std::string,
                                               importlock_test::instantiated::needs_argument>;
template class importlock::basic_import_system<std::string,
                                               importlock_test::instantiated::abstract_service>;
