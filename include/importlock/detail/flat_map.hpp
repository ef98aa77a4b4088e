// SPDX-License-Identifier: BSL-1.0
// importlock/detail/flat_map.hpp: an open-addressing hash map of nodes, for
// registry_finder's table of definitions and the per-thread maps of the
// wait-for graph and import_time_recorder.
//
// Purpose: registry_finder looks a definition up on every cold import. A
// libstdc++ std::unordered_map reads the bucket array, then the node before
// the bucket's first (another key's), then the nodes of the bucket, each
// compared by key. Here the full hash sits in the array beside the node
// pointer: a lookup reads one slot (16 bytes) and only the node whose hash
// matches.
//
// Layout: a power-of-two array of slots {tag, node}: the tag is the hash with
// its two lowest values reserved (0 empty, 1 erased), the node holds the key
// and the value and never moves. Linear probing from the top bits of the tag
// times 2^64 / phi (Fibonacci hashing: identity hashes and multiples of a
// power of two spread too). Erase frees the node and leaves a tombstone that
// lookups step over and inserts reuse; the array is rebuilt when its full
// and erased slots together would pass 3/4 of it, at twice the size while the live
// elements alone would pass half of it.
//
// Exception safety: insert and copy give the strong guarantee (the node is
// built, and the new array allocated, before anything changes; a rebuild moves
// only slots); erase and find throw only if the hash or the key comparison
// does.
//
// Thread-safety: none of its own, as a std::unordered_map: const members may
// run concurrently with each other, anything else needs exclusive access
// (registry_finder holds a stripe's lock). Cost: find, insert, erase O(1)
// expected: one hash, one probe sequence comparing tags before keys; insert
// one allocation (the node), a rebuild O(capacity) and no element moved.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace importlock::detail {

template <class Key, class Value, class Hash, class KeyEqual>
class flat_map {
public:
    flat_map() = default;
    flat_map(const flat_map& other) { copy_from(other); }
    flat_map(flat_map&& other) noexcept { swap(other); }
    flat_map& operator=(const flat_map& other) {
        if (this != &other) {
            flat_map copy(other);
            swap(copy);
        }
        return *this;
    }
    flat_map& operator=(flat_map&& other) noexcept {
        if (this != &other) {
            flat_map taken(std::move(other));
            swap(taken);
        }
        return *this;
    }
    ~flat_map() { destroy(); }

    void swap(flat_map& other) noexcept {
        std::swap(slots_, other.slots_);
        std::swap(capacity_, other.capacity_);
        std::swap(size_, other.size_);
        std::swap(used_, other.used_);
    }

    // The number of elements.
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }

    // Returns the value of `key`, or nullptr. Valid until `key` is erased or
    // the map cleared or destroyed (inserts move no element).
    Value* find(const Key& key) { return const_cast<Value*>(std::as_const(*this).find(key)); }
    const Value* find(const Key& key) const {
        if (size_ == 0) return nullptr;
        const std::size_t tag = tag_of(Hash{}(key));
        for (std::size_t i = home(tag, capacity_);; i = (i + 1) & (capacity_ - 1)) {
            const slot& s = slots_[i];
            if (s.tag == empty_tag) return nullptr;
            if (s.tag == tag && KeyEqual{}(s.node->key, key)) return &s.node->value;
        }
    }

    // Inserts `key` with `value`, which must not be in the map. Returns the
    // stored value. Strong guarantee.
    template <class V>
    Value& insert_new(const Key& key, V&& value) {
        const std::size_t tag = tag_of(Hash{}(key));
        // (A raw pointer, not a std::unique_ptr: one class template less to
        // compile in every unit that uses a system.)
        node_type* node = new node_type{key, std::forward<V>(value)};
        try {
            reserve_one();
        } catch (...) {
            delete node;
            throw;
        }
        for (std::size_t i = home(tag, capacity_);; i = (i + 1) & (capacity_ - 1)) {
            slot& s = slots_[i];
            if (s.tag == empty_tag || s.tag == erased_tag) {
                if (s.tag == empty_tag) ++used_;
                s.tag = tag;
                s.node = node;
                ++size_;
                return s.node->value;
            }
        }
    }

    // Removes `key`; returns whether it was there. `out`, if not null,
    // receives the value (moved) before the element is destroyed.
    bool erase(const Key& key, Value* out = nullptr) {
        if (size_ == 0) return false;
        const std::size_t tag = tag_of(Hash{}(key));
        for (std::size_t i = home(tag, capacity_);; i = (i + 1) & (capacity_ - 1)) {
            slot& s = slots_[i];
            if (s.tag == empty_tag) return false;
            if (s.tag == tag && KeyEqual{}(s.node->key, key)) {
                if (out != nullptr) *out = std::move(s.node->value);
                delete s.node;
                s.node = nullptr;
                s.tag = erased_tag;
                --size_;
                return true;
            }
        }
    }

    // Removes every element and frees the array.
    void clear() noexcept {
        destroy();
        slots_ = nullptr;
        capacity_ = size_ = used_ = 0;
    }

    // Calls f(key, value) for every element, in no order.
    template <class F>
    void for_each(F&& f) const {
        for (std::size_t i = 0; i < capacity_; ++i) {
            if (slots_[i].tag > erased_tag) f(slots_[i].node->key, slots_[i].node->value);
        }
    }

    // The number of slots (for tests).
    std::size_t capacity() const noexcept { return capacity_; }

