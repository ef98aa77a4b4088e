// SPDX-License-Identifier: BSL-1.0
// importlock/finders/finder_chain.hpp: a compile-time chain of finders,
// CPython's sys.meta_path fixed at compile time.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "../module_spec.hpp"
#include "finder_policy.hpp"

namespace importlock {

// Asks each finder in order and returns the first spec found. Each Finder
// must satisfy finder_policy<Finder, Key, Module>.
//
// Thread-safety: as thread-safe as the finders. Cost: the sum of the
// finders' costs up to the one that answers.
template <class Key, class Module, class... Finders>
class finder_chain {
    static_assert(sizeof...(Finders) > 0, "importlock: a finder_chain needs at least one finder");
    static_assert((finder_policy<Finders, Key, Module> && ...),
                  "importlock: every finder of a finder_chain needs `std::optional<module_spec<"
                  "Key, Module>> find_spec(const Key&) const` (see "
                  "importlock/finders/finder_policy.hpp)");

public:
    using spec_type = module_spec<Key, Module>;

    // Builds a chain of default-constructed finders.
    finder_chain() = default;

    // Builds a chain from the given finders, asked in this order.
    explicit finder_chain(Finders... finders) : finders_(std::move(finders)...) {}

    // Returns the first spec any finder returns for `key`, or nullopt.
    std::optional<spec_type> find_spec(const Key& key) const { return find_from<0>(key); }

    // Says how `key` could be found (see finder_policy.hpp): "no finder in the chain
    // found it", followed by the hints of the finders that have one.
    std::string not_found_hint(const Key& key) const {
        std::string hint = "no finder in the chain found it";
        std::apply(
            [&](const Finders&... finders) {
                (append_hint(hint, not_found_hint_of(finders, key)), ...);
            },
            finders_);
        return hint;
    }

    // Returns the I-th finder, e.g. to define loaders on a registry_finder.
    template <std::size_t I>
    auto& get() noexcept {
        return std::get<I>(finders_);
    }
    template <std::size_t I>
    const auto& get() const noexcept {
        return std::get<I>(finders_);
    }

    // Returns the finder of type F (which must occur once in the chain).
    template <class F>
    F& get() noexcept {
        return std::get<F>(finders_);
    }
    template <class F>
    const F& get() const noexcept {
        return std::get<F>(finders_);
    }

private:
    static void append_hint(std::string& hint, const std::string& more) {
        if (!more.empty()) hint += "; " + more;
    }

    template <std::size_t I>
    std::optional<spec_type> find_from(const Key& key) const {
        if constexpr (I == sizeof...(Finders)) {
            return std::nullopt;
        } else {
            if (std::optional<spec_type> spec = std::get<I>(finders_).find_spec(key)) return spec;
            return find_from<I + 1>(key);
        }
    }

    std::tuple<Finders...> finders_;
};

}  // namespace importlock
