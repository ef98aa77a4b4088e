// SPDX-License-Identifier: BSL-1.0
// importlock/errors.hpp: the exceptions importlock throws.
//
// Every error derives from import_error, itself a std::runtime_error, and its
// message names the key (and, for cycles, the chain of keys) in words a user
// can act on. Exceptions thrown by a loader are never wrapped: the caller of
// import_module receives the loader's own exception object.
#pragma once

#include <cstddef>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "key_traits.hpp"

namespace importlock {

// Reports a failure of the import machinery itself (not of a loader).
class import_error : public std::runtime_error {
public:
    // Builds an error about `key` (already formatted) with a full message.
    import_error(std::string key, const std::string& message)
        : std::runtime_error(message), key_(std::move(key)) {}

    // Returns the formatted key the error is about.
    const std::string& key() const noexcept { return key_; }

private:
    std::string key_;
};

// Reports that no finder knows the key (CPython's ModuleNotFoundError).
class module_not_found_error : public import_error {
public:
    explicit module_not_found_error(std::string key)
        : import_error(key, "no module named '" + key + "'") {}

    // Builds the error with a finder's hint on how the key could be found
    // (finder_policy.hpp's not_found_hint), appended to the message after "; ".
    module_not_found_error(std::string key, std::string hint)
        : import_error(key, "no module named '" + key + "'" + (hint.empty() ? "" : "; " + hint)),
          hint_(std::move(hint)) {}

    // Returns the finder's hint, or an empty string.
    const std::string& hint() const noexcept { return hint_; }

private:
    std::string hint_;
};

// Reports an import of a key that block() tombstoned (CPython's
// `sys.modules[k] = None`, which raises "import of k halted; None in sys.modules").
class import_halted_error : public import_error {
public:
    explicit import_halted_error(std::string key)
        : import_error(key, "import of '" + key + "' halted: the key is blocked") {}
};

// Reports a circular import that the lock policy refuses to resolve with a
// partially initialised module. chain() lists the keys of the cycle in order,
// starting and ending with the same key: {"a", "b", "a"}.
class circular_import_error : public import_error {
public:
    // Builds the error from the cycle's keys (front == back) and a description.
    circular_import_error(std::vector<std::string> chain, const std::string& what)
        : import_error(chain.empty() ? std::string() : chain.front(),
                       "circular import: " + format_chain(chain) + " (" + what + ")"),
          chain_(std::move(chain)) {}

    // Returns the keys of the cycle, first and last equal.
    const std::vector<std::string>& chain() const noexcept { return chain_; }

    // Formats a chain as "a -> b -> a", keeping the ends of a long chain and
    // marking what was cut, as abseil's deadlock report does.
    static std::string format_chain(const std::vector<std::string>& chain) {
        constexpr std::size_t keep_each_end = 4;
        std::string out;
        const auto append = [&out](const std::string& key) {
            if (!out.empty()) out += " -> ";
            out += key;
        };
        if (chain.size() <= 2 * keep_each_end + 1) {
            for (const auto& key : chain) append(key);
            return out;
        }
        for (std::size_t i = 0; i < keep_each_end; ++i) append(chain[i]);
        out += " -> ... (long cycle of " + std::to_string(chain.size() - 1) +
               " imports; list truncated)";
        for (std::size_t i = chain.size() - keep_each_end; i < chain.size(); ++i) append(chain[i]);
        return out;
    }

private:
    std::vector<std::string> chain_;
};

// Reports that waiting for a tracked_mutex or a tracked_thread's join would
// never end: the wait closes a cycle of waits through imports, tracked
// mutexes and joins (tracked_mutex.hpp, tracked_thread.hpp), or the thread
// locks a tracked_mutex it already holds. The thread that would close the
// cycle gets it; the others go on waiting until it unwinds.
class deadlock_error : public std::runtime_error {
public:
    // Builds the error; `chain` names the waits' nodes from the one this
    // thread wanted to the one it holds.
    deadlock_error(const std::string& what, std::vector<std::string> chain)
        : std::runtime_error(what), chain_(std::move(chain)) {}

    // Returns the nodes of the cycle ("mutex 'registry'", "the import of 'plugin'").
    const std::vector<std::string>& chain() const noexcept { return chain_; }

private:
    std::vector<std::string> chain_;
};

// Reports that a timed import gave up waiting for another thread's import of
// the key (import_module_for / import_module_until). The other import goes
// on; a later import sees its result.
class import_timeout_error : public import_error {
public:
    import_timeout_error(std::string key, std::thread::id holder)
        : import_timeout_error(std::move(key), holder, "it") {}

    // Builds the error; `held` says what the holder imports ("it", or
    // "'slow' under the global import lock").
    import_timeout_error(std::string key, std::thread::id holder, const std::string& held)
        : import_error(key, "import of '" + key + "' timed out waiting for thread " +
                                describe(holder) + ", which is importing " + held),
          holder_(holder) {}

    // Builds the error for a wait on another process's file lock
    // (file_cache.hpp's import_file_for): `holder_process` is the id of the
    // process that held the key's lock when the wait ended (0: not known), and
    // `held` says what it imports ("it").
    import_timeout_error(std::string key, long long holder_process, const std::string& held)
        : import_error(
              key, "import of '" + key + "' timed out waiting for " +
                       (holder_process > 0 ? "process " + std::to_string(holder_process)
                                           : std::string("another process (its id is not known)")) +
                       ", which is importing " + held),
          holder_process_(holder_process) {}

    // Returns the thread that held the key's lock when the wait ended (a
    // default id when the holder is another process).
    std::thread::id holder() const noexcept { return holder_; }

    // Returns the id of the process that held the key's file lock when the
    // wait ended, or 0 (an in-process wait, or not known).
    long long holder_process() const noexcept { return holder_process_; }

    // Formats a thread id as std::thread::id's operator<< does.
    static std::string describe(std::thread::id thread) {
        return detail::write_to_string([thread](std::ostream& out) { out << thread; });
    }

private:
    std::thread::id holder_;
    long long holder_process_ = 0;
};

// Reports that an import gave up waiting because its std::stop_token was
// triggered. The other import goes on; a later import sees its result.
class import_cancelled_error : public import_error {
public:
    import_cancelled_error(std::string key, std::thread::id holder)
        : import_cancelled_error(std::move(key), holder, "it") {}

    // Builds the error; `held` as for import_timeout_error.
    import_cancelled_error(std::string key, std::thread::id holder, const std::string& held)
        : import_error(key, "import of '" + key + "' cancelled while waiting for thread " +
                                import_timeout_error::describe(holder) + ", which is importing " +
                                held),
          holder_(holder) {}

    // Returns the thread that held the key's lock when the wait ended.
    std::thread::id holder() const noexcept { return holder_; }

private:
    std::thread::id holder_;
};

// Reports an import nested deeper than the system's limit
// (basic_import_system::set_max_import_depth; CPython's RecursionError), or a
// hierarchical key with more unloaded ancestors than the limit. Nothing of the
// refused import is registered.
class import_depth_error : public import_error {
public:
    import_depth_error(std::string key, std::size_t limit, const std::string& what)
        : import_error(key, "import of '" + key + "' is nested too deep: " + what +
                                " (the limit is " + std::to_string(limit) +
                                "; raise it with set_max_import_depth)"),
          limit_(limit) {}

    // Returns the limit in force when the import was refused.
    std::size_t limit() const noexcept { return limit_; }

private:
    std::size_t limit_;
};

}  // namespace importlock
