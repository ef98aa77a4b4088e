// SPDX-License-Identifier: BSL-1.0
// tests/support/explorer_catch.hpp: the schedule explorer's glue to Catch2.
#pragma once

#include "support/catch.hpp"
#include "support/schedule_explorer.hpp"

#include <cstdint>
#include <cstdio>

namespace importlock_test::explorer {

// Returns the seed of this Catch2 run (--rng-seed), for the randomised strategies.
inline std::uint64_t catch_seed() {
#if defined(IMPORTLOCK_CATCH2_V3)
    return static_cast<std::uint64_t>(Catch::getSeed());
#else
    return static_cast<std::uint64_t>(Catch::rngSeed());
#endif
}

// Prints the run's summary line (and its report after a failure) to stdout, so
// that every test program says how many schedules each test explored.
inline void print(const result& r) {
    std::fputs((r.ok() ? r.summary() + "\n" : r.report()).c_str(), stdout);
    std::fflush(stdout);
}

}  // namespace importlock_test::explorer
