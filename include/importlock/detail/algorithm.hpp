// SPDX-License-Identifier: BSL-1.0
// importlock/detail/algorithm.hpp: the three algorithms the core uses, without
// <algorithm>, and the comparator its sorts of index pairs share.
//
// Purpose: with libstdc++ and C++20, <algorithm> is about 10,500 preprocessed lines
// (the ranges algorithms and the parallel overloads) in every translation unit that
// includes the core header, for a sort in teardown and in snapshots, one binary
// search and a few linear searches (benchmarks/README.md, "Compile time").
// Thread-safety: none of their own; they touch only the range they are given.
// Cost: sort is a heap sort, O(n log n) comparisons and swaps in the worst case, in
// place, not stable (as std::sort); lower_bound O(log n); find_if O(n).
#pragma once

#include <utility>

namespace importlock::detail {

// Sorts [first, last) (random access) so that `less` holds between neighbours.
template <class It, class Less>
void sort(It first, It last, Less less) {
    using std::swap;
    const auto n = last - first;
    using distance = decltype(last - first);
    // Moves the element at `root` down the heap [0, end) until its children are not
    // greater.
    const auto sift_down = [&](distance root, distance end) {
        for (;;) {
            distance child = 2 * root + 1;
            if (child >= end) return;
            if (child + 1 < end && less(first[child], first[child + 1])) ++child;
            if (!less(first[root], first[child])) return;
            swap(first[root], first[child]);
            root = child;
        }
    };
    for (distance i = n / 2; i-- > 0;) sift_down(i, n);
    for (distance end = n; end-- > 1;) {
        swap(first[0], first[end]);
        sift_down(0, end);
    }
}

// Orders pairs by their first member, then their second: the comparator of the
// core's sorts of std::pair<std::size_t, std::size_t> (a sort key and a position),
// one named type so that they share one instantiation of sort.
struct pair_less {
    template <class Pair>
    bool operator()(const Pair& a, const Pair& b) const noexcept {
        return a.first != b.first ? a.first < b.first : a.second < b.second;
    }
};

// The first position in the sorted range [first, last) whose element is not
// less than `value`.
template <class It, class T, class Less>
It lower_bound(It first, It last, const T& value, Less less) {
    auto count = last - first;
    while (count > 0) {
        const auto half = count / 2;
        It middle = first + half;
        if (less(*middle, value)) {
            first = middle + 1;
            count -= half + 1;
        } else {
            count = half;
        }
    }
    return first;
}

// The first position in [first, last) whose element satisfies `pred`, or last.
template <class It, class Pred>
It find_if(It first, It last, Pred pred) {
    for (; first != last; ++first) {
        if (pred(*first)) return first;
    }
    return first;
}

}  // namespace importlock::detail
