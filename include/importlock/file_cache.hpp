// SPDX-License-Identifier: BSL-1.0
// importlock/file_cache.hpp: crash-safe, cross-process once-initialisation of
// on-disk artefacts (POSIX; not in the umbrella header).
//
// "The import lock only protects imports inside one process" (chapter 42.30);
// bytecode caches are written by several processes at once (42.31). A
// file_cache brings importlock's semantics across the processes of one
// machine for any artefact built into a file: compiled shaders, generated
// code, downloaded models, test fixtures.
//
//   importlock::file_cache cache("/var/cache/app");
//   std::filesystem::path p = cache.import_file("shaders/blur.spv",
//       [](const std::filesystem::path& temporary) { compile_into(temporary); });
//
// Semantics (each key names the file `directory / key`):
//   hit      the published file exists: one stat(2), no lock, no write.
//   miss     the threads of this process are coalesced by an in-process
//            basic_import_system (strict_per_key_locks, single-phase
//            builders), so one thread per process goes on: it takes the key's
//            OS lock (flock(2) on `.importlock/locks/<key>`, released by the
//            kernel when the holder dies), re-checks, removes the temporary
//            file of a builder that died holding it, records its own pid in
//            the lock file, runs the builder on a temporary file in the
//            published file's directory, fsyncs it, renames it into place,
//            fsyncs the directory (CPython's `_write_atomic`), clears the
//            record and releases the lock.
//   failure  a builder that throws: the temporary file is removed, the lock
//            released, the exception propagates; the next importer (any
//            process) builds again.
//   crash    a holder killed mid-build (SIGKILL): its lock is released by the
//            kernel, the published name never shows a partial file (only
//            rename(2) publishes), and the next importer of the key removes
//            the dead builder's temporary file (`.importlock-tmp.<pid>.<name>`,
//            the pid read from the key's lock file, no directory scan) and
//            builds again.
//   nesting  a builder may import other keys (from this or any file_cache);
//            importing a key again on its own stack is circular_import_error.
//   cycles   before a process blocks on a key lock (or a thread on another
//            thread's in-process import), it walks the wait-for records kept
//            in `.importlock/graph` under the lock `.importlock/graph.lock`,
//            checking and registering in one step: a wait that would close a
//            cycle throws circular_import_error naming the keys and processes,
//            so exactly one import of a cycle is refused and none hangs.
//            Records of dead processes are ignored: a holder record counts
//            only while its process exists *and* the key's OS lock is held
//            (so a reused process id does not revive it).
//   timeout  import_file_for gives up waiting (for threads of this process
//            or for another process's lock) with import_timeout_error naming
//            the key and the holder's process id.
//
// Thread-safety: every member may be called from any thread, and from
// builders. Several file_cache objects, in one process or many, may share a
// directory. fork() while a build is in flight shares that build's lock with
// the child until it execs or exits (flock semantics; descriptors are
// O_CLOEXEC).
//
// Cost: a hit is one stat(2) of the published path (plus the key check, O(key
// length)). A miss is the in-process import's cold path, an open and flock of
// the key's lock file, two critical sections under the graph lock (each reads
// and rewrites `.importlock/graph`, O(records in flight)), a read, write and
// two truncates of the lock file (the builder record), the builder, two
// fsyncs and a rename. A contended wait is a blocking flock (import_file) or
// a poll with backoff from 0.5 ms to 10 ms (import_file_for).
//
// Left on disk: the published files, one lock file per key ever built (empty
// unless its last builder died; deleting a lock file another process has
// open would split the lock), and the directory `.importlock/`. At
// quiescence there is no temporary file and no `.importlock/graph` file,
// except after a crash: a killed builder's temporary file stays until its key
// is imported again, its wait-for records (ignored meanwhile) until the next
// import that writes the graph.
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "detail/deadline.hpp"
#include "errors.hpp"
#include "finders/function_finder.hpp"
#include "import_system.hpp"
#include "key_traits.hpp"
#include "locking/per_key_locks.hpp"
#include "observer.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

