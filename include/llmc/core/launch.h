#pragma once
// `llmcompress launch`: starts the ranks of a data-parallel job on this machine, following
// torchrun's environment contract (docs/data-parallel.md). Each rank is argv run with RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR and MASTER_PORT set:
//   RANK = node_rank * nproc + local rank, WORLD_SIZE = nnodes * nproc.
// Each rank runs in its own process group (signals reach what it started as well).
// The first rank that fails (non-zero exit, or a signal) ends the job: the others get SIGTERM,
// then SIGKILL after grace_s; the launcher returns that rank's status. SIGINT / SIGTERM sent to
// the launcher are passed on to every rank (a search checkpoints and stops).
#include <string>
#include <vector>

namespace llmc {

struct LaunchOptions {
  int nproc = 1, nnodes = 1, node_rank = 0;
  // ADDR:PORT of rank 0's store. Empty: 127.0.0.1 and a free port (one node only).
  std::string master;
  std::vector<std::string> argv;  // argv[0]: an executable path (not looked up in PATH)
  double grace_s = 30;
};

// Parses "ADDR:PORT" (ADDR may be [v6]); throws one line naming the text.
void parse_master(const std::string& text, std::string* addr, int* port);

// Runs the job; returns its exit status (0 when every rank exited 0). Throws llmc::Error on bad
// options or when a rank cannot be started.
int launch_ranks(const LaunchOptions& o);

}  // namespace llmc
