// SPDX-License-Identifier: BSL-1.0
// importlock/finders/function_finder.hpp: a finder built from one callable.
#pragma once

#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "../module_spec.hpp"

namespace importlock {

// Finds specs by calling `Fn(const Key&) -> std::optional<module_spec<Key, Module>>`,
// for keys whose spec is computed from their name (file paths, numeric ids,
// URLs). The default Fn is type-erased so the finder type can be named; pass a
// lambda type to avoid the indirection.
//
// Thread-safety: the callable is called concurrently for different keys and
// must be thread-safe. Cost: one call per cold import.
template <class Key, class Module,
          class Fn = detail::function<std::optional<module_spec<Key, Module>>(const Key&)>>
class function_finder {
public:
    using spec_type = module_spec<Key, Module>;

    // Builds a finder that knows no key (every import: module_not_found_error).
    function_finder()
        requires std::default_initializable<Fn>
    = default;

    // Builds a finder that asks `find` for every key.
    explicit function_finder(Fn find) : find_(std::move(find)) {}

    // Returns the spec `find` computes for `key`, or nullopt.
    std::optional<spec_type> find_spec(const Key& key) const {
        if constexpr (requires { static_cast<bool>(find_); }) {
            if (!static_cast<bool>(find_)) return std::nullopt;
        }
        return std::optional<spec_type>(find_(key));
    }

    // Says why `key` was not found (see finder_policy.hpp).
    std::string not_found_hint(const Key&) const {
        return "the function_finder's function returned no spec for it; make it return a "
               "module_spec for this key";
    }

private:
    static_assert(std::is_invocable_v<const Fn&, const Key&> &&
                      std::is_constructible_v<std::optional<module_spec<Key, Module>>,
                                              std::invoke_result_t<const Fn&, const Key&>>,
                  "importlock: a function_finder's function must be callable as "
                  "std::optional<module_spec<Key, Module>>(const Key&)");

    Fn find_{};
};

}  // namespace importlock
