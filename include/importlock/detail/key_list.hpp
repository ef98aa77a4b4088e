// SPDX-License-Identifier: BSL-1.0
// importlock/detail/key_list.hpp: a fixed list of keys in one pointer.
//
// Purpose: a registry entry keeps the keys its last load imported (its
// dependencies, §1.11) for as long as it is registered, and most modules
// import nothing. A std::vector costs every entry three pointers; a key_list
// costs one, null when empty, and one allocation (a count, then the keys)
// when not. It is built once from the keys a load recorded and never grows.
//
// Thread-safety: none of its own (a value type); the entry's rules say who
// may read or replace it. Cost: construction O(n) and one allocation; moves,
// swap, size() and iteration O(1) per step, no allocation; 8 bytes.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace importlock::detail {

template <class Key>
class key_list {
public:
    key_list() noexcept = default;

    // Moves the keys `keys[i]` for which `keep(i)` is true, `count` of them,
    // into a new list. If an allocation or a key's move throws, nothing is
    // allocated any more and `keys` may hold moved-from keys (the caller
    // discards them).
    template <class Keep>
    key_list(std::vector<Key>& keys, std::size_t count, Keep&& keep) {
        if (count == 0) return;
        void* raw = over_aligned ? ::operator new(bytes_for(count), std::align_val_t{alignment})
                                 : ::operator new(bytes_for(count));
        header* h = ::new (raw) header{0};
        try {
            for (std::size_t i = 0; i < keys.size() && h->size < count; ++i) {
                if (!keep(i)) continue;
                ::new (slot(h, h->size)) Key(std::move(keys[i]));
                ++h->size;
            }
        } catch (...) {
            release(h);
            throw;
        }
        header_ = h;
    }

    // Moves every key of `keys` into a new list.
    explicit key_list(std::vector<Key>&& keys)
        : key_list(keys, keys.size(), [](std::size_t) { return true; }) {}

    key_list(key_list&& other) noexcept : header_(std::exchange(other.header_, nullptr)) {}
    key_list& operator=(key_list&& other) noexcept {
        key_list(std::move(other)).swap(*this);
        return *this;
    }
    key_list(const key_list&) = delete;
    key_list& operator=(const key_list&) = delete;
    ~key_list() { clear(); }

    void swap(key_list& other) noexcept { std::swap(header_, other.header_); }

    // Destroys the keys and frees the list.
    void clear() noexcept {
        if (header_ != nullptr) release(std::exchange(header_, nullptr));
    }

    std::size_t size() const noexcept { return header_ == nullptr ? 0 : header_->size; }
    bool empty() const noexcept { return header_ == nullptr; }
    const Key* begin() const noexcept { return header_ == nullptr ? nullptr : keys_of(header_); }
    const Key* end() const noexcept {
        return header_ == nullptr ? nullptr : keys_of(header_) + header_->size;
    }

    // Returns a copy of the keys.
    std::vector<Key> to_vector() const { return std::vector<Key>(begin(), end()); }

private:
    // One allocation: the header, then the keys at keys_offset.
    struct header {
        std::size_t size;
    };
    static constexpr std::size_t alignment = alignof(Key) > alignof(header) ? alignof(Key)
                                                                            : alignof(header);
    // Over-aligned keys need the aligned operator new; the others use the
    // plain one (which replaced global allocators count).
    static constexpr bool over_aligned = alignment > __STDCPP_DEFAULT_NEW_ALIGNMENT__;
    static constexpr std::size_t keys_offset =
        (sizeof(header) + alignof(Key) - 1) / alignof(Key) * alignof(Key);

    static std::size_t bytes_for(std::size_t count) noexcept {
        return keys_offset + count * sizeof(Key);
    }
    // The storage of the key at `i` (for its construction).
    static void* slot(header* h, std::size_t i) noexcept {
        return reinterpret_cast<unsigned char*>(h) + keys_offset + i * sizeof(Key);
    }
    // The constructed keys.
    static Key* keys_of(header* h) noexcept {
        return std::launder(
            reinterpret_cast<Key*>(reinterpret_cast<unsigned char*>(h) + keys_offset));
    }
    static const Key* keys_of(const header* h) noexcept { return keys_of(const_cast<header*>(h)); }

    // Destroys `h`'s keys, newest first, and frees it.
    static void release(header* h) noexcept {
        Key* keys = keys_of(h);
        for (std::size_t i = h->size; i-- > 0;) std::destroy_at(keys + i);
        if (over_aligned) {
            ::operator delete(static_cast<void*>(h), std::align_val_t{alignment});
        } else {
            ::operator delete(static_cast<void*>(h));
        }
    }

    header* header_ = nullptr;
};

}  // namespace importlock::detail
