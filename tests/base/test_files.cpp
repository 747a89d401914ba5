// Folder helpers go through std::filesystem: a path is a path, never shell text.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "llmc/core/error.h"
#include "llmc/core/files.h"
#include "llmc/core/process.h"

using namespace llmc;
namespace fs = std::filesystem;

TEST(Files, PathsWithQuotesAndShellSyntaxAreJustPaths) {
  const fs::path root = fs::temp_directory_path() / ("llmc_files_" + std::to_string(::getpid()));
  fs::remove_all(root);
  const std::string victim = (root / "victim").string();
  make_dirs(victim);
  // Names that a shell command built from them would run or split: $(touch ...), quotes, spaces.
  const std::string odd = (root / "x/inj'$(touch PWNED)'y" / "bob's run").string();
  make_dirs(odd);
  EXPECT_TRUE(dir_exists(odd));
  { std::ofstream(odd + "/f") << "data"; }
  rename_path(odd, odd + " moved");
  EXPECT_FALSE(dir_exists(odd));
  EXPECT_TRUE(file_exists(odd + " moved/f"));
  remove_tree((root / "x/a' victim 'x").string());  // absent: nothing to do, and no 'victim' removed
  remove_tree(odd + " moved");
  EXPECT_FALSE(dir_exists(odd + " moved"));
  EXPECT_TRUE(dir_exists(victim));
  EXPECT_FALSE(fs::exists("PWNED"));
  EXPECT_FALSE(fs::exists(root / "x/inj'" / "PWNED"));
  fs::remove_all(root);
}

TEST(Files, FailuresNameThePath) {
  try {
    rename_path("/nonexistent/llmc_a", "/nonexistent/llmc_b");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/llmc_a"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_dirs("/proc/llmc_no_such_place/x"), Error);
}

// FileLock excludes another process until it is released (what LLMC_SWEEP_LOCK relies on).
TEST(Files, FileLockWaitsForTheOtherHolder) {
  const std::string path = (fs::temp_directory_path() / ("llmc_lock_" + std::to_string(::getpid()))).string();
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    {
      FileLock held(path);
      char c = 1;
      if (::write(ready[1], &c, 1) != 1) ::_exit(2);
      ::usleep(400 * 1000);
    }
    ::_exit(0);
  }
  char c = 0;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);  // the child holds the lock now
  const auto t0 = std::chrono::steady_clock::now();
  {
    FileLock mine(path);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_GT(waited, 0.2);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  ::close(ready[0]);
  ::close(ready[1]);
  fs::remove(path);
  EXPECT_THROW(FileLock("/nonexistent-dir/x.lock"), Error);
}

// try_lock does not wait: nullptr while another holder has the lock, the lock once it is free
// (issue 21, defect 2: a second search on the same --out is refused).
TEST(Files, FileTryLockRefusesWhileHeld) {
  const std::string path = (fs::temp_directory_path() / ("llmc_trylock_" + std::to_string(::getpid()))).string();
  {
    auto first = FileLock::try_lock(path);
    ASSERT_NE(first, nullptr);
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(FileLock::try_lock(path), nullptr);  // another open of the file: held
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  }
  EXPECT_NE(FileLock::try_lock(path), nullptr);  // released with the first
  fs::remove(path);
  EXPECT_THROW(FileLock::try_lock("/nonexistent-dir/x.lock"), Error);
}

// content_hash: by content, not by spelling; folders by names and bytes.
TEST(Files, ContentHashFollowsContentNotSpelling) {
  const fs::path root = fs::temp_directory_path() / ("llmc_hash_" + std::to_string(::getpid()));
  fs::remove_all(root);
  make_dirs((root / "m/sub").string());
  write_file_atomic((root / "m/a.txt").string(), "hello world, more than eight bytes");
  write_file_atomic((root / "m/sub/b.bin").string(), std::string("\0\1\2", 3));
  const std::string h = content_hash((root / "m").string());
  EXPECT_EQ(h.size(), 16u);
  EXPECT_EQ(content_hash((root / "m/../m/").string()), h);
  EXPECT_EQ(content_hash((root / "m/a.txt").string()), content_hash((root / "./m/a.txt").string()));
  fs::copy(root / "m", root / "copy", fs::copy_options::recursive);
  EXPECT_EQ(content_hash((root / "copy").string()), h);
  write_file_atomic((root / "copy/a.txt").string(), "hello world, more than eight bytez");
  EXPECT_NE(content_hash((root / "copy").string()), h);
  EXPECT_NE(content_hash((root / "m/a.txt").string()), content_hash((root / "copy/a.txt").string()));
  EXPECT_THROW(content_hash((root / "nope").string()), Error);
  fs::remove_all(root);
}