namespace importlock {

namespace detail::files {

// The in-process key of a file_cache: a flat name (no dotted parents).
struct file_key {
    std::string name;
    friend bool operator==(const file_key&, const file_key&) = default;
};

// What the in-process registry holds for a published key.
struct published_file {
    std::filesystem::path path;
};

}  // namespace detail::files

// Flat keys: "a.b" does not import "a" first.
template <>
struct key_traits<detail::files::file_key> {
    struct hasher {
        std::size_t operator()(const detail::files::file_key& key) const noexcept {
            return std::hash<std::string>{}(key.name);
        }
    };
    using key_equal = std::equal_to<detail::files::file_key>;
    // Returns the key's name.
    static std::string to_string(const detail::files::file_key& key) { return key.name; }
    // Returns nullopt: every key is top level.
    static std::optional<detail::files::file_key> parent(const detail::files::file_key&) {
        return std::nullopt;
    }
};

namespace detail::files {

// The prefix of every name the cache itself uses; refused as a key component.
inline constexpr std::string_view reserved_prefix = ".importlock";
// Temporary files are `<dir>/.importlock-tmp.<pid>.<name>`.
inline constexpr std::string_view temp_prefix = ".importlock-tmp.";

// Returns the key with NUL bytes shown as "\0", for messages.
inline std::string printable(const std::string& key) {
    std::string out;
    for (const char c : key) {
        if (c == '\0') {
            out += "\\0";
        } else {
            out += c;
        }
    }
    return out;
}

// Returns errno's text, "No space left on device (errno 28)".
inline std::string errno_text(int err) {
    return std::generic_category().message(err) + " (errno " + std::to_string(err) + ")";
}

// Throws import_error: "file_cache: cannot <what> for '<key>': <errno text>".
[[noreturn]] inline void fail(const std::string& key, const std::string& what, int err) {
    throw import_error(key,
                       "file_cache: cannot " + what + " for '" + key + "': " + errno_text(err));
}

// Refuses a key that is not a relative name inside the cache directory.
inline void check_key(const std::string& key) {
    const auto refuse = [&key](const std::string& why) {
        const std::string shown = printable(key);
        throw import_error(shown, "file_cache: the key '" + shown + "' is refused: " + why);
    };
    if (key.empty()) refuse("it is empty; a key is a file name relative to the cache directory");
    if (key.find('\0') != std::string::npos) refuse("it contains a NUL byte");
    if (key.front() == '/')
        refuse("it is an absolute path; a key is relative to the cache directory");
    std::size_t begin = 0;
    while (true) {
        const std::size_t end = std::min(key.find('/', begin), key.size());
        const std::string_view part(key.data() + begin, end - begin);
        if (part.empty()) refuse("it has an empty path component ('//' or a trailing '/')");
        if (part == ".") refuse("it has a '.' component");
        if (part == "..") refuse("it contains '..', which would leave the cache directory");
        if (part.substr(0, reserved_prefix.size()) == reserved_prefix) {
            refuse("names starting with '.importlock' are the cache's own files");
        }
        if (end == key.size()) break;
        begin = end + 1;
    }
}

// A file descriptor, closed on destruction.
class unique_fd {
public:
    unique_fd() = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    ~unique_fd() { reset(); }

    // Returns the descriptor, or -1.
    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }

