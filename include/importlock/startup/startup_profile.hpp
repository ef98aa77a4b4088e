// SPDX-License-Identifier: BSL-1.0
// importlock/startup/startup_profile.hpp: a record of one run's imports (keys,
// dependency edges, self times) that can be saved, diffed and loaded back, to
// preload the next run in parallel (startup/preload.hpp). JVM AppCDS class
// lists and Android's preloaded-classes, with the graph and the costs.
//
// Purpose: install a startup_profile<Key> as the observer of a system (or in
// an observer_group), run the start-up, optionally add_dependencies(system),
// then save(os). load(is) reads it back.
//
// Thread-safety: every member may be called from any thread; the hooks run
// concurrently on importing threads and take one internal mutex (cold path
// only: the hit path never reaches an observer).
// Cost: per recorded import, one mutex acquisition in each of on_import_begin
// and on_import_end plus a hash lookup of the key; memory O(keys + edges).
//
// The text format (version 1), one record per line, fields separated by one
// space, '#' lines and blank lines ignored:
//
//   importlock-startup-profile 1
//   # any comment
//   key <key> <self_ns>          one per key, in first-import order
//   edge <from> <to>             <from>'s import imported (or waited for) <to>
//
// <key>, <from>, <to> are key_traits<Key>::to_string escaped so that any key
// is one field: '\' -> "\\", space -> "\s", tab -> "\t", newline -> "\n",
// carriage return -> "\r", other bytes below 0x20 and 0x7f -> "\xHH", and the
// empty key -> "\e". <self_ns> is the key's self time in the run, in
// nanoseconds: its imports' time minus nested imports and minus waits for
// other threads. Edges name keys that have a key line (before or after).
// load() reads keys back with key_traits<Key>::from_string (a key type
// without it fails to compile, naming it) and throws profile_error, naming
// the line, for anything else.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <istream>
#include <mutex>
#include <optional>
#include <ostream>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../key_traits.hpp"
#include "../observer.hpp"

namespace importlock {

// Holds when key_traits<Key> (or `Traits`) can read a key back from its
// to_string text: `static std::optional<Key> from_string(std::string_view)`.
template <class Key, class Traits = key_traits<Key>>
concept readable_key = requires(std::string_view text) {
    { Traits::from_string(text) } -> std::same_as<std::optional<Key>>;
};

// A malformed startup profile: line() is the 1-based line that is wrong (0:
// the stream as a whole, e.g. empty).
class profile_error : public std::runtime_error {
public:
    profile_error(std::size_t line, const std::string& what)
        : std::runtime_error(line == 0
                                 ? "startup profile: " + what
                                 : "startup profile line " + std::to_string(line) + ": " + what),
          line_(line) {}
    std::size_t line() const noexcept { return line_; }

private:
    std::size_t line_;
};

namespace detail {

// Escapes `text` into one whitespace-free field of the profile format.
inline std::string profile_escape(std::string_view text) {
    if (text.empty()) return "\\e";
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        const auto u = static_cast<unsigned char>(c);
        switch (c) {
            case '\\': out += "\\\\"; break;
            case ' ': out += "\\s"; break;
            case '\t': out += "\\t"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            default:
                if (u < 0x20 || u == 0x7f) {
                    const char* digits = "0123456789abcdef";
                    out += "\\x";
                    out += digits[u >> 4];
                    out += digits[u & 0xf];
                } else {
                    out += c;
                }
        }
    }
    return out;
}

// The inverse of profile_escape; nullopt for a malformed field.
inline std::optional<std::string> profile_unescape(std::string_view field) {
    if (field == "\\e") return std::string();
    if (field.empty()) return std::nullopt;
    const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    for (std::size_t i = 0; i < field.size(); ++i) {
        const char c = field[i];
        if (c != '\\') {
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r') return std::nullopt;
            out += c;
            continue;
        }
        if (++i == field.size()) return std::nullopt;
        switch (field[i]) {
            case '\\': out += '\\'; break;
            case 's': out += ' '; break;
            case 't': out += '\t'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 'x': {
                if (i + 2 >= field.size()) return std::nullopt;
                const int hi = hex(field[i + 1]);
                const int lo = hex(field[i + 2]);
                if (hi < 0 || lo < 0) return std::nullopt;
                out += static_cast<char>(hi * 16 + lo);
                i += 2;
                break;
            }
            default: return std::nullopt;
        }
    }
    return out;
}

// Splits `line` at single spaces.
inline std::vector<std::string_view> profile_fields(std::string_view line) {
    std::vector<std::string_view> fields;
    for (std::size_t start = 0;;) {
        const std::size_t space = line.find(' ', start);
        fields.push_back(
            line.substr(start, space == std::string_view::npos ? space : space - start));
        if (space == std::string_view::npos) return fields;
        start = space + 1;
    }
}

inline std::optional<std::int64_t> profile_nanoseconds(std::string_view text) {
    if (text.empty() || text.size() > 18) return std::nullopt;
    std::int64_t value = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + (c - '0');
    }
    return value;
}

}  // namespace detail

