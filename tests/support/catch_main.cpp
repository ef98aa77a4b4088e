// SPDX-License-Identifier: BSL-1.0
// Catch2 v2's main(), compiled once and linked into every test program.
// Only built in the v2 configuration; v3 links Catch2::Catch2WithMain instead.
#define CATCH_CONFIG_MAIN
#include "catch.hpp"
