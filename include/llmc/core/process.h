#pragma once
// Running another program without a shell: argv is passed as is (no quoting, no expansion), so a
// path with quotes or `$(...)` in it is only a path. Output goes to a log file.
#include <memory>
#include <string>
#include <vector>

namespace llmc {

struct ProcessResult {
  int exit_code = -1;  // the program's exit status; 128 + N when killed by signal N
  double seconds = 0;
};

// Runs argv[0] (an executable path; not looked up in PATH) with argv, stdin from /dev/null, stdout
// and stderr appended to `log_path` (created if missing; "" = inherit ours). Waits for it.
// Throws llmc::Error when it cannot be started (the message names argv[0]).
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& log_path);

// argv as one line a person can paste into a POSIX shell (single-quoted where needed).
std::string shell_quote_command(const std::vector<std::string>& argv);

// The running executable (/proc/self/exe resolved).
std::string self_executable();

// An exclusive advisory lock (flock) on `path` (created if missing) for the object's lifetime;
// waits while another process holds it. Throws llmc::Error naming the file when it cannot be
// opened or locked.
class FileLock {
 public:
  explicit FileLock(const std::string& path);
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  // The same lock without waiting: nullptr when another process (or another open of the file in
  // this one) holds it. Throws like the constructor when the file cannot be opened or locked.
  static std::unique_ptr<FileLock> try_lock(const std::string& path);

 private:
  FileLock() = default;
  int fd_ = -1;
};

}  // namespace llmc