// One run's imports: keys in first-import order with their self times, and
// the edges "from imported to". Feed it as an observer, or build it with
// add_key / add_edge; save and load it as text (format above).
template <class Key>
class startup_profile : public import_observer<Key> {
    using traits = key_traits<Key>;

public:
    static constexpr int format_version = 1;
    static constexpr std::string_view header = "importlock-startup-profile";

    startup_profile() = default;
    startup_profile(const startup_profile& other) : data_(other.copy_data()) {}
    startup_profile(startup_profile&& other) : data_(other.take_data()) {}
    startup_profile& operator=(startup_profile other) {
        std::lock_guard lock(mutex_);
        data_ = std::move(other.data_);
        return *this;
    }

    // --- Hooks (observer.hpp) -----------------------------------------------------------

    void on_import_begin(const Key& key) override {
        const auto now = std::chrono::steady_clock::now();
        std::lock_guard lock(mutex_);
        const std::size_t index = data_.intern(key);
        std::vector<frame>& stack = stacks_[std::this_thread::get_id()];
        if (!stack.empty()) data_.edge(stack.back().index, index);
        // A dotted key's parent was imported just before it, outside its
        // frame; unless this thread is importing the parent (a package
        // importing its own child gets itself partial: no dependency).
        if (const std::optional<Key> up = traits::parent(key)) {
            const std::size_t* p = data_.find(*up);
            if (p != nullptr && std::none_of(stack.begin(), stack.end(),
                                             [&](const frame& f) { return f.index == *p; })) {
                data_.edge(index, *p);
            }
        }
        stack.push_back(frame{index, {}, now});
    }

    void on_import_end(const Key&, std::chrono::nanoseconds elapsed) override { finish(elapsed); }

    void on_import_failed(const Key&, std::exception_ptr) override {
        finish(std::chrono::nanoseconds{-1});
    }

    void on_wait(const Key& key, std::thread::id) override {
        std::lock_guard lock(mutex_);
        const auto it = stacks_.find(std::this_thread::get_id());
        if (it == stacks_.end() || it->second.empty()) return;  // a top-level wait
        data_.edge(it->second.back().index, data_.intern(key));
    }

    void on_wait_end(const Key&, std::chrono::nanoseconds waited) override {
        std::lock_guard lock(mutex_);
        const auto it = stacks_.find(std::this_thread::get_id());
        if (it == stacks_.end() || it->second.empty()) return;
        it->second.back().excluded += waited;  // another thread's work, not this key's
    }

    void on_cycle(const Key& key, const std::vector<std::string>&, bool) override {
        std::lock_guard lock(mutex_);
        const auto it = stacks_.find(std::this_thread::get_id());
        if (it == stacks_.end() || it->second.empty()) return;
        data_.edge(it->second.back().index, data_.intern(key));  // the back edge
    }

    // --- Building and reading -----------------------------------------------------------

    // Adds `key` (at the end of the order) if it is new, and adds `self` to its self time.
    void add_key(const Key& key, std::chrono::nanoseconds self = {}) {
        std::lock_guard lock(mutex_);
        data_.self[data_.intern(key)] += self;
    }

    // Adds the edge "`from` imports `to`", adding either key if it is new.
    void add_edge(const Key& from, const Key& to) {
        std::lock_guard lock(mutex_);
        const std::size_t f = data_.intern(from);
        data_.edge(f, data_.intern(to));
    }

    // Adds the edges `system` recorded (basic_import_system::dependencies) between
    // keys of this profile: also the imports that were hits, which no hook sees.
    template <class System>
    void add_dependencies(const System& system) {
        const std::vector<Key> recorded = keys();
        for (const Key& key : recorded) {
            for (const Key& dep : system.dependencies(key)) {
                std::lock_guard lock(mutex_);
                const std::size_t* f = data_.find(key);
                const std::size_t* t = data_.find(dep);
                if (f != nullptr && t != nullptr) data_.edge(*f, *t);
            }
        }
    }

    // Returns the keys in first-import order.
    std::vector<Key> keys() const {
        std::lock_guard lock(mutex_);
        return data_.keys;
    }