    // Closes the descriptor; returns 0 or close's errno. EINTR is not an error
    // and is not retried: the descriptor is gone either way (Linux, POSIX.1-2024).
    int close() noexcept {
        if (fd_ < 0) return 0;
        const int rc = ::close(std::exchange(fd_, -1));
        return rc == 0 || errno == EINTR ? 0 : errno;
    }
    void reset() noexcept { (void)close(); }

private:
    int fd_ = -1;
};

// open(2) with O_CLOEXEC, retried on EINTR; -1 and errno on failure.
inline int open_file(const std::string& path, int flags, mode_t mode = 0) {
    while (true) {
        const int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
        if (fd >= 0 || errno != EINTR) return fd;
    }
}

// flock(2) retried on EINTR; returns 0 or the errno.
inline int lock_file(int fd, int operation) noexcept {
    while (true) {
        if (::flock(fd, operation) == 0) return 0;
        if (errno != EINTR) return errno;
    }
}

// fsync(2) retried on EINTR; returns 0 or the errno.
inline int sync_file(int fd) noexcept {
    while (true) {
        if (::fsync(fd) == 0) return 0;
        if (errno != EINTR) return errno;
    }
}

// Writes all of `data`, retrying short writes and EINTR; returns 0 or the errno.
inline int write_all(int fd, std::string_view data) noexcept {
    const char* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
        const ssize_t n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return EIO;
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    return 0;
}

// Reads the whole file into `out`; returns 0, or the errno (ENOENT: no file).
inline int read_all(const std::string& path, std::string& out) {
    unique_fd fd(open_file(path, O_RDONLY));
    if (!fd) return errno;
    char buffer[4096];
    while (true) {
        const ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        if (n == 0) return 0;
        out.append(buffer, static_cast<std::size_t>(n));
    }
}

// Fsyncs a directory, so that a rename or mkdir in it is durable. Filesystems
// that cannot sync a directory (EINVAL, ENOTSUP) are not an error.
inline void sync_directory(const std::string& key, const std::string& directory) {
    unique_fd fd(open_file(directory, O_RDONLY | O_DIRECTORY));
    if (!fd) fail(key, "open the directory '" + directory + "' to sync it", errno);
    const int err = sync_file(fd.get());
    if (err != 0 && err != EINVAL && err != ENOTSUP) {
        fail(key, "fsync the directory '" + directory + "'", err);
    }
    if (const int e = fd.close()) fail(key, "close the directory '" + directory + "'", e);
}

// Creates the directories of `relative` below `root` (all but its last
// component), syncing each new directory's parent.
inline void make_parents(const std::string& key, const std::filesystem::path& root,
                         const std::string& relative) {
    std::size_t slash = relative.find('/');
    while (slash != std::string::npos) {
        const std::string dir = (root / relative.substr(0, slash)).string();
        if (::mkdir(dir.c_str(), 0777) == 0) {
            sync_directory(key, std::filesystem::path(dir).parent_path().string());
        } else if (errno != EEXIST) {
            fail(key, "create the directory '" + dir + "'", errno);
        }
        slash = relative.find('/', slash + 1);
    }
}

// Returns whether the process exists (a zombie counts: see lock_is_held).
inline bool process_exists(long long pid) noexcept {
    if (pid <= 0) return false;
    if (pid == static_cast<long long>(::getpid())) return true;
    return ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
}

// Returns whether some open file description holds the flock of `path`: a
// test lock, taken and dropped at once when free. Conflicts with this
// process's own descriptors too (flock locks belong to open file descriptions).
inline bool lock_is_held(const std::string& path) {
    unique_fd fd(open_file(path, O_RDONLY));
    if (!fd) return false;  // no lock file: nobody can hold it
    return lock_file(fd.get(), LOCK_EX | LOCK_NB) == EWOULDBLOCK;  // closing drops a test lock
}

// Returns a token for this thread, unique within the process.
inline std::uint64_t this_thread_token() noexcept {
    static std::atomic<std::uint64_t> next{1};
    thread_local const std::uint64_t token = next.fetch_add(1, std::memory_order_relaxed);
    return token;
}

// One node of the cross-process wait-for graph: a thread of a process.
struct graph_node {
    long long pid = 0;
    std::uint64_t thread = 0;
    friend bool operator==(const graph_node&, const graph_node&) = default;

    // Returns this thread of this process.
    static graph_node self() noexcept {
        return {static_cast<long long>(::getpid()), this_thread_token()};
    }
};

// A wait-for record: `node` holds the key's file lock ('H') or waits for the
// key ('W': its file lock, or another thread's in-process import of it).
struct graph_record {
    char kind = 'H';
    graph_node node;
    std::string key;
};

// Formats records, one a line: "<kind> <pid> <thread> <key length> <key>\n".
inline std::string encode_records(const std::vector<graph_record>& records) {
    std::string out;
    for (const auto& r : records) {
        out += r.kind;
        out += ' ' + std::to_string(r.node.pid) + ' ' + std::to_string(r.node.thread) + ' ' +
               std::to_string(r.key.size()) + ' ';
        out += r.key;
        out += '\n';
    }
    return out;
}

// Parses encode_records' text; stops at the first malformed line.
inline std::vector<graph_record> decode_records(std::string_view text) {
    std::vector<graph_record> out;
    const auto number = [&text](auto& value) {
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec != std::errc() || end == text.data() + text.size() || *end != ' ') return false;
        text.remove_prefix(static_cast<std::size_t>(end - text.data()) + 1);
        return true;
    };
    while (text.size() > 2 && (text[0] == 'H' || text[0] == 'W') && text[1] == ' ') {
        graph_record r;
        r.kind = text[0];
        text.remove_prefix(2);
        std::size_t length = 0;
        if (!number(r.node.pid) || !number(r.node.thread) || !number(length)) break;
        if (text.size() < length + 1 || text[length] != '\n') break;
        r.key.assign(text.data(), length);
        text.remove_prefix(length + 1);
        out.push_back(std::move(r));
    }
    return out;
}

// A type-erased reference to a builder, valid while the builder lives.
class builder_ref {
public:
    template <class Builder>
    explicit builder_ref(Builder& build) noexcept
        : object_(const_cast<void*>(static_cast<const void*>(std::addressof(build)))),
          call_([](void* object, const std::filesystem::path& temporary) {
              (*static_cast<Builder*>(object))(temporary);
          }) {}

