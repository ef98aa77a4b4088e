// SPDX-License-Identifier: BSL-1.0
// importlock/detail/describe_exception.hpp: the message of a stored exception.
//
// Purpose: one line of text for an std::exception_ptr, for reports that outlive the
// exception (preload_report, trace_recorder). Thread-safety: a pure function.
// Cost: one rethrow and catch.
#pragma once

#include <exception>
#include <string>

namespace importlock::detail {

// Returns what() of the exception `error` holds; a fixed text for an exception not
// derived from std::exception, and "no exception" for a null pointer.
inline std::string describe_exception(const std::exception_ptr& error) {
    try {
        if (error) std::rethrow_exception(error);
    } catch (const std::exception& e) {
        return e.what();
    } catch (...) {
        return "an exception not derived from std::exception";
    }
    return "no exception";
}

}  // namespace importlock::detail
