// SPDX-License-Identifier: BSL-1.0
// Picks the Catch2 major version: v3 when the build defines IMPORTLOCK_CATCH2_V3, else v2.
#pragma once

#if defined(IMPORTLOCK_CATCH2_V3)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif

#include <cstdint>

namespace importlock_test {

// The seed Catch runs with (--rng-seed), through each version's public API: v3's
// Catch::getSeed(); v2 has only Catch::rngSeed() (in v3 an internal name).
inline std::uint32_t catch_seed() {
#if defined(IMPORTLOCK_CATCH2_V3)
    return static_cast<std::uint32_t>(Catch::getSeed());
#else
    return static_cast<std::uint32_t>(Catch::rngSeed());
#endif
}

}  // namespace importlock_test