// Every log write is checked (issue 21, defect 5): a full disk is an error naming the file.
TEST(Files, AppendFileChecksEveryWrite) {
  const std::string path = (fs::temp_directory_path() / ("llmc_append_" + std::to_string(::getpid()))).string();
  {
    AppendFile f(path, true);
    f.write_line("a");
    f.write_line("b");
  }
  {
    AppendFile f(path, false);
    f.write_line("c");
  }
  EXPECT_EQ(read_text_file(path), "a\nb\nc\n");
  { AppendFile f(path, true); }
  EXPECT_EQ(read_text_file(path), "");
  fs::remove(path);
  if (fs::exists("/dev/full")) {
    AppendFile full("/dev/full", false);
    try {
      full.write_line("x");
      FAIL() << "no error writing to /dev/full";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("/dev/full: write failed"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(AppendFile("/nonexistent-dir/log.jsonl", false), Error);
  EXPECT_THROW(AppendFile(fs::temp_directory_path().string(), false), Error);
}

namespace {

// The id of a process that has exited (and been reaped): nothing runs under it now.
int dead_pid() {
  const pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  ::waitpid(p, nullptr, 0);
  return static_cast<int>(p);
}

void touch(const fs::path& p, const std::string& text = "x") { std::ofstream(p) << text; }

}  // namespace

// Issue 21 defect 10: what a killed atomic write leaves (ours by name, of a process that is gone)
// is cleaned by the next write of the same path; anything else stays.
TEST(Files, WriteFileAtomicCleansOnlyItsOwnStaleTemporaries) {
  const fs::path root = fs::temp_directory_path() / ("llmc_stale_" + std::to_string(::getpid()));
  fs::remove_all(root);
  make_dirs(root.string());
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(::getppid());
  const std::string own = std::to_string(::getpid());
  const std::vector<std::string> removed = {"r.json.tmp." + dead};
  const std::vector<std::string> kept = {
      "r.json.tmp." + live,   // a write in progress in another process
      "r.json.tmp.12ab",      // not a process id
      "r.json.tmp.",          // nothing after the dot
      "r.json.tmp-" + dead,   // not write_file_atomic's spelling
      "other.json.tmp." + dead,
      "xr.json.tmp." + dead,
      "notes.txt"};
  for (const auto& n : removed) touch(root / n);
  for (const auto& n : kept) touch(root / n);
  write_file_atomic((root / "r.json").string(), "{}");
  EXPECT_EQ(read_text_file((root / "r.json").string()), "{}");
  for (const auto& n : removed) EXPECT_FALSE(fs::exists(root / n)) << n;
  for (const auto& n : kept) EXPECT_TRUE(fs::exists(root / n)) << n;
  EXPECT_FALSE(fs::exists(root / ("r.json.tmp." + own)));
  fs::remove_all(root);
}

// A folder replaced by a swap of renames (export): NAME.old-PID goes back to NAME when a kill came
// between the two renames; temporaries of dead processes go; a running process's stay.
TEST(Files, CleanInterruptedWritesRestoresOrRemovesSwapFolders) {
  const fs::path root = fs::temp_directory_path() / ("llmc_swap_" + std::to_string(::getpid()));
  fs::remove_all(root);
  const std::string dead = std::to_string(dead_pid()), live = std::to_string(::getppid());
  const std::string out = (root / "out").string();
  // Killed between the renames: out/ gone, the previous version in out.old-PID, the new in .out.tmp-PID.
  make_dirs((root / ("out.old-" + dead)).string());
  touch(root / ("out.old-" + dead) / "config.json", "previous");
  make_dirs((root / (".out.tmp-" + dead)).string());
  touch(root / (".out.tmp-" + dead) / "config.json", "half");
  make_dirs((root / (".out.tmp-" + live)).string());
  make_dirs((root / "out.old-abc").string());
  auto done = clean_interrupted_writes(out + "/");  // a trailing slash names the same folder
  EXPECT_EQ(done.size(), 2u);
  EXPECT_EQ(read_text_file(out + "/config.json"), "previous");
  EXPECT_FALSE(fs::exists(root / ("out.old-" + dead)));
  EXPECT_FALSE(fs::exists(root / (".out.tmp-" + dead)));
  EXPECT_TRUE(fs::exists(root / (".out.tmp-" + live)));
  EXPECT_TRUE(fs::exists(root / "out.old-abc"));
  // With out/ present, a stale out.old-PID is removed, not restored over it.
  make_dirs((root / ("out.old-" + dead)).string());
  touch(root / ("out.old-" + dead) / "config.json", "older");
  done = clean_interrupted_writes(out);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(read_text_file(out + "/config.json"), "previous");
  EXPECT_FALSE(fs::exists(root / ("out.old-" + dead)));
  // Nothing to do: nothing changes, no error (also for a missing folder).
  EXPECT_TRUE(clean_interrupted_writes(out).empty());
  EXPECT_TRUE(clean_interrupted_writes((root / "missing/x").string()).empty());
  fs::remove_all(root);
}
