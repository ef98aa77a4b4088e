// SPDX-License-Identifier: BSL-1.0
// importlock/detail/function.hpp: a copyable type-erased callable, std::function's
// interface without <functional>.
//
// Purpose: module_spec's loader, factory and builder, and the finders' functions,
// need a copyable callable of a fixed signature. std::function is that, but with
// libstdc++ and C++20 <functional> brings the searchers and with them all of
// <algorithm>'s code: about 11,600 preprocessed lines, a seventh of what the core
// header costs the compiler (benchmarks/README.md, "Compile time").
//
// What it keeps of std::function: construction from any copyable callable whose
// call `f(args...)` converts to R, or from nullptr (empty); copy and move; `bool`
// tests and `== nullptr`; a const call operator that calls the stored callable as
// a non-const lvalue, so mutable lambdas work and each copy owns its own state.
// A null function pointer and a callable that tests false (an empty std::function
// or importlock function) make an empty function, as std::function does.
// What it leaves out: pointers to members (call them from a lambda), target(),
// allocators. Calling an empty function throws std::logic_error (std::function
// throws std::bad_function_call, which is declared in <functional>).
//
// Storage: a callable of at most two pointers that is nothrow move constructible
// is stored in place (a captureless lambda, a function pointer, a lambda
// capturing one or two references); anything else on the heap. Cost: a call is one
// indirect call; a copy is one indirect call, plus an allocation for heap-stored
// callables; a move of a heap-stored callable moves a pointer.
//
// Thread-safety: as std::function: const members (the call, bool tests) may run
// concurrently with each other; the call then runs the callable concurrently.
#pragma once

#include <concepts>
#include <cstddef>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace importlock::detail {

template <class Signature>
class function;

// Whether an lvalue of F can be called with Args and its result converts to R. A
// concept, so that the constructors' constraints short-circuit on it before they
// ask whether F is copyable (which, for a class holding a function, would ask
// again about that function's constructors).
template <class F, class R, class... Args>
concept invocable_returning = requires(F& f, Args&&... args) { f(std::forward<Args>(args)...); } &&
                              (std::is_void_v<R> || requires(F& f, Args&&... args) {
                                  { f(std::forward<Args>(args)...) } -> std::convertible_to<R>;
                              });

template <class R, class... Args>
class function<R(Args...)> {
    // In-place storage for small callables, else a pointer to the heap copy.
    struct storage {
        alignas(void*) unsigned char bytes[2 * sizeof(void*)];
    };

    struct operations {
        R (*call)(storage&, Args&&...);
        void (*copy)(storage& to, const storage& from);     // may throw; `to` is raw
        void (*move)(storage& to, storage& from) noexcept;  // destroys `from`
        void (*destroy)(storage&) noexcept;
    };

    template <class F>
    static constexpr bool stored_in_place =
        sizeof(F) <= sizeof(storage) && alignof(F) <= alignof(storage) &&
        std::is_nothrow_move_constructible_v<F>;

    template <class F>
    static F& in_place(storage& s) noexcept {
        return *std::launder(reinterpret_cast<F*>(s.bytes));
    }
    template <class F>
    static F*& on_heap(storage& s) noexcept {
        return *std::launder(reinterpret_cast<F**>(s.bytes));
    }

    template <class F>
    static R call(F& f, Args&&... args) {
        if constexpr (std::is_void_v<R>) {
            static_cast<void>(f(std::forward<Args>(args)...));
        } else {
            return f(std::forward<Args>(args)...);
        }
    }

    template <class F>
    static constexpr operations in_place_operations{
        [](storage& s, Args&&... args) -> R {
            return call(in_place<F>(s), std::forward<Args>(args)...);
        },
        [](storage& to, const storage& from) {
            ::new (static_cast<void*>(to.bytes))
                F(static_cast<const F&>(in_place<F>(const_cast<storage&>(from))));
        },
        [](storage& to, storage& from) noexcept {
            ::new (static_cast<void*>(to.bytes)) F(std::move(in_place<F>(from)));
            in_place<F>(from).~F();
        },
        [](storage& s) noexcept { in_place<F>(s).~F(); },
    };

    template <class F>
    static constexpr operations heap_operations{
        [](storage& s, Args&&... args) -> R {
            return call(*on_heap<F>(s), std::forward<Args>(args)...);
        },
        [](storage& to, const storage& from) {
            F* copy = new F(static_cast<const F&>(*on_heap<F>(const_cast<storage&>(from))));
            ::new (static_cast<void*>(to.bytes)) F*(copy);
        },
        [](storage& to, storage& from) noexcept {
            ::new (static_cast<void*>(to.bytes)) F*(on_heap<F>(from));
        },
        [](storage& s) noexcept { delete on_heap<F>(s); },
    };

public:
    using result_type = R;

    function() noexcept = default;
    function(std::nullptr_t) noexcept {}

    template <class F>
        requires(!std::is_same_v<std::remove_cvref_t<F>, function> &&
                 invocable_returning<std::decay_t<F>, R, Args...> &&
                 std::is_copy_constructible_v<std::decay_t<F>>)
    function(F&& f) {
        using stored = std::decay_t<F>;
        if constexpr (std::is_pointer_v<stored>) {
            if (f == nullptr) return;
        } else if constexpr (requires { static_cast<bool>(f); }) {
            if (!static_cast<bool>(f)) return;
        }
        if constexpr (stored_in_place<stored>) {
            ::new (static_cast<void*>(storage_.bytes)) stored(std::forward<F>(f));
            ops_ = &in_place_operations<stored>;
        } else {
            ::new (static_cast<void*>(storage_.bytes)) stored*(new stored(std::forward<F>(f)));
            ops_ = &heap_operations<stored>;
        }
    }

    function(const function& other) {
        if (other.ops_ != nullptr) {
            other.ops_->copy(storage_, other.storage_);
            ops_ = other.ops_;
        }
    }
    function(function&& other) noexcept {
        if (other.ops_ != nullptr) {
            other.ops_->move(storage_, other.storage_);
            ops_ = std::exchange(other.ops_, nullptr);
        }
    }
    function& operator=(const function& other) {
        if (this != &other) function(other).swap(*this);
        return *this;
    }
    function& operator=(function&& other) noexcept {
        if (this != &other) {
            reset();
            if (other.ops_ != nullptr) {
                other.ops_->move(storage_, other.storage_);
                ops_ = std::exchange(other.ops_, nullptr);
            }
        }
        return *this;
    }
    function& operator=(std::nullptr_t) noexcept {
        reset();
        return *this;
    }
    template <class F>
        requires(!std::is_same_v<std::remove_cvref_t<F>, function> &&
                 invocable_returning<std::decay_t<F>, R, Args...> &&
                 std::is_copy_constructible_v<std::decay_t<F>>)
    function& operator=(F&& f) {
        function(std::forward<F>(f)).swap(*this);
        return *this;
    }
    ~function() { reset(); }

    void swap(function& other) noexcept {
        function moved(std::move(other));
        other = std::move(*this);
        *this = std::move(moved);
    }

    explicit operator bool() const noexcept { return ops_ != nullptr; }
    friend bool operator==(const function& f, std::nullptr_t) noexcept { return !f; }

    R operator()(Args... args) const {
        if (ops_ == nullptr) throw std::logic_error("importlock: call of an empty function");
        return ops_->call(storage_, std::forward<Args>(args)...);
    }

private:
    void reset() noexcept {
        if (ops_ != nullptr) std::exchange(ops_, nullptr)->destroy(storage_);
    }

    mutable storage storage_;
    const operations* ops_ = nullptr;
};

}  // namespace importlock::detail