    // Runs the builder on `temporary`.
    void operator()(const std::filesystem::path& temporary) const { call_(object_, temporary); }

private:
    void* object_;
    void (*call_)(void*, const std::filesystem::path&);
};

}  // namespace detail::files

// Builds each artefact of a directory once per machine, whichever process
// asks first; see the file comment for the semantics and costs.
class file_cache {
public:
    // The clock of import_file_for's deadlines.
    using clock_type = std::chrono::steady_clock;

    // Opens (creating it and its `.importlock/` state directory when missing)
    // the cache in `directory`. Throws import_error naming the directory.
    explicit file_cache(std::filesystem::path directory)
        : directory_(std::move(directory)),
          state_(directory_ / ".importlock"),
          locks_(state_ / "locks"),
          prefix_((directory_ / "").string()),
          system_(finder_type(finder{})) {
        std::error_code ec;
        std::filesystem::create_directories(locks_, ec);
        if (ec) {
            throw import_error(directory_.string(), "file_cache: cannot create the directory '" +
                                                        locks_.string() + "': " + ec.message());
        }
        system_.set_observer(std::make_shared<wait_bridge>(*this));
    }
    file_cache(const file_cache&) = delete;
    file_cache& operator=(const file_cache&) = delete;

    // Returns the cache directory.
    const std::filesystem::path& directory() const noexcept { return directory_; }

    // Returns where `key` is published (`directory() / key`); refuses a bad key
    // with import_error naming it. Does not touch the filesystem.
    std::filesystem::path path_of(const std::string& key) const {
        detail::files::check_key(key);
        return directory_ / key;
    }

    // Imports `key`: returns `directory() / key`, building it first with
    // `build(temporary)` when no process has published it. `build` writes the
    // whole artefact into the file `temporary` (it exists, empty) and closes
    // it; it may import other keys. It must throw when it cannot write the
    // whole file (a stream that failed silently would be published). Throws
    // import_error (a refused key, a failed system call: naming the key and
    // the errno text), circular_import_error, or what `build` threw.
    template <class Builder>
    std::filesystem::path import_file(const std::string& key, Builder&& build) {
        static_assert(std::is_invocable_v<Builder&, const std::filesystem::path&>,
                      "importlock: a file_cache builder must be callable as "
                      "void(const std::filesystem::path& temporary)");
        return import_erased(key, detail::files::builder_ref(build), std::nullopt);
    }

    // Imports `key` as import_file does, but gives up waiting for other threads
    // and processes after `timeout` with import_timeout_error naming the key
    // and the holder's process id (holder_process()). A build this thread runs
    // is never interrupted.
    template <class Builder, class Rep, class Period>
    std::filesystem::path import_file_for(const std::string& key, Builder&& build,
                                          const std::chrono::duration<Rep, Period>& timeout) {
        static_assert(std::is_invocable_v<Builder&, const std::filesystem::path&>,
                      "importlock: a file_cache builder must be callable as "
                      "void(const std::filesystem::path& temporary)");
        return import_erased(key, detail::files::builder_ref(build),
                             detail::deadline_after(timeout, detail::files::printable(key)));
    }

    // Returns whether `key` is published (one stat). Refuses a bad key.
    bool contains(const std::string& key) const {
        detail::files::check_key(key);
        return published(key, prefix_ + key);
    }

    // ===================== End of the public interface. =====================

private:
    using file_key = detail::files::file_key;
    using published_file = detail::files::published_file;
    using graph_node = detail::files::graph_node;
    using graph_record = detail::files::graph_record;
    using unique_fd = detail::files::unique_fd;
    using spec_type = module_spec<file_key, published_file>;

    // One import_file call, seen by the finder on the importing thread.
    struct request {
        file_cache* cache;
        const std::string& key;
        detail::files::builder_ref build;
        std::optional<clock_type::time_point> deadline;
        const std::filesystem::path& path;
    };

    // The request of the innermost import_file on this thread.
    static request*& current_request() noexcept {
        thread_local request* current = nullptr;
        return current;
    }

    // The in-process finder: the spec of the key this thread's import_file
    // asks for, whose single-phase builder runs the file side (load).
    struct finder {
        std::optional<spec_type> operator()(const file_key& key) const {
            request* r = current_request();
            if (r == nullptr || r->key != key.name) return std::nullopt;
            spec_type spec;
            spec.builder = [r](const file_key&, importer<file_key, published_file>&) {
                return r->cache->load(*r);
            };
            return spec;
        }
    };
    using finder_type = function_finder<file_key, published_file, finder>;
    using system_type =
        basic_import_system<file_key, published_file, strict_per_key_locks, finder_type>;

