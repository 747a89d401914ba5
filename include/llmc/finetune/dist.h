#pragma once
// Data parallelism for the search and the LoRA fine-tune, on PyTorch c10d (ProcessGroupGloo over a
// TCPStore; docs/data-parallel.md).
//
// A process is one rank of a data-parallel job when the torchrun environment says so: RANK,
// WORLD_SIZE (> 1), MASTER_ADDR, MASTER_PORT (LOCAL_RANK, LOCAL_WORLD_SIZE optional); `llmcompress
// launch` sets them. Every rank holds the whole model and the same global batches; it computes
// the loss of its share of each batch (shard()), scaled by share / batch so that the sum over ranks
// is the 1-process loss, and the gradients are summed over ranks (all_reduce_grads, fp32) before
// the identical optimizer step on every rank. Random draws (Gumbel noise, batch order) come from
// the same seeded generators on every rank, so nothing random is communicated.
//
// Failure is bounded: every store and collective operation has a timeout (LLMC_DIST_TIMEOUT_S,
// default 1800 s, as torch's), a peer that exits makes the next collective fail at once (its socket
// closes), and each failure is rethrown as one llmc::Error line naming the rank and the operation.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace llmc {

// The torchrun environment contract of this process.
struct DistEnv {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr;
  int master_port = 0;
  double timeout_s = 1800;  // store and collectives (LLMC_DIST_TIMEOUT_S)
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT and
// LLMC_DIST_TIMEOUT_S; absent RANK/WORLD_SIZE mean one process. Throws one line naming the
// variable when a value is malformed or inconsistent (RANK >= WORLD_SIZE, no MASTER_PORT, ...).
DistEnv dist_env_from_environment();

// Whether this build has c10d with Gloo (false: a run with WORLD_SIZE > 1 fails with
// "built without c10d").
bool dist_available();

// This rank's rows of a global batch of n rows: [begin, begin + count). The first n % world ranks
// take one row more.
struct Shard {
  int64_t begin = 0, count = 0;
};

class DataParallel {
 public:
  // The process-wide group: created on first use from the environment (one process: a group of
  // one that communicates nothing). Throws when WORLD_SIZE > 1 and the group cannot be formed.
  static DataParallel& get();
  ~DataParallel();

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  bool active() const { return env_.world_size > 1; }
  bool is_root() const { return env_.rank == 0; }
  const DistEnv& env() const { return env_; }

  // This rank's share of n rows; fails (naming `what`) when n < world size.
  Shard shard(int64_t n, const std::string& what) const;
  // batch (n, ...) -> this rank's rows, and the loss weight count / n of its mean loss.
  at::Tensor shard_rows(const at::Tensor& batch, double* weight, const std::string& what) const;

  // Sums the defined gradients of `params` over ranks (one fp32 buffer). Every rank must pass the
  // same parameters with the same defined gradients (same graph: the random draws agree).
  void all_reduce_grads(const std::vector<at::Tensor>& params, const std::string& what);
  // Sums a small fp64 vector over ranks (losses, counts, flags).
  std::vector<double> all_reduce_sum(std::vector<double> v, const std::string& what);
  // Fails when the value differs between ranks (a check that seeded draws agree).
  void check_same(double v, const std::string& what);
  // Copies rank 0's values into `t` on every rank (t keeps its shape, dtype and storage).
  void broadcast(at::Tensor& t, const std::string& what);
  void broadcast(const std::vector<at::Tensor>& ts, const std::string& what);
  void barrier(const std::string& what);

 private:
  explicit DataParallel(const DistEnv& env);
  struct Impl;
  DistEnv env_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmc
