// SPDX-License-Identifier: BSL-1.0
// importlock/detail/chrono.hpp: std::chrono's durations, time points and clocks.
//
// Purpose: the core needs durations, time points, duration_cast, ceil and the
// steady and system clocks. With libstdc++ 11 and later, C++20 <chrono> adds the
// calendar, the time zones and their formatting on top of them (about 4,800
// preprocessed lines with libstdc++ 12, including <sstream>) to every translation
// unit that includes the core header. libstdc++ keeps the part importlock uses in
// <bits/chrono.h>, the header its own <mutex>, <thread> and <condition_variable>
// include; other standard libraries get <chrono>.
// Thread-safety and cost: declarations only.
#pragma once

#include <version>  // defines __GLIBCXX__ with libstdc++

#if defined(__GLIBCXX__) && __has_include(<bits/chrono.h>)
#include <bits/chrono.h>
#else
#include <chrono>
#endif
