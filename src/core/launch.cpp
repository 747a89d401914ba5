#include "llmc/core/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "llmc/core/error.h"
#include "llmc/core/log.h"

extern char** environ;

namespace llmc {

namespace {

volatile sig_atomic_t g_forward = 0;  // a signal to pass on to the ranks
extern "C" void on_launch_signal(int sig) { g_forward = sig; }

// A port that is free now on 127.0.0.1 (the kernel's pick; rank 0's store binds it next).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("launch: cannot open a socket to pick a free port: {}", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int e = errno;
    ::close(fd);
    fail("launch: cannot pick a free port on 127.0.0.1: {}", std::strerror(e));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

int exit_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace

void parse_master(const std::string& text, std::string* addr, int* port) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    fail("--master '{}': expected ADDR:PORT", text);
  std::string a = text.substr(0, colon);
  if (a.size() >= 2 && a.front() == '[' && a.back() == ']') a = a.substr(1, a.size() - 2);
  const std::string p = text.substr(colon + 1);
  char* end = nullptr;
  const long v = std::strtol(p.c_str(), &end, 10);
  if (*end != '\0' || v < 1 || v > 65535) fail("--master '{}': port '{}' is not in 1..65535", text, p);
  *addr = a;
  *port = static_cast<int>(v);
}

int launch_ranks(const LaunchOptions& o) {
  if (o.nproc < 1) fail("launch: --nproc must be >= 1 (got {})", o.nproc);
  if (o.nnodes < 1) fail("launch: --nnodes must be >= 1 (got {})", o.nnodes);
  if (o.node_rank < 0 || o.node_rank >= o.nnodes)
    fail("launch: --node-rank {} is not in 0..{} (--nnodes {})", o.node_rank, o.nnodes - 1, o.nnodes);
  if (o.argv.empty()) fail("launch: no command after '--'");
  std::string addr = "127.0.0.1";
  int port = 0;
  if (!o.master.empty()) parse_master(o.master, &addr, &port);
  else if (o.nnodes > 1) fail("launch: --nnodes {} needs --master ADDR:PORT (rank 0's node, reachable from all)", o.nnodes);
  else port = free_port();
  const int world = o.nnodes * o.nproc;

  // The inherited environment without the variables of the contract, then ours.
  static const char* kOurs[] = {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=", "GROUP_RANK=",
                                "MASTER_ADDR=", "MASTER_PORT="};
  std::vector<std::string> base;
  for (char** e = environ; *e; ++e) {
    bool ours = false;
    for (const char* k : kOurs) ours = ours || std::strncmp(*e, k, std::strlen(k)) == 0;
    if (!ours) base.emplace_back(*e);
  }

  struct sigaction sa {}, old_int {}, old_term {};
  sa.sa_handler = on_launch_signal;
  sigemptyset(&sa.sa_mask);
  g_forward = 0;
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  struct Restore {
    struct sigaction i, t;
    ~Restore() {
      ::sigaction(SIGINT, &i, nullptr);
      ::sigaction(SIGTERM, &t, nullptr);
    }
  } restore{old_int, old_term};

  spdlog::info("launch: {} rank(s) here (node {} of {}, world {}), master {}:{}", o.nproc, o.node_rank, o.nnodes,
               world, addr, port);
  std::vector<pid_t> pids(o.nproc, -1);
  std::vector<bool> alive(o.nproc, false);
  // Each rank leads its own process group: a signal reaches what the rank started too, and a
  // terminal's Ctrl-C reaches the launcher alone, which passes it on once.
  auto signal_all = [&](int sig) {
    for (int i = 0; i < o.nproc; ++i)
      if (alive[i] && ::kill(-pids[i], sig) != 0) ::kill(pids[i], sig);
  };
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  struct AttrGuard {
    posix_spawnattr_t* a;
    ~AttrGuard() { posix_spawnattr_destroy(a); }
  } attr_guard{&attr};
  for (int i = 0; i < o.nproc; ++i) {
    std::vector<std::string> env = base;
    env.push_back(fmt::format("RANK={}", o.node_rank * o.nproc + i));
    env.push_back(fmt::format("WORLD_SIZE={}", world));
    env.push_back(fmt::format("LOCAL_RANK={}", i));
    env.push_back(fmt::format("LOCAL_WORLD_SIZE={}", o.nproc));
    env.push_back(fmt::format("GROUP_RANK={}", o.node_rank));
    env.push_back("MASTER_ADDR=" + addr);
    env.push_back(fmt::format("MASTER_PORT={}", port));
    std::vector<char*> envp, argv;
    for (auto& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::vector<std::string> args = o.argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pids[i], args[0].c_str(), nullptr, &attr, argv.data(), envp.data());
    if (rc != 0) {
      signal_all(SIGKILL);
      for (int j = 0; j < i; ++j) ::waitpid(pids[j], nullptr, 0);
      fail("launch: cannot start '{}': {}", args[0], std::strerror(rc));
    }
    alive[i] = true;
  }

  int result = 0, running = o.nproc;
  bool stopping = false, forwarded = false;
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    if (g_forward != 0) {
      const int sig = g_forward;
      g_forward = 0;
      spdlog::warn("launch: passing signal {} on to the ranks", sig);
      signal_all(sig);
      forwarded = true;
    }
    int status = 0;
    const pid_t p = ::waitpid(-1, &status, WNOHANG);
    if (p < 0 && errno != EINTR) break;  // no children left
    if (p > 0) {
      for (int i = 0; i < o.nproc; ++i) {
        if (!alive[i] || pids[i] != p) continue;
        alive[i] = false;
        --running;
        const int rank = o.node_rank * o.nproc + i;
        if (exit_code(status) != 0 && forwarded && !stopping) {
          // Stopped as asked (a search checkpoints first): the others are stopping too.
          if (result == 0) result = exit_code(status);
          spdlog::info("launch: rank {} (pid {}) {} after the signal", rank, p, describe(status));
        } else if (exit_code(status) != 0 && !stopping) {
          result = exit_code(status);
          stopping = true;
          deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(o.grace_s * 1000));
          spdlog::error("launch: rank {} (pid {}) {}; stopping the other ranks", rank, p, describe(status));
          signal_all(SIGTERM);
        } else if (exit_code(status) != 0) {
          spdlog::info("launch: rank {} (pid {}) {}", rank, p, describe(status));
        }
      }
      continue;
    }
    if (stopping && std::chrono::steady_clock::now() > deadline) {
      spdlog::error("launch: ranks still running {:.0f} s after the first failure; killing them", o.grace_s);
      signal_all(SIGKILL);
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return result;
}

}  // namespace llmc