    // Puts this thread's in-process waits into the cross-process graph, so that
    // a cycle through a wait between two threads of one process is found too.
    class wait_bridge final : public import_observer<file_key> {
    public:
        explicit wait_bridge(file_cache& cache) noexcept : cache_(cache) {}
        void on_wait(const file_key& key, std::thread::id) override {
            cache_.register_wait(key.name, false);
        }
        void on_wait_end(const file_key& key, std::chrono::nanoseconds) override {
            cache_.clear_wait(key.name);
        }

    private:
        file_cache& cache_;
    };

    // §hit, then the in-process import (which coalesces this process's threads).
    std::filesystem::path import_erased(const std::string& key, detail::files::builder_ref build,
                                        std::optional<clock_type::time_point> deadline) {
        detail::files::check_key(key);
        std::string text = prefix_ + key;  // directory_ / key, without parsing it twice
        if (published(key, text)) return std::filesystem::path(std::move(text));  // hit: a stat
        const std::filesystem::path path(std::move(text));
        request r{this, key, build, deadline, path};
        struct scope {
            request* saved;
            ~scope() { current_request() = saved; }
        } restore{std::exchange(current_request(), &r)};
        const file_key k{key};
        // The file may have gone since this process imported it (deleted by
        // hand): forget the in-process entry, so that the import runs again.
        if (system_.contains(k) && !system_.is_initializing(k)) {
            try {
                system_.erase(k);
            } catch (const import_error&) {
                // another thread re-imports it right now: wait for that import
            }
        }
        if (!deadline) {
            system_.import_module(k);
            return path;
        }
        try {
            system_.import_module_for(k, *deadline - clock_type::now());
        } catch (const import_timeout_error& e) {
            if (e.holder_process() != 0 || e.key() != key) throw;
            // Waited for another thread of this process.
            throw import_timeout_error(
                key, static_cast<long long>(::getpid()),
                "it (thread " + import_timeout_error::describe(e.holder()) + " of that process)");
        }
        return path;
    }

    // Returns whether `path` (key's published file) exists: one stat.
    static bool published(const std::string& key, const std::string& path) {
        struct stat st{};
        if (::stat(path.c_str(), &st) == 0) {
            if (S_ISREG(st.st_mode)) return true;
            throw import_error(key, "file_cache: '" + path +
                                        "' exists and is not a regular file, "
                                        "so it cannot be the artefact of '" +
                                        key + "'");
        }
        if (errno == ENOENT) return false;
        detail::files::fail(key, "stat '" + path + "'", errno);
    }

    // §miss: under the key's in-process lock. Takes the key's OS lock,
    // re-checks, builds, publishes, releases.
    std::shared_ptr<published_file> load(const request& r) {
        const std::string& key = r.key;
        key_lock lock = acquire(key, r.deadline);
        if (!published(key, r.path.string())) {
            detail::files::make_parents(key, directory_, key);
            remove_orphan(key, r.path, lock.fd());
            build_and_publish(r, lock.fd());
        }
        lock.release();
        return std::make_shared<published_file>(published_file{r.path});
    }

    // The key's lock file holds "<pid>\n" of the builder that holds the lock
    // while its temporary file may exist, and is empty otherwise: the next
    // holder removes a dead builder's temporary file without a directory scan.

    // Returns the temporary file of `path` for the builder `pid`.
    static std::string temporary_of(const std::filesystem::path& path, std::string_view pid) {
        return path.parent_path().string() + "/" + std::string(detail::files::temp_prefix) +
               std::string(pid) + "." + path.filename().string();
    }

    // Removes the temporary file of the builder recorded in the lock file: one
    // that died (this process holds the key's lock, so no live builder has one).
    static void remove_orphan(const std::string& key, const std::filesystem::path& path,
                              int lock_fd) {
        char buffer[32];
        ssize_t n = 0;
        while ((n = ::pread(lock_fd, buffer, sizeof buffer, 0)) < 0 && errno == EINTR) {
        }
        if (n < 0) detail::files::fail(key, "read the lock file of '" + key + "'", errno);
        std::size_t digits = 0;
        while (digits < static_cast<std::size_t>(n) && buffer[digits] >= '0' &&
               buffer[digits] <= '9') {
            ++digits;
        }
        if (digits == 0) return;  // no builder died holding it
        const std::string orphan = temporary_of(path, std::string_view(buffer, digits));
        if (::unlink(orphan.c_str()) != 0 && errno != ENOENT) {
            detail::files::fail(key, "remove the orphaned temporary file '" + orphan + "'", errno);
        }
    }

