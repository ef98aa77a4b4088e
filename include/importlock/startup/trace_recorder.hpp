// SPDX-License-Identifier: BSL-1.0
// importlock/startup/trace_recorder.hpp: a timeline of a start-up in the
// Chrome Trace Event format, for Perfetto (ui.perfetto.dev) and
// chrome://tracing, and as an SVG picture.
//
// Purpose: install a trace_recorder<Key> as the observer (or in an
// observer_group), run the start-up, write(os) the JSON. Each thread is one
// track ("tid"); each import that ran a loader is a complete event ("ph":"X",
// category "import") spanning its nested imports, with its self time in
// args; each wait for another thread's import is a "wait" span naming the key
// and the owner thread's track; each cycle resolution is an instant event
// ("ph":"i", category "cycle"); each reload a "reload" span. Spans of one
// track nest: timestamps are taken on the importing thread, in hook order.
//
// Thread-safety: every member, any thread; the hooks take one internal mutex
// (cold path only). Cost: two clock reads and two short critical sections per
// import or wait; memory O(events).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../detail/describe_exception.hpp"
#include "../key_traits.hpp"
#include "../observer.hpp"

namespace importlock {

// One span or instant of a trace, as trace_recorder::events() returns it.
struct trace_event {
    enum class kind { import, wait, cycle, reload };
    kind type = kind::import;
    std::string key;                      // formatted key
    unsigned track = 0;                   // 1-based thread track
    std::chrono::nanoseconds start{};     // since the recorder was created
    std::chrono::nanoseconds duration{};  // 0 for a cycle
    std::size_t depth = 0;                // spans open on the track when it began
    std::chrono::nanoseconds self{};      // imports: minus nested imports and waits
    bool ok = true;                       // imports, reloads: succeeded
    bool finished = true;                 // false: still open when events() was called
    unsigned owner_track = 0;             // waits: the holder's track
    std::string detail;                   // failure message, cycle chain
};

namespace detail {

// Appends `text` as a JSON string literal; invalid UTF-8 becomes U+FFFD.
inline void json_string(std::string& out, std::string_view text) {
    out += '"';
    const char* hex = "0123456789abcdef";
    for (std::size_t i = 0; i < text.size();) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
            ++i;
        } else if (c < 0x20) {
            out += "\\u00";
            out += hex[c >> 4];
            out += hex[c & 0xf];
            ++i;
        } else if (c < 0x80) {
            out += static_cast<char>(c);
            ++i;
        } else {
            // A valid UTF-8 sequence is copied whole.
            std::size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
            if (c > 0xf4) len = 0;
            bool valid = len != 0 && i + len <= text.size();
            for (std::size_t j = 1; valid && j < len; ++j) {
                valid = (static_cast<unsigned char>(text[i + j]) & 0xc0) == 0x80;
            }
            if (valid && len == 3) {  // no overlong forms or surrogates
                const auto c1 = static_cast<unsigned char>(text[i + 1]);
                valid = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
            } else if (valid && len == 4) {
                const auto c1 = static_cast<unsigned char>(text[i + 1]);
                valid = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
            }
            if (valid) {
                out.append(text.substr(i, len));
                i += len;
            } else {
                out += "\\ufffd";
                ++i;
            }
        }
    }
    out += '"';
}

// Microseconds with nanosecond decimals: "12.345".
inline void json_micros(std::string& out, std::chrono::nanoseconds d) {
    const std::int64_t ns = std::max<std::int64_t>(0, static_cast<std::int64_t>(d.count()));
    out += std::to_string(ns / 1000);
    const std::int64_t frac = ns % 1000;
    out += '.';
    out += static_cast<char>('0' + frac / 100);
    out += static_cast<char>('0' + frac / 10 % 10);
    out += static_cast<char>('0' + frac % 10);
}

}  // namespace detail

template <class Key>
class trace_recorder : public import_observer<Key> {
    using clock = std::chrono::steady_clock;

public:
    // Timestamps count from now.
    trace_recorder() : epoch_(clock::now()) {}

    // Names the calling thread's track ("main", "worker 1"); otherwise "thread N".
    void name_thread(std::string name) {
        std::lock_guard lock(mutex_);
        track_of(std::this_thread::get_id()).name = std::move(name);
    }

    // --- Hooks ---------------------------------------------------------------------------

    void on_import_begin(const Key& key) override {
        std::string name = key_traits<Key>::to_string(key);
        const auto now = clock::now();
        std::lock_guard lock(mutex_);
        track& t = track_of(std::this_thread::get_id());
        t.open.push_back(open_span{trace_event::kind::import, std::move(name), now, {}, 0});
    }

    void on_import_end(const Key&, std::chrono::nanoseconds) override { close(true, {}); }

