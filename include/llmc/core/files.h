#pragma once
// File helpers: whole-file reads with clear errors, atomic writes (temp file + rename, so an
// interrupted run never leaves a half-written output), and a read-only memory map.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llmc {

std::string read_text_file(const std::string& path);
bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);
std::string path_join(const std::string& a, const std::string& b);
std::string parent_dir(const std::string& path);

// Folder operations through std::filesystem (never a shell: paths may hold any character). Each
// throws a one-line llmc::Error naming the path on failure.
void make_dirs(const std::string& path);  // the folder and its parents; fine if it exists
void remove_tree(const std::string& path);  // the file or folder and everything in it; fine if absent
void rename_path(const std::string& from, const std::string& to);

// Writes `data` to `path` via `path.tmp.<pid>` + fsync + rename. First removes the `path.tmp.<pid>`
// files that earlier, interrupted writes of `path` left (clean_interrupted_writes).
void write_file_atomic(const std::string& path, const std::string& data);

// What interrupted atomic writes of `path` left next to it, recognised only by our own names with
// the id of a process that no longer runs: `path.tmp.<pid>` (write_file_atomic, check_writable) and,
// for a folder replaced by a swap of renames (export), `.<name>.tmp-<pid>` and `<name>.old-<pid>`.
// Each is removed, except that a `<name>.old-<pid>` folder is moved back to `path` when `path` is
// missing (a kill between the swap's two renames left the previous version only there). Entries of
// a process that still runs, or with any other name, are left alone. Returns the removed or restored
// paths; throws naming the path when one cannot be removed.
std::vector<std::string> clean_interrupted_writes(const std::string& path);

// Throws llmc::Error naming `path` unless write_file_atomic(path, ...) could write it now (its
// folder exists and takes a new file; path is not a folder). For commands that write their result
// at the end of long work: fail before it, not after.
void check_writable(const std::string& path);

// An append-only text file (a log of rows) whose every write is checked: a failed open or write
// (disk full, a folder in the way) throws llmc::Error naming the path. Each line goes to the file
// in one write() call, so a kill leaves whole lines (and at most one cut-off last line).
class AppendFile {
 public:
  AppendFile() = default;
  AppendFile(const std::string& path, bool truncate);
  ~AppendFile();
  AppendFile(AppendFile&& o) noexcept;
  AppendFile& operator=(AppendFile&& o) noexcept;
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  void write_line(const std::string& line);  // appends line + '\n'
  bool is_open() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// A 64-bit hash of what `path` holds (not of how it is spelled), as 16 hex digits: a file's bytes,
// or for a folder every regular file below it (relative names and bytes, in sorted order). Not
// cryptographic: it tells a changed input from the same one. Throws naming the path when missing.
std::string content_hash(const std::string& path);
// The same hash of bytes held in memory.
std::string bytes_hash(const std::string& bytes);

// Read-only mmap of a whole file. Empty files map to size 0 / data nullptr.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace llmc