    // Returns `key`'s recorded self time (0 for an unknown key).
    std::chrono::nanoseconds self_time(const Key& key) const {
        std::lock_guard lock(mutex_);
        const std::size_t* i = data_.find(key);
        return i == nullptr ? std::chrono::nanoseconds{} : data_.self[*i];
    }

    // Returns the edges (from, to) as indices into keys(), sorted.
    std::vector<std::pair<std::size_t, std::size_t>> edge_indices() const {
        std::lock_guard lock(mutex_);
        return {data_.edges.begin(), data_.edges.end()};
    }

    // Returns the edges as keys: (from, to), "from imported to", sorted by keys() order.
    std::vector<std::pair<Key, Key>> edges() const {
        std::lock_guard lock(mutex_);
        std::vector<std::pair<Key, Key>> out;
        for (const auto& [f, t] : data_.edges) out.emplace_back(data_.keys[f], data_.keys[t]);
        return out;
    }

    // Returns the keys `key` imported, in keys() order.
    std::vector<Key> dependencies(const Key& key) const {
        std::lock_guard lock(mutex_);
        std::vector<Key> out;
        if (const std::size_t* i = data_.find(key)) {
            for (auto it = data_.edges.lower_bound({*i, 0});
                 it != data_.edges.end() && it->first == *i; ++it) {
                out.push_back(data_.keys[it->second]);
            }
        }
        return out;
    }

    // Returns the self times in keys() order.
    std::vector<std::chrono::nanoseconds> self_times() const {
        std::lock_guard lock(mutex_);
        return data_.self;
    }

    std::size_t size() const {
        std::lock_guard lock(mutex_);
        return data_.keys.size();
    }

    bool empty() const { return size() == 0; }

    // Forgets everything recorded (imports in flight record into the new profile).
    void clear() {
        std::lock_guard lock(mutex_);
        data_ = profile_data{};
    }

    // --- Text ----------------------------------------------------------------------------

    // Writes the profile in the format above. Throws profile_error (line 0)
    // when a key would not read back as itself (from_string(to_string(k)) != k).
    void save(std::ostream& out) const {
        static_assert(
            readable_key<Key>,
            "importlock::startup_profile<Key>::save/load need key_traits<Key>::from_string: "
            "add `static std::optional<Key> from_string(std::string_view)` (the inverse "
            "of to_string) to your key_traits specialisation (importlock/key_traits.hpp)");
        if constexpr (readable_key<Key>) save_text(out);
    }

    // Returns save's output.
    std::string to_string() const {
        return detail::write_to_string([this](std::ostream& out) { save(out); });
    }

    // Reads a profile written by save (or by hand); throws profile_error
    // naming the line of the first malformed record.
    static startup_profile load(std::istream& in) {
        static_assert(
            readable_key<Key>,
            "importlock::startup_profile<Key>::save/load need key_traits<Key>::from_string: "
            "add `static std::optional<Key> from_string(std::string_view)` (the inverse "
            "of to_string) to your key_traits specialisation (importlock/key_traits.hpp)");
        if constexpr (readable_key<Key>) {
            return load_text(in);
        } else {
            return startup_profile{};
        }
    }

private:
    void save_text(std::ostream& out) const {
        const profile_data data = copy_data();
        std::vector<std::string> names;
        names.reserve(data.keys.size());
        const typename traits::key_equal equal{};
        for (const Key& key : data.keys) {
            std::string text = traits::to_string(key);
            const std::optional<Key> back = traits::from_string(text);
            if (!back || !equal(*back, key)) {
                throw profile_error(0, "key '" + text +
                                           "' does not read back as itself through "
                                           "key_traits<Key>::from_string: it cannot be saved");
            }
            names.push_back(detail::profile_escape(text));
        }
        out << header << ' ' << format_version << '\n';
        out << "# " << data.keys.size() << " keys, " << data.edges.size()
            << " edges; self times in nanoseconds; 'edge a b': a imported b\n";
        for (std::size_t i = 0; i < names.size(); ++i) {
            out << "key " << names[i] << ' ' << data.self[i].count() << '\n';
        }
        for (const auto& [f, t] : data.edges) out << "edge " << names[f] << ' ' << names[t] << '\n';
    }