    void on_import_failed(const Key&, std::exception_ptr error) override {
        close(false, detail::describe_exception(error));
    }

    void on_wait(const Key& key, std::thread::id holder) override {
        std::string name = key_traits<Key>::to_string(key);
        const auto now = clock::now();
        std::lock_guard lock(mutex_);
        const unsigned owner = holder == std::thread::id{} ? 0u : track_of(holder).number;
        track& t = track_of(std::this_thread::get_id());
        t.open.push_back(open_span{trace_event::kind::wait, std::move(name), now, {}, owner});
    }

    void on_wait_end(const Key&, std::chrono::nanoseconds) override { close(true, {}); }

    void on_cycle(const Key& key, const std::vector<std::string>& chain, bool partial) override {
        std::string name = key_traits<Key>::to_string(key);
        std::string text;
        for (const std::string& k : chain) text += (text.empty() ? "" : " -> ") + k;
        text += partial ? " (partial module)" : " (circular_import_error)";
        const auto now = clock::now();
        std::lock_guard lock(mutex_);
        track& t = track_of(std::this_thread::get_id());
        trace_event e;
        e.type = trace_event::kind::cycle;
        e.key = std::move(name);
        e.track = t.number;
        e.start = now - epoch_;
        e.depth = t.open.size();
        e.ok = partial;
        e.detail = std::move(text);
        events_.push_back(std::move(e));
    }

    void on_reload(const Key& key, std::chrono::nanoseconds elapsed, bool ok) override {
        std::string name = key_traits<Key>::to_string(key);
        const auto now = clock::now();
        std::lock_guard lock(mutex_);
        track& t = track_of(std::this_thread::get_id());
        trace_event e;
        e.type = trace_event::kind::reload;
        e.key = std::move(name);
        e.track = t.number;
        e.start = std::max(std::chrono::nanoseconds{0}, now - epoch_ - elapsed);
        e.duration = elapsed;
        e.depth = t.open.size();
        e.self = elapsed;
        e.ok = ok;
        events_.push_back(std::move(e));
    }

    // --- Output --------------------------------------------------------------------------

    // Returns the events so far, by track and start (spans still open are
    // included up to now, with finished = false).
    std::vector<trace_event> events() const {
        const auto now = clock::now();
        std::lock_guard lock(mutex_);
        std::vector<trace_event> all = events_;
        for (const auto& [id, t] : tracks_) {
            for (std::size_t d = 0; d < t.open.size(); ++d) {
                all.push_back(to_event(t.open[d], t.number, d, now, true, {}));
                all.back().finished = false;
            }
        }
        std::sort(all.begin(), all.end(), [](const trace_event& a, const trace_event& b) {
            if (a.track != b.track) return a.track < b.track;
            if (a.start != b.start) return a.start < b.start;
            return a.depth < b.depth;
        });
        return all;
    }

    // Returns the track names, index track - 1.
    std::vector<std::string> track_names() const {
        std::lock_guard lock(mutex_);
        std::vector<std::string> names(tracks_.size());
        for (const auto& [id, t] : tracks_) names[t.number - 1] = display_name(t);
        return names;
    }

    // Writes {"traceEvents": [...]}: one metadata event naming the process
    // and each thread track, then the spans and instants (times in µs).
    void write(std::ostream& out) const { out << to_json(); }

