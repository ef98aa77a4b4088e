// SPDX-License-Identifier: BSL-1.0
// importlock/detail/scope_exit.hpp: run a callable when a scope ends.
#pragma once

#include <utility>

namespace importlock::detail {

// Calls `f` on destruction, on normal exit and during unwinding alike.
template <class F>
class scope_exit {
public:
    explicit scope_exit(F f) noexcept : f_(std::move(f)) {}
    scope_exit(const scope_exit&) = delete;
    scope_exit& operator=(const scope_exit&) = delete;
    ~scope_exit() { f_(); }

private:
    F f_;
};

}  // namespace importlock::detail
