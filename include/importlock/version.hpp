// SPDX-License-Identifier: BSL-1.0
// importlock/version.hpp: the library version.
#pragma once

#define IMPORTLOCK_VERSION_MAJOR 0
#define IMPORTLOCK_VERSION_MINOR 1
#define IMPORTLOCK_VERSION_PATCH 0
// MAJOR * 10000 + MINOR * 100 + PATCH, for preprocessor comparisons.
#define IMPORTLOCK_VERSION 100