    // Empties the lock file (no builder recorded); returns 0 or the errno.
    static int clear_builder(int lock_fd) noexcept {
        while (::ftruncate(lock_fd, 0) != 0) {
            if (errno != EINTR) return errno;
        }
        return 0;
    }

    // Records this process as the builder in the lock file.
    static void record_builder(const std::string& key, int lock_fd) {
        if (const int e = clear_builder(lock_fd)) {
            detail::files::fail(key, "truncate the lock file of '" + key + "'", e);
        }
        const std::string text = std::to_string(::getpid()) + "\n";
        std::size_t done = 0;
        while (done < text.size()) {
            const ssize_t n =
                ::pwrite(lock_fd, text.data() + done, text.size() - done, static_cast<off_t>(done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                detail::files::fail(key, "write the lock file of '" + key + "'",
                                    n < 0 ? errno : EIO);
            }
            done += static_cast<std::size_t>(n);
        }
    }

    // Runs the builder on a new temporary file, then fsync, rename, fsync of
    // the directory (CPython's _write_atomic). The temporary file is removed
    // on every failure, and the builder's record in the lock file cleared.
    static void build_and_publish(const request& r, int lock_fd) {
        const std::string& key = r.key;
        const std::string dir = r.path.parent_path().string();
        const std::string temporary = temporary_of(r.path, std::to_string(::getpid()));
        record_builder(key, lock_fd);  // before the temporary file exists
        struct remover {
            const std::string* path;
            int lock_fd;
            ~remover() {
                if (path == nullptr) return;
                ::unlink(path->c_str());
                // Best effort: a record left behind only makes the next
                // holder unlink a temporary file that does not exist.
                (void)clear_builder(lock_fd);
            }
        } remove_on_failure{&temporary, lock_fd};
        {
            constexpr int create = O_WRONLY | O_CREAT | O_EXCL;
            unique_fd fd(detail::files::open_file(temporary, create, 0666));
            if (!fd && errno == EEXIST && ::unlink(temporary.c_str()) == 0) {
                // Left by an earlier process with this pid that died without
                // a record (this process holds the key's lock: no live
                // builder owns the name).
                fd = unique_fd(detail::files::open_file(temporary, create, 0666));
            }
            if (!fd)
                detail::files::fail(key, "create the temporary file '" + temporary + "'", errno);
            if (const int e = fd.close()) {
                detail::files::fail(key, "close the temporary file '" + temporary + "'", e);
            }
        }
        r.build(std::filesystem::path(temporary));
        {
            unique_fd fd(detail::files::open_file(temporary, O_RDONLY));
            if (!fd) {
                detail::files::fail(key,
                                    "open the temporary file '" + temporary +
                                        "' after its builder ran (did it remove it?)",
                                    errno);
            }
            if (const int e = detail::files::sync_file(fd.get())) {
                detail::files::fail(key, "fsync the temporary file '" + temporary + "'", e);
            }
            if (const int e = fd.close()) {
                detail::files::fail(key, "close the temporary file '" + temporary + "'", e);
            }
        }
        const std::string target = r.path.string();
        if (::rename(temporary.c_str(), target.c_str()) != 0) {
            detail::files::fail(key, "rename '" + temporary + "' to '" + target + "'", errno);
        }
        remove_on_failure.path = nullptr;  // published: nothing to remove
        (void)clear_builder(lock_fd);      // best effort, as in remover
        detail::files::sync_directory(key, dir);
    }

    // --- The cross-process wait-for graph -----------------------------------------------

    // Holds the graph lock and the records read under it; store() writes them
    // back (write to graph.tmp, rename over graph; no graph file when empty).
    class graph {
    public:
        graph(const file_cache& cache, const std::string& key) : cache_(cache), key_(key) {
            const std::string lock_path = (cache.state_ / "graph.lock").string();
            fd_ = unique_fd(detail::files::open_file(lock_path, O_RDWR | O_CREAT, 0666));
            if (!fd_) detail::files::fail(key, "open the wait-for lock '" + lock_path + "'", errno);
            if (const int e = detail::files::lock_file(fd_.get(), LOCK_EX)) {
                detail::files::fail(key, "lock the wait-for lock '" + lock_path + "'", e);
            }
            std::string text;
            const std::string path = (cache.state_ / "graph").string();
            if (const int e = detail::files::read_all(path, text); e != 0 && e != ENOENT) {
                detail::files::fail(key, "read the wait-for records '" + path + "'", e);
            }
            records_ = detail::files::decode_records(text);
        }

        // Writes the records back, without those of processes that are gone.
        void store() {
            std::erase_if(records_, [](const graph_record& r) {
                return !detail::files::process_exists(r.node.pid);
            });
            const std::string path = (cache_.state_ / "graph").string();
            if (records_.empty()) {
                if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
                    detail::files::fail(key_, "remove the wait-for records '" + path + "'", errno);
                }
                return;
            }
            const std::string temporary = path + ".tmp";
            unique_fd out(detail::files::open_file(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0666));
            if (!out) detail::files::fail(key_, "create '" + temporary + "'", errno);
            const int written =
                detail::files::write_all(out.get(), detail::files::encode_records(records_));
            const int closed = out.close();
            if (written != 0 || closed != 0 || ::rename(temporary.c_str(), path.c_str()) != 0) {
                const int e = written != 0 ? written : closed != 0 ? closed : errno;
                ::unlink(temporary.c_str());
                detail::files::fail(key_, "write the wait-for records '" + path + "'", e);
            }
        }

        // Records that `node` holds `key`'s file lock (replacing stale holders).
        void set_hold(const graph_node& node, const std::string& key) {
            std::erase_if(records_,
                          [&](const graph_record& r) { return r.kind == 'H' && r.key == key; });
            records_.push_back({'H', node, key});
        }
        void clear_hold(const graph_node& node, const std::string& key) {
            std::erase_if(records_, [&](const graph_record& r) {
                return r.kind == 'H' && r.node == node && r.key == key;
            });
        }
        // Records that `node` waits for `key` (a thread waits for one key at a time).
        void set_wait(const graph_node& node, const std::string& key) {
            clear_wait(node);
            records_.push_back({'W', node, key});
        }
        void clear_wait(const graph_node& node) {
            std::erase_if(records_,
                          [&](const graph_record& r) { return r.kind == 'W' && r.node == node; });
        }

        // Returns the live holder of `key`'s file lock: its process exists and
        // the lock is held (`known_held`: the caller just found it held).
        const graph_record* holder_of(const std::string& key, bool known_held) const {
            for (const auto& r : records_) {
                if (r.kind != 'H' || r.key != key) continue;
                if (!detail::files::process_exists(r.node.pid)) continue;
                if (!known_held && !detail::files::lock_is_held((cache_.locks_ / key).string())) {
                    continue;
                }
                return &r;
            }
            return nullptr;
        }

        // Walks from `me` waiting for `wanted`: holder, what it waits for, its
        // holder, ... Returns the error to throw when the walk comes back to
        // `me` (or enters another cycle, which `me` would join).
        std::optional<circular_import_error> find_cycle(const graph_node& me,
                                                        const std::string& wanted,
                                                        bool wanted_held) const {
            std::vector<std::string> keys{wanted};
            std::vector<graph_node> holders;
            for (std::size_t step = 0; step <= records_.size(); ++step) {
                const graph_record* h = holder_of(keys.back(), step == 0 && wanted_held);
                if (h == nullptr) return std::nullopt;
                const bool back_to_me = h->node == me;
                const bool joins_other =
                    std::find(holders.begin(), holders.end(), h->node) != holders.end();
                holders.push_back(h->node);
                if (back_to_me || joins_other) return describe(me, keys, holders, back_to_me);
                const auto w = std::find_if(records_.begin(), records_.end(), [&](const auto& r) {
                    return r.kind == 'W' && r.node == h->node;
                });
                if (w == records_.end() || !detail::files::process_exists(w->node.pid)) {
                    return std::nullopt;
                }
                keys.push_back(w->key);
            }
            return std::nullopt;
        }

    private:
        static circular_import_error describe(const graph_node& me,
                                              const std::vector<std::string>& keys,
                                              const std::vector<graph_node>& holders,
                                              bool back_to_me) {
            const auto process = [&me](const graph_node& n) {
                return "process " + std::to_string(n.pid) + (n.pid == me.pid ? " (this one)" : "");
            };
            std::string what = "across processes: " + process(me) + " waits for ";
            for (std::size_t i = 0; i < keys.size(); ++i) {
                if (i > 0) what += ", which waits for ";
                what += "'" + keys[i] + "', held by " + process(holders[i]);
            }
            std::vector<std::string> chain = keys;
            chain.push_back(back_to_me ? keys.front() : keys.back());
            if (!back_to_me) what += ", a cycle this wait would join";
            return circular_import_error(std::move(chain), what);
        }

        const file_cache& cache_;
        const std::string& key_;
        unique_fd fd_;  // holds the graph lock until destroyed
        std::vector<graph_record> records_;
    };