    std::string to_json() const {
        const std::vector<trace_event> all = events();
        const std::vector<std::string> names = track_names();
        std::string s = "{\"traceEvents\": [\n";
        s +=
            R"({"name": "process_name", "ph": "M", "pid": 1, "tid": 0, "args": {"name": "importlock start-up"}})";
        for (std::size_t i = 0; i < names.size(); ++i) {
            const std::string tid = std::to_string(i + 1);
            s += ",\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 1, \"tid\": " + tid +
                 ", \"args\": {\"name\": ";
            detail::json_string(s, names[i]);
            s += "}},\n{\"name\": \"thread_sort_index\", \"ph\": \"M\", \"pid\": 1, \"tid\": " +
                 tid + ", \"args\": {\"sort_index\": " + tid + "}}";
        }
        for (const trace_event& e : all) {
            s += ",\n{\"name\": ";
            detail::json_string(s, e.type == trace_event::kind::wait     ? "wait " + e.key
                                   : e.type == trace_event::kind::cycle  ? "cycle " + e.key
                                   : e.type == trace_event::kind::reload ? "reload " + e.key
                                                                         : e.key);
            s += ", \"cat\": \"";
            s += e.type == trace_event::kind::import  ? "import"
                 : e.type == trace_event::kind::wait  ? "wait"
                 : e.type == trace_event::kind::cycle ? "cycle"
                                                      : "reload";
            s += e.type == trace_event::kind::cycle ? "\", \"ph\": \"i\", \"s\": \"t\""
                                                    : "\", \"ph\": \"X\"";
            s += ", \"pid\": 1, \"tid\": " + std::to_string(e.track) + ", \"ts\": ";
            detail::json_micros(s, e.start);
            if (e.type != trace_event::kind::cycle) {
                s += ", \"dur\": ";
                detail::json_micros(s, e.duration);
            }
            s += ", \"args\": {\"key\": ";
            detail::json_string(s, e.key);
            if (e.type == trace_event::kind::import) {
                s += ", \"self_us\": ";
                detail::json_micros(s, e.self);
                s += ", \"depth\": " + std::to_string(e.depth);
            }
            if (e.type == trace_event::kind::wait) {
                s += ", \"owner_tid\": " + std::to_string(e.owner_track) + ", \"owner\": ";
                detail::json_string(
                    s, e.owner_track == 0 ? std::string("unknown") : names[e.owner_track - 1]);
            }
            if (e.type != trace_event::kind::wait) s += e.ok ? ", \"ok\": true" : ", \"ok\": false";
            if (!e.finished) s += ", \"unfinished\": true";
            if (!e.detail.empty()) {
                s += e.type == trace_event::kind::cycle ? ", \"chain\": " : ", \"error\": ";
                detail::json_string(s, e.detail);
            }
            s += "}}";
        }
        s += "\n],\n\"displayTimeUnit\": \"ms\"}\n";
        return s;
    }

    // Writes an SVG picture of the timeline: one row per track, nested spans
    // stacked downwards (imports coloured by key, waits grey, cycles as red
    // triangles), a millisecond axis. `width` in pixels.
    void write_svg(std::ostream& out, int width = 1200) const {
        const std::vector<trace_event> all = events();
        const std::vector<std::string> names = track_names();
        // From the first event to the last (not from the recorder's creation).
        std::chrono::nanoseconds origin = all.empty() ? std::chrono::nanoseconds{} : all[0].start;
        for (const trace_event& e : all) origin = std::min(origin, e.start);
        std::int64_t end_ns = 1;
        std::vector<std::size_t> depth(names.size(), 1);
        for (const trace_event& e : all) {
            end_ns = std::max<std::int64_t>(end_ns, (e.start + e.duration - origin).count());
            depth[e.track - 1] = std::max(depth[e.track - 1], e.depth + 1);
        }
        const int label_w = 110, bar_h = 18, gap = 10, top = 30;
        const double plot_w = std::max(100, width - label_w - 20);
        const auto x = [&](std::chrono::nanoseconds t) {  // t since origin
            return label_w + plot_w * static_cast<double>(t.count()) / static_cast<double>(end_ns);
        };
        std::vector<int> row_top(names.size());
        int y = top;
        for (std::size_t r = 0; r < names.size(); ++r) {
            row_top[r] = y;
            y += static_cast<int>(depth[r]) * bar_h + gap;
        }
        const int legend_y = y + 6;
        const int height = legend_y + 14;
        std::string s;
        s += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) +
             "\" height=\"" + std::to_string(height) +
             "\" font-family=\"sans-serif\" font-size=\"11\">\n";
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
        // Axis: about 10 ticks at a round number of milliseconds.
        const double total_ms = static_cast<double>(end_ns) / 1e6;
        double step = 0.001;  // 1, 2, 5 x 10^k ms
        for (int i = 0; total_ms / step > 10; ++i) step *= i % 3 == 1 ? 2.5 : 2.0;
        for (double t = 0; t <= total_ms + 1e-9; t += step) {
            const double tx = x(std::chrono::nanoseconds(static_cast<std::int64_t>(t * 1e6)));
            s += "<line x1=\"" + num(tx) + "\" y1=\"" + std::to_string(top - 8) + "\" x2=\"" +
                 num(tx) + "\" y2=\"" + std::to_string(legend_y - 6) +
                 "\" stroke=\"#ddd\"/>\n<text x=\"" + num(tx) + "\" y=\"" +
                 std::to_string(top - 12) + "\" text-anchor=\"middle\">" + num(t) + " ms</text>\n";
        }
        for (std::size_t r = 0; r < names.size(); ++r) {
            s += "<text x=\"4\" y=\"" + std::to_string(row_top[r] + 13) + "\">" + xml(names[r]) +
                 "</text>\n";
        }
        for (const trace_event& e : all) {
            const double x0 = x(e.start - origin);
            const int ey = row_top[e.track - 1] + static_cast<int>(e.depth) * bar_h;
            if (e.type == trace_event::kind::cycle) {
                s += "<path d=\"M" + num(x0) + " " + std::to_string(ey) +
                     " l-5 10 h10 z\" fill=\"#d62728\"><title>" +
                     xml("cycle " + e.key + ": " + e.detail) + "</title></path>\n";
                continue;
            }
            const double w = std::max(1.0, x(e.start - origin + e.duration) - x0);
            const std::string fill = e.type == trace_event::kind::wait ? "#bbbbbb"
                                     : !e.ok                           ? "#d62728"
                                                                       : colour(e.key);
            const std::string label = e.type == trace_event::kind::wait ? "wait " + e.key : e.key;
            s += "<g><title>" + xml(label) + ": " +
                 num(static_cast<double>(e.duration.count()) / 1e3) + " us</title><rect x=\"" +
                 num(x0) + "\" y=\"" + std::to_string(ey) + "\" width=\"" + num(w) +
                 "\" height=\"" + std::to_string(bar_h - 2) + "\" fill=\"" + fill +
                 "\" stroke=\"#555\" stroke-width=\"0.5\"/>";
            if (w > 6.5 * static_cast<double>(label.size())) {
                s += "<text x=\"" + num(x0 + 3) + "\" y=\"" + std::to_string(ey + 12) + "\">" +
                     xml(label) + "</text>";
            }
            s += "</g>\n";
        }
        s += "<text x=\"4\" y=\"" + std::to_string(legend_y + 8) +
             "\" fill=\"#555\">one row per thread, nested imports below their importer; grey: "
             "a wait for another thread's import; red: a failed import; red triangle: a "
             "circular import resolved</text>\n";
        s += "</svg>\n";
        out << s;
    }

