// Picks the Catch2 major version: v3 when the build defines IMPORTLOCK_CATCH2_V3, else v2.
#pragma once

#if defined(IMPORTLOCK_CATCH2_V3)
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