    // Checks that waiting for `key` closes no cycle and records the wait, in
    // one step under the graph lock.
    void register_wait(const std::string& key, bool key_held) {
        graph g(*this, key);
        const graph_node me = graph_node::self();
        if (auto cycle = g.find_cycle(me, key, key_held)) throw std::move(*cycle);
        g.set_wait(me, key);
        g.store();
    }

    // Drops this thread's wait record; best effort (no throw).
    void clear_wait(const std::string& key) noexcept {
        try {
            graph g(*this, key);
            g.clear_wait(graph_node::self());
            g.store();
        } catch (...) {
            // A leftover record of a live thread is replaced by its next wait.
        }
    }

    // The key's OS lock, held; release() (or the destructor) drops the hold
    // record and then the lock, under the graph lock.
    class key_lock {
    public:
        key_lock(file_cache& cache, const std::string& key, unique_fd fd) noexcept
            : cache_(&cache), key_(&key), fd_(std::move(fd)) {}
        key_lock(key_lock&& other) noexcept
            : cache_(other.cache_), key_(other.key_), fd_(std::move(other.fd_)) {}
        key_lock& operator=(key_lock&&) = delete;
        ~key_lock() { release(); }

        // Returns the lock file's descriptor (open for reading and writing).
        int fd() const noexcept { return fd_.get(); }

