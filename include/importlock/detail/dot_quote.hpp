// SPDX-License-Identifier: BSL-1.0
// importlock/detail/dot_quote.hpp: quoting for Graphviz DOT output.
#pragma once

#include <string>

namespace importlock::detail {

// Returns `text` as a DOT double-quoted string.
inline std::string dot_quote(const std::string& text) {
    std::string out = "\"";
    for (const char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

}  // namespace importlock::detail