    static startup_profile load_text(std::istream& in) {
        startup_profile profile;
        profile_data& data = profile.data_;
        struct pending_edge {
            std::size_t line;
            Key from, to;
        };
        std::vector<pending_edge> pending;
        std::string line;
        std::size_t number = 0;
        bool have_header = false;
        const auto read_key = [&](std::string_view field) -> Key {
            const std::optional<std::string> text = detail::profile_unescape(field);
            if (!text) {
                throw profile_error(number, "malformed key field '" + std::string(field) + "'");
            }
            std::optional<Key> key = traits::from_string(*text);
            if (!key) throw profile_error(number, "'" + *text + "' is not a key of this type");
            return std::move(*key);
        };
        while (std::getline(in, line)) {
            ++number;
            if (!line.empty() && line.back() == '\r') line.pop_back();  // CRLF files
            if (line.empty() || line.front() == '#') continue;
            const std::vector<std::string_view> f = detail::profile_fields(line);
            if (!have_header) {
                if (f.size() != 2 || f[0] != header) {
                    throw profile_error(number, "expected the header '" + std::string(header) +
                                                    " " + std::to_string(format_version) +
                                                    "', got '" + line + "'");
                }
                if (f[1] != std::to_string(format_version)) {
                    throw profile_error(number, "unsupported format version '" + std::string(f[1]) +
                                                    "' (this reader reads " +
                                                    std::to_string(format_version) + ")");
                }
                have_header = true;
                continue;
            }
            if (f[0] == "key") {
                if (f.size() != 3) {
                    throw profile_error(number,
                                        "expected 'key <key> <self_ns>', got '" + line + "'");
                }
                Key key = read_key(f[1]);
                const std::optional<std::int64_t> ns = detail::profile_nanoseconds(f[2]);
                if (!ns) {
                    throw profile_error(number, "self time '" + std::string(f[2]) +
                                                    "' is not a number of nanoseconds");
                }
                if (data.find(key) != nullptr) {
                    throw profile_error(number, "key '" + std::string(f[1]) + "' listed twice");
                }
                data.self[data.intern(key)] = std::chrono::nanoseconds{*ns};
            } else if (f[0] == "edge") {
                if (f.size() != 3) {
                    throw profile_error(number, "expected 'edge <from> <to>', got '" + line + "'");
                }
                Key from = read_key(f[1]);
                pending.push_back(pending_edge{number, std::move(from), read_key(f[2])});
            } else {
                throw profile_error(number, "unknown record '" + std::string(f[0]) +
                                                "' (expected 'key' or 'edge')");
            }
        }
        if (!have_header) throw profile_error(0, "no header line (empty input)");
        for (const pending_edge& e : pending) {
            const std::size_t* from = data.find(e.from);
            const std::size_t* to = data.find(e.to);
            if (from == nullptr || to == nullptr) {
                throw profile_error(e.line, "edge names the key '" +
                                                traits::to_string(from == nullptr ? e.from : e.to) +
                                                "', which has no key line");
            }
            data.edge(*from, *to);
        }
        return profile;
    }

    struct profile_data {
        std::vector<Key> keys;
        std::vector<std::chrono::nanoseconds> self;
        std::set<std::pair<std::size_t, std::size_t>> edges;
        std::unordered_map<Key, std::size_t, typename traits::hasher, typename traits::key_equal>
            index;

        const std::size_t* find(const Key& key) const {
            const auto it = index.find(key);
            return it == index.end() ? nullptr : &it->second;
        }
        std::size_t intern(const Key& key) {
            const auto [it, added] = index.try_emplace(key, keys.size());
            if (added) {
                keys.push_back(key);
                self.emplace_back();
            }
            return it->second;
        }
        void edge(std::size_t from, std::size_t to) {
            if (from != to) edges.emplace(from, to);
        }
    };

    struct frame {
        std::size_t index;
        std::chrono::nanoseconds excluded{};  // nested imports and waits
        std::chrono::steady_clock::time_point start;
    };

    void finish(std::chrono::nanoseconds elapsed) {
        const auto now = std::chrono::steady_clock::now();
        std::lock_guard lock(mutex_);
        const auto it = stacks_.find(std::this_thread::get_id());
        if (it == stacks_.end() || it->second.empty()) return;
        std::vector<frame>& stack = it->second;
        const frame done = stack.back();
        stack.pop_back();
        if (elapsed.count() < 0) elapsed = now - done.start;
        data_.self[done.index] += std::max(elapsed - done.excluded, std::chrono::nanoseconds{0});
        if (!stack.empty()) stack.back().excluded += elapsed;
        if (stack.empty()) stacks_.erase(it);
    }

    profile_data copy_data() const {
        std::lock_guard lock(mutex_);
        return data_;
    }
    profile_data take_data() {
        std::lock_guard lock(mutex_);
        return std::move(data_);
    }

    mutable std::mutex mutex_;
    profile_data data_;
    std::unordered_map<std::thread::id, std::vector<frame>> stacks_;
};

}  // namespace importlock