        void release() noexcept {
            if (!fd_) return;
            try {
                graph g(*cache_, *key_);
                g.clear_hold(graph_node::self(), *key_);
                g.store();
                fd_.reset();  // under the graph lock: no window with a stale record
            } catch (...) {
                fd_.reset();  // the lock goes anyway; a stale record fails the lock test
            }
        }

    private:
        file_cache* cache_;
        const std::string* key_;
        unique_fd fd_;
    };

    // Takes `key`'s OS lock: at once when free; else checks for a cycle and
    // registers the wait under the graph lock, then blocks (or polls until
    // `deadline`).
    key_lock acquire(const std::string& key, std::optional<clock_type::time_point> deadline) {
        namespace f = detail::files;
        f::make_parents(key, locks_, key);
        const std::string lock_path = (locks_ / key).string();
        unique_fd fd(f::open_file(lock_path, O_RDWR | O_CREAT, 0666));
        if (!fd) f::fail(key, "open the lock file '" + lock_path + "'", errno);
        const graph_node me = graph_node::self();
        const auto hold = [&] {
            graph g(*this, key);
            g.clear_wait(me);
            g.set_hold(me, key);
            g.store();
            return key_lock(*this, key, std::move(fd));
        };
        int e = f::lock_file(fd.get(), LOCK_EX | LOCK_NB);
        if (e == 0) return hold();
        if (e != EWOULDBLOCK) f::fail(key, "lock the lock file '" + lock_path + "'", e);
        {
            graph g(*this, key);
            e = f::lock_file(fd.get(), LOCK_EX | LOCK_NB);  // released meanwhile?
            if (e == 0) {
                g.clear_wait(me);
                g.set_hold(me, key);
                g.store();
                return key_lock(*this, key, std::move(fd));
            }
            if (e != EWOULDBLOCK) f::fail(key, "lock the lock file '" + lock_path + "'", e);
            if (auto cycle = g.find_cycle(me, key, true)) throw std::move(*cycle);
            g.set_wait(me, key);
            g.store();
        }
        struct wait_record {
            file_cache* cache;
            const std::string* key;
            ~wait_record() {
                if (cache != nullptr) cache->clear_wait(*key);
            }
        } registered{this, &key};
        if (!deadline) {
            e = f::lock_file(fd.get(), LOCK_EX);
            if (e != 0) f::fail(key, "lock the lock file '" + lock_path + "'", e);
        } else {
            auto pause = std::chrono::microseconds(500);
            while ((e = f::lock_file(fd.get(), LOCK_EX | LOCK_NB)) != 0) {
                if (e != EWOULDBLOCK) f::fail(key, "lock the lock file '" + lock_path + "'", e);
                const auto now = clock_type::now();
                if (now >= *deadline) {
                    long long holder = 0;
                    {
                        graph g(*this, key);
                        if (const auto* h = g.holder_of(key, true)) holder = h->node.pid;
                    }
                    throw import_timeout_error(key, holder, "it");
                }
                std::this_thread::sleep_for(std::min<clock_type::duration>(pause, *deadline - now));
                pause =
                    std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(10));
            }
        }
        key_lock held = hold();  // replaces the wait record by the hold record
        registered.cache = nullptr;
        return held;
    }

    std::filesystem::path directory_;
    std::filesystem::path state_;  // directory_ / ".importlock"
    std::filesystem::path locks_;  // state_ / "locks"
    std::string prefix_;           // directory_ with one trailing separator
    system_type system_;
};

}  // namespace importlock
