// Data parallelism on c10d (see dist.h). Compiled without the precompiled header: the c10d
// headers need USE_C10D_GLOO, which ATen's header must not see differently (src/CMakeLists.txt).
#include "llmc/finetune/dist.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/tensor.h>
#include <c10/util/Exception.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <exception>
#include <string>

#include "llmc/core/error.h"
#include "llmc/core/log.h"

#if LLMC_HAVE_C10D
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace llmc {

namespace {

const char* env_or(const char* name, const char* dflt) {
  const char* v = std::getenv(name);
  return v && *v ? v : dflt;
}

int env_int(const char* name, int dflt, int lo) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || *end != '\0' || x < lo || x > 1 << 20)
    fail("environment: {}='{}' is not an integer >= {}", name, v, lo);
  return static_cast<int>(x);
}

#if LLMC_HAVE_C10D
// The first line of an exception's text (c10::Error without its backtrace).
std::string first_line(const std::exception& e) {
  std::string s = e.what();
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) s = ce->what_without_backtrace();
  const auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}
#endif

}  // namespace

DistEnv dist_env_from_environment() {
  DistEnv e;
  e.world_size = env_int("WORLD_SIZE", 1, 1);
  e.rank = env_int("RANK", 0, 0);
  if (e.rank >= e.world_size) fail("environment: RANK={} is not below WORLD_SIZE={}", e.rank, e.world_size);
  e.local_world_size = env_int("LOCAL_WORLD_SIZE", e.world_size, 1);
  e.local_rank = env_int("LOCAL_RANK", e.rank % e.local_world_size, 0);
  if (e.local_rank >= e.local_world_size)
    fail("environment: LOCAL_RANK={} is not below LOCAL_WORLD_SIZE={}", e.local_rank, e.local_world_size);
  const char* t = std::getenv("LLMC_DIST_TIMEOUT_S");
  if (t && *t) {
    char* end = nullptr;
    e.timeout_s = std::strtod(t, &end);
    if (*end != '\0' || !(e.timeout_s > 0)) fail("environment: LLMC_DIST_TIMEOUT_S='{}' is not a positive number", t);
  }
  if (e.world_size > 1) {
    e.master_addr = env_or("MASTER_ADDR", "");
    if (e.master_addr.empty()) fail("environment: WORLD_SIZE={} but MASTER_ADDR is not set", e.world_size);
    e.master_port = env_int("MASTER_PORT", 0, 1);
    if (e.master_port == 0 || e.master_port > 65535)
      fail("environment: WORLD_SIZE={} but MASTER_PORT is not set to a port (1..65535)", e.world_size);
  }
  return e;
}

#if LLMC_HAVE_C10D

bool dist_available() { return true; }

struct DataParallel::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> pg;
};

DataParallel::DataParallel(const DistEnv& env) : env_(env), impl_(std::make_unique<Impl>()) {
  if (!active()) return;
  // A peer that dies closes its sockets; a write to one then raises SIGPIPE, whose default action
  // ends this rank silently before the failed collective can throw and report which rank failed (seen
  // in DataParallelSearch.KilledRankEndsTheJobAndResumeFinishesIt: rank 0 "killed by signal 13").
  // Ignored, the write fails with EPIPE and Gloo throws.
  std::signal(SIGPIPE, SIG_IGN);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(env_.timeout_s * 1000));
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(env_.master_port);
    so.isServer = env_.rank == 0;
    so.numWorkers = static_cast<size_t>(env_.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, so);
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    // Loopback masters (one machine) bind Gloo to loopback; GLOO_SOCKET_IFNAME names an interface
    // (as in torch); otherwise the interface of this host's name.
    const bool loopback = env_.master_addr == "127.0.0.1" || env_.master_addr == "localhost";
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (loopback)
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    opts->threads = 1;
    impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env_.rank, env_.world_size, opts);
  } catch (const std::exception& e) {
    fail("data-parallel: rank {} of {} could not join the group at {}:{} (timeout {:.0f} s): {}", env_.rank,
         env_.world_size, env_.master_addr, env_.master_port, env_.timeout_s, first_line(e));
  }
  spdlog::info("data-parallel: rank {} of {} (local {} of {}), Gloo over {}:{}", env_.rank, env_.world_size,
               env_.local_rank, env_.local_world_size, env_.master_addr, env_.master_port);
}

namespace {
template <class F>
void run_collective(const DistEnv& env, const std::string& what, F&& f) {
  try {
    f()->wait();
  } catch (const std::exception& e) {
    fail("data-parallel: {} failed on rank {} of {} (a peer exited, or {:.0f} s passed without it): {}", what,
         env.rank, env.world_size, env.timeout_s, first_line(e));
  }
}
}  // namespace