private:
    struct node_type {
        Key key;
        Value value;
    };
    struct slot {
        std::size_t tag = empty_tag;
        node_type* node = nullptr;
    };
    static constexpr std::size_t empty_tag = 0;
    static constexpr std::size_t erased_tag = 1;
    static constexpr std::size_t min_capacity = 8;

    static std::size_t tag_of(std::size_t hash) noexcept {
        return hash > erased_tag ? hash : hash + 2;
    }
    // The first slot of the probe sequence: the top bits of tag * 2^64 / phi.
    static std::size_t home(std::size_t tag, std::size_t capacity) noexcept {
        const auto product = static_cast<std::uint64_t>(tag) * 0x9E3779B97F4A7C15ull;
        return static_cast<std::size_t>(product >> (64 - std::countr_zero(capacity)));
    }

    // Makes room for one more element, rebuilding the array if full and erased
    // slots would pass 3/4 of it (at twice the size while the live elements
    // alone would pass half of it).
    void reserve_one() {
        if (capacity_ != 0 && (used_ + 1) * 4 <= capacity_ * 3) return;
        std::size_t capacity = capacity_ == 0 ? min_capacity : capacity_;
        while ((size_ + 1) * 2 > capacity) capacity *= 2;
        slot* fresh = new slot[capacity];  // the only step that may throw
        for (std::size_t i = 0; i < capacity_; ++i) {
            if (slots_[i].tag > erased_tag) place(fresh, capacity, slots_[i]);
        }
        delete[] slots_;
        slots_ = fresh;
        capacity_ = capacity;
        used_ = size_;
    }

    // Puts `s` into the first empty slot of its probe sequence in `slots`
    // (a new array: no erased slots).
    static void place(slot* slots, std::size_t capacity, const slot& s) noexcept {
        std::size_t i = home(s.tag, capacity);
        while (slots[i].tag != empty_tag) i = (i + 1) & (capacity - 1);
        slots[i] = s;
    }

    void copy_from(const flat_map& other) {
        if (other.size_ == 0) return;
        flat_map copy;
        copy.capacity_ = min_capacity;
        while (other.size_ * 2 > copy.capacity_) copy.capacity_ *= 2;
        copy.slots_ = new slot[copy.capacity_];
        for (std::size_t i = 0; i < other.capacity_; ++i) {
            const slot& s = other.slots_[i];
            if (s.tag <= erased_tag) continue;
            // Counted at once: a throwing copy leaves `copy` to free what it holds.
            place(copy.slots_, copy.capacity_, slot{s.tag, new node_type(*s.node)});
            ++copy.size_;
            ++copy.used_;
        }
        swap(copy);
    }

    void destroy() noexcept {
        if (slots_ == nullptr) return;
        for (std::size_t i = 0; i < capacity_; ++i) {
            if (slots_[i].tag > erased_tag) delete slots_[i].node;
        }
        delete[] slots_;
    }

    slot* slots_ = nullptr;
    std::size_t capacity_ = 0;  // 0 or a power of two >= min_capacity
    std::size_t size_ = 0;      // live elements
    std::size_t used_ = 0;      // live and erased slots
};

}  // namespace importlock::detail
