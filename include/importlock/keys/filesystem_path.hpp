// SPDX-License-Identifier: BSL-1.0
// importlock/keys/filesystem_path.hpp: std::filesystem::path keys, with the
// parent directory as parent ("plugins/audio/mp3" needs "plugins/audio").
//
// keys/path_keys.hpp specialises key_traits for every path type; this header
// adds <filesystem>, so that a unit that includes it can name
// std::filesystem::path. The umbrella header includes path_keys.hpp only.
#pragma once

#include <filesystem>

#include "path_keys.hpp"

namespace importlock {

static_assert(detail::path_like<std::filesystem::path>,
              "importlock: std::filesystem::path lacks a member keys/path_keys.hpp uses");

}  // namespace importlock
