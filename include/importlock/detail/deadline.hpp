// SPDX-License-Identifier: BSL-1.0
// importlock/detail/deadline.hpp: time limits that saturate instead of
// overflowing (import_module_for / import_module_until).
//
// Purpose: turns a duration or a time point on any clock into a steady-clock
// deadline. A limit beyond what the steady clock can represent means "no
// limit"; a NaN limit is rejected with std::invalid_argument naming the key.
// Arithmetic is done in long double seconds, so coarse units far in the
// future (hours, days, years) never overflow <chrono>'s integer types.
//
// wait_limit carries the deadline and an optional stop token into the lock
// protocol's waits.
//
// Thread-safety: pure functions (they read the clocks). Cost: O(1).
#pragma once

#if __has_include(<version>)
#include <version>
#endif

#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#if defined(__cpp_lib_jthread)
#include <stop_token>
#endif

#include "chrono.hpp"

namespace importlock::detail {

using steady_deadline = std::optional<std::chrono::steady_clock::time_point>;

// How long an import may wait for other threads' imports.
struct wait_limit {
    steady_deadline deadline;                       // none: no limit
    bool (*stop_requested)(const void*) = nullptr;  // cancellation, if any
    const void* stop_state = nullptr;

    bool cancelled() const { return stop_requested != nullptr && stop_requested(stop_state); }
};

#if defined(__cpp_lib_jthread)
// Returns a limit that ends when `stop` is requested (and never times out).
inline wait_limit stop_limit(const std::stop_token& stop) noexcept {
    wait_limit limit;
    limit.stop_state = &stop;
    limit.stop_requested = [](const void* s) {
        return static_cast<const std::stop_token*>(s)->stop_requested();
    };
    return limit;
}
#endif

// Returns the time since `start`.
inline std::chrono::nanoseconds elapsed_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                                start);
}

// Returns the steady-clock time `timeout` from now; nullopt for no limit.
template <class Rep, class Period>
steady_deadline deadline_after(const std::chrono::duration<Rep, Period>& timeout,
                               const std::string& key) {
    using steady = std::chrono::steady_clock;
    if constexpr (std::is_floating_point_v<Rep>) {
        const auto count = timeout.count();
        if (count != count) {  // NaN (without <cmath>)
            throw std::invalid_argument("importlock: the timeout for importing '" + key +
                                        "' is NaN");
        }
    }
    const steady::time_point now = steady::now();
    if (timeout <= timeout.zero()) return now;
    const std::chrono::duration<long double> wanted(timeout);
    const std::chrono::duration<long double> headroom(steady::time_point::max() - now);
    if (wanted >= headroom) return std::nullopt;
    return now + std::chrono::ceil<steady::duration>(wanted);
}

// Returns the steady-clock deadline matching `deadline` on `Clock`; nullopt
// for time_point::max() or anything beyond the steady clock's range.
template <class Clock, class Duration>
steady_deadline deadline_at(const std::chrono::time_point<Clock, Duration>& deadline,
                            const std::string& key) {
    using point = std::chrono::time_point<Clock, Duration>;
    if constexpr (std::is_floating_point_v<typename Duration::rep>) {
        const auto count = deadline.time_since_epoch().count();
        if (count != count) {  // NaN (without <cmath>)
            throw std::invalid_argument("importlock: the deadline for importing '" + key +
                                        "' is NaN");
        }
    }
    if (deadline == point::max()) return std::nullopt;
    const auto now = Clock::now();
    const std::chrono::duration<long double> remaining =
        std::chrono::duration<long double>(deadline.time_since_epoch()) -
        std::chrono::duration<long double>(now.time_since_epoch());
    if (remaining.count() <= 0) return std::chrono::steady_clock::now();
    return deadline_after(remaining, key);
}

}  // namespace importlock::detail
