// SPDX-License-Identifier: BSL-1.0
// importlock/finders/meta_path_finder.hpp: a run-time list of finders that may
// change while imports run, CPython's sys.meta_path.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../detail/algorithm.hpp"
#include "../module_spec.hpp"
#include "finder_policy.hpp"

namespace importlock {

// Asks a run-time list of type-erased finders in order; the first spec wins.
//
// Thread-safety: every member may be called from any thread, also while
// imports run. find_spec works on a snapshot of the list taken when it
// starts: an import in flight keeps asking the finders that were installed
// when its find_spec began, even if they are removed meanwhile (removed
// finders stay alive until no snapshot uses them), and a finder installed
// during a find_spec is asked by the imports that start after it. Finders may
// change the list from inside find_spec. Cost: find_spec copies one
// shared_ptr under a shared lock, then calls the finders without any lock;
// changes copy the list (O(n)).
template <class Key, class Module>
class meta_path_finder {
public:
    using spec_type = module_spec<Key, Module>;
    using find_function = detail::function<std::optional<spec_type>(const Key&)>;

    // Identifies one installed finder, for remove().
    using finder_id = std::uint64_t;

    meta_path_finder() = default;

    // Copies or moves the list (finders are shared, not copied; ids carry over).
    meta_path_finder(const meta_path_finder& other) {
        std::shared_lock lock(other.mutex_);
        finders_ = other.finders_;
        next_id_ = other.next_id_;
    }
    meta_path_finder(meta_path_finder&& other) : meta_path_finder(std::as_const(other)) {}
    meta_path_finder& operator=(const meta_path_finder& other) {
        if (this != &other) {
            std::shared_ptr<const list> finders;
            finder_id next_id;
            {
                std::shared_lock lock(other.mutex_);
                finders = other.finders_;
                next_id = other.next_id_;
            }
            std::unique_lock lock(mutex_);
            finders_ = std::move(finders);
            next_id_ = next_id;
        }
        return *this;
    }
    meta_path_finder& operator=(meta_path_finder&& other) { return *this = std::as_const(other); }

    // Appends a finder: an object satisfying finder_policy (moved in), a
    // std::shared_ptr to one (shared: keep defining on it), or a callable
    // `(const Key&) -> std::optional<spec_type>`. Returns its id.
    template <class Finder>
    finder_id append(Finder finder) {
        return insert_at(end_position, erase_type(std::move(finder)));
    }

    // Inserts a finder before every other one; returns its id.
    template <class Finder>
    finder_id prepend(Finder finder) {
        return insert_at(0, erase_type(std::move(finder)));
    }

    // Removes the finder `id`; returns whether it was installed.
    bool remove(finder_id id) {
        std::unique_lock lock(mutex_);
        auto next = std::make_shared<list>(*finders_);
        const auto it =
            detail::find_if(next->begin(), next->end(), [id](const slot& s) { return s.id == id; });
        if (it == next->end()) return false;
        next->erase(it);
        finders_ = std::move(next);
        return true;
    }

    // Removes every finder.
    void clear() {
        std::unique_lock lock(mutex_);
        finders_ = std::make_shared<const list>();
    }

    // Returns the number of installed finders.
    std::size_t size() const {
        std::shared_lock lock(mutex_);
        return finders_->size();
    }

    // Returns the first spec an installed finder returns for `key`, or nullopt.
    std::optional<spec_type> find_spec(const Key& key) const {
        std::shared_ptr<const list> snapshot;
        {
            std::shared_lock lock(mutex_);
            snapshot = finders_;
        }
        for (const slot& s : *snapshot) {
            if (std::optional<spec_type> spec = s.find(key)) return spec;
        }
        return std::nullopt;
    }

    // Says why `key` was not found (see finder_policy.hpp).
    std::string not_found_hint(const Key&) const {
        const std::size_t n = size();
        if (n == 0) return "the meta_path_finder is empty; append() a finder that knows it";
        return "none of the " + std::to_string(n) +
               " finders of the meta_path_finder found it; append() one that does";
    }

private:
    struct slot {
        finder_id id;
        find_function find;
    };
    using list = std::vector<slot>;
    static constexpr std::size_t end_position = static_cast<std::size_t>(-1);

    template <class T>
    struct is_shared_ptr : std::false_type {};
    template <class T>
    struct is_shared_ptr<std::shared_ptr<T>> : std::true_type {};

    // Wraps a finder object (held by shared_ptr, so move-only finders work and
    // a caller's shared_ptr keeps sharing it) or a callable.
    template <class Finder>
    static find_function erase_type(Finder finder) {
        if constexpr (is_shared_ptr<Finder>::value) {
            static_assert(finder_policy<typename Finder::element_type, Key, Module>,
                          "importlock: a shared_ptr installed in a meta_path_finder must point "
                          "to a finder policy (with find_spec; see "
                          "importlock/finders/finder_policy.hpp)");
            return [finder = std::move(finder)](const Key& key) -> std::optional<spec_type> {
                return finder->find_spec(key);
            };
        } else if constexpr (finder_policy<Finder, Key, Module>) {
            return erase_type(std::make_shared<Finder>(std::move(finder)));
        } else {
            static_assert(
                std::is_invocable_r_v<std::optional<spec_type>, const Finder&, const Key&>,
                "importlock: a meta_path_finder entry must be a finder policy (with "
                "find_spec), a shared_ptr to one, or a callable (const Key&) -> "
                "std::optional<module_spec<Key, Module>>");
            return [finder = std::move(finder)](const Key& key) -> std::optional<spec_type> {
                return finder(key);
            };
        }
    }

    finder_id insert_at(std::size_t position, find_function find) {
        std::unique_lock lock(mutex_);
        auto next = std::make_shared<list>(*finders_);
        const finder_id id = next_id_++;
        const auto where = position >= next->size()
                               ? next->end()
                               : next->begin() + static_cast<std::ptrdiff_t>(position);
        next->insert(where, slot{id, std::move(find)});
        finders_ = std::move(next);
        return id;
    }

    mutable std::shared_mutex mutex_;
    std::shared_ptr<const list> finders_ = std::make_shared<const list>();
    finder_id next_id_ = 1;
};

}  // namespace importlock