void DataParallel::all_reduce_grads(const std::vector<at::Tensor>& params, const std::string& what) {
  if (!active()) return;
  at::NoGradGuard ng;
  std::vector<at::Tensor> gs;
  for (const auto& p : params)
    if (p.grad().defined()) gs.push_back(p.grad());
  if (gs.empty()) return;
  std::vector<at::Tensor> flat;
  for (auto& g : gs) flat.push_back(g.detach().to(at::kFloat).reshape({-1}));
  std::vector<at::Tensor> buf{at::cat(flat)};
  run_collective(env_, what, [&] { return impl_->pg->allreduce(buf); });
  int64_t off = 0;
  for (auto& g : gs) {
    g.copy_(buf[0].narrow(0, off, g.numel()).view(g.sizes()));
    off += g.numel();
  }
}

std::vector<double> DataParallel::all_reduce_sum(std::vector<double> v, const std::string& what) {
  if (!active() || v.empty()) return v;
  std::vector<at::Tensor> buf{at::tensor(v, at::kDouble)};
  run_collective(env_, what, [&] { return impl_->pg->allreduce(buf); });
  const double* p = buf[0].data_ptr<double>();
  return std::vector<double>(p, p + v.size());
}

void DataParallel::check_same(double v, const std::string& what) {
  if (!active()) return;
  std::vector<at::Tensor> buf{at::tensor(std::vector<double>{v, -v}, at::kDouble)};
  c10d::AllreduceOptions o;
  o.reduceOp = c10d::ReduceOp::MAX;
  run_collective(env_, what, [&] { return impl_->pg->allreduce(buf, o); });
  const double hi = buf[0][0].item<double>(), lo = -buf[0][1].item<double>();
  if (hi != lo)
    fail("data-parallel: {} differs between ranks ({} .. {}); the ranks must run the same build, config and seed",
         what, lo, hi);
}

void DataParallel::broadcast(at::Tensor& t, const std::string& what) {
  broadcast(std::vector<at::Tensor>{t}, what);
}

void DataParallel::broadcast(const std::vector<at::Tensor>& ts, const std::string& what) {
  if (!active() || ts.empty()) return;
  at::NoGradGuard ng;
  // One buffer per dtype would do; the callers send fp32 state or int64 tokens, one kind at a time.
  for (const auto& t : ts) {
    std::vector<at::Tensor> buf{t.is_contiguous() ? t.detach() : t.detach().contiguous()};
    run_collective(env_, what, [&] { return impl_->pg->broadcast(buf); });
    if (!t.is_contiguous()) at::Tensor(t).detach().copy_(buf[0]);
  }
}

void DataParallel::barrier(const std::string& what) {
  if (!active()) return;
  run_collective(env_, what, [&] { return impl_->pg->barrier(); });
}

#else  // built without c10d

bool dist_available() { return false; }

struct DataParallel::Impl {};

DataParallel::DataParallel(const DistEnv& env) : env_(env) {
  if (active())
    fail("data-parallel: WORLD_SIZE={} asks for {} ranks, but this llmcompress was built without c10d (PyTorch "
         "distributed with Gloo); run one process",
         env_.world_size, env_.world_size);
}
void DataParallel::all_reduce_grads(const std::vector<at::Tensor>&, const std::string&) {}
std::vector<double> DataParallel::all_reduce_sum(std::vector<double> v, const std::string&) { return v; }
void DataParallel::check_same(double, const std::string&) {}
void DataParallel::broadcast(at::Tensor&, const std::string&) {}
void DataParallel::broadcast(const std::vector<at::Tensor>&, const std::string&) {}
void DataParallel::barrier(const std::string&) {}

#endif

DataParallel::~DataParallel() = default;

DataParallel& DataParallel::get() {
  // Never destroyed: Gloo's threads and the store's server live until the process exits (no
  // destruction order to get wrong when a rank leaves on an error).
  static DataParallel* dp = new DataParallel(dist_env_from_environment());
  return *dp;
}

Shard DataParallel::shard(int64_t n, const std::string& what) const {
  const int64_t w = env_.world_size, r = env_.rank;
  if (n < w) fail("data-parallel: {} has {} rows, fewer than the {} ranks; use a batch of at least {}", what, n, w, w);
  const int64_t base = n / w, extra = n % w;
  return {r * base + std::min(r, extra), base + (r < extra ? 1 : 0)};
}

at::Tensor DataParallel::shard_rows(const at::Tensor& batch, double* weight, const std::string& what) const {
  const int64_t n = batch.size(0);
  if (!active()) {
    *weight = 1.0;
    return batch;
  }
  const Shard s = shard(n, what);
  *weight = static_cast<double>(s.count) / static_cast<double>(n);
  return batch.narrow(0, s.begin, s.count);
}

}  // namespace llmc