private:
    struct open_span {
        trace_event::kind type;
        std::string key;
        clock::time_point start;
        std::chrono::nanoseconds excluded;  // nested imports and waits
        unsigned owner;
    };
    struct track {
        unsigned number = 0;
        std::string name;
        std::vector<open_span> open;
    };

    track& track_of(std::thread::id id) {
        const auto [it, added] = tracks_.try_emplace(id);
        if (added) it->second.number = static_cast<unsigned>(tracks_.size());
        return it->second;
    }

    static std::string display_name(const track& t) {
        return t.name.empty() ? "thread " + std::to_string(t.number) : t.name;
    }

    trace_event to_event(const open_span& o, unsigned number, std::size_t depth,
                         clock::time_point end, bool ok, std::string detail) const {
        trace_event e;
        e.type = o.type;
        e.key = o.key;
        e.track = number;
        e.start = o.start - epoch_;
        e.duration = end - o.start;
        e.depth = depth;
        e.self = std::max(std::chrono::nanoseconds{0}, e.duration - o.excluded);
        e.ok = ok;
        e.owner_track = o.owner;
        e.detail = std::move(detail);
        return e;
    }

    void close(bool ok, std::string detail) {
        const auto now = clock::now();
        std::lock_guard lock(mutex_);
        const auto it = tracks_.find(std::this_thread::get_id());
        if (it == tracks_.end() || it->second.open.empty()) return;
        track& t = it->second;
        const open_span done = std::move(t.open.back());
        t.open.pop_back();
        events_.push_back(to_event(done, t.number, t.open.size(), now, ok, std::move(detail)));
        if (!t.open.empty()) t.open.back().excluded += events_.back().duration;
    }

    static std::string num(double v) {
        const auto scaled = static_cast<long long>(v * 10 + (v < 0 ? -0.5 : 0.5));
        std::string s = std::to_string(scaled / 10);
        if (const long long frac = (scaled < 0 ? -scaled : scaled) % 10)
            s += "." + std::to_string(frac);
        return s;
    }

    static std::string xml(std::string_view text) {
        std::string out;
        for (const char c : text) {
            switch (c) {
                case '<': out += "&lt;"; break;
                case '>': out += "&gt;"; break;
                case '&': out += "&amp;"; break;
                case '"': out += "&quot;"; break;
                default:
                    if (static_cast<unsigned char>(c) >= 0x20) out += c;
            }
        }
        return out;
    }

    // A pastel colour derived from the key, stable across runs.
    static std::string colour(std::string_view key) {
        std::uint32_t h = 2166136261u;
        for (const char c : key) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
        const char* palette[] = {"#8dd3c7", "#bebada", "#80b1d3", "#fdb462", "#b3de69",
                                 "#fccde5", "#ccebc5", "#ffed6f", "#9ecae1", "#fdd0a2"};
        return palette[h % 10];
    }

    const clock::time_point epoch_;
    mutable std::mutex mutex_;
    std::unordered_map<std::thread::id, track> tracks_;
    std::vector<trace_event> events_;
};

}  // namespace importlock
