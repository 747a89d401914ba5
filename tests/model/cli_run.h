#pragma once
// Runs the llmcompress binary (LLMC_CLI) with a shell command line, for the CLI tests.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace llmc {

struct CliRun {
  int code;
  std::string out;  // stdout + stderr
};

// `args` is shell text appended to the binary's path (quote paths with spaces yourself).
inline CliRun run_cli(const std::string& args) {
  std::string cmd = std::string(LLMC_CLI) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return {127, "popen failed: " + cmd};
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

}  // namespace llmc
