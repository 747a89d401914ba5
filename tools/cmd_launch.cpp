#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "llmc/core/error.h"
#include "llmc/core/launch.h"
#include "llmc/core/process.h"
#include "llmc/finetune/dist.h"

namespace llmc::cli {

namespace {
struct LaunchArgs {
  LaunchOptions o;
  std::vector<std::string> args;
};
}  // namespace

Action add_launch(CLI::App& app) {
  auto a = std::make_shared<LaunchArgs>();
  app.add_option("--nproc", a->o.nproc, "Ranks to start on this machine")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--nnodes", a->o.nnodes, "Machines in the job (each runs launch with its --node-rank)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--node-rank", a->o.node_rank, "This machine's index, 0..nnodes-1")->capture_default_str();
  app.add_option("--master", a->o.master,
                 "ADDR:PORT of rank 0's store (default: 127.0.0.1 and a free port; required with --nnodes > 1)");
  app.add_option("--grace", a->o.grace_s, "Seconds the other ranks get to exit after one fails (then SIGKILL)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("args", a->args, "llmcompress arguments after '--', e.g. -- --threads 1 search --config c.json")
      ->required();
  app.footer(
      "Each rank runs this llmcompress with the arguments after '--' and RANK, WORLD_SIZE, LOCAL_RANK,\n"
      "LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT set (torchrun's contract). search and\n"
      "export's fine-tune split every global batch over the ranks; rank 0 writes the outputs.\n"
      "LLMC_DIST_TIMEOUT_S (default 1800) bounds every store and collective operation.");
  return [a] {
    if (!dist_available())
      throw Error("launch: this llmcompress was built without c10d (PyTorch distributed with Gloo); data-parallel "
                  "runs are unavailable");
    // Only search and export split their work over ranks; any other command would run N times
    // (and its N copies would write the same outputs).
    std::string sub;
    for (size_t i = 0; i < a->args.size() && sub.empty(); ++i) {
      const std::string& t = a->args[i];
      if (t == "--log-level" || t == "--threads") ++i;  // the global options that take a value
      else if (!t.empty() && t[0] != '-') sub = t;
    }
    if (sub != "search" && sub != "export")
      throw Error("launch: the command after '--' must be search or export (the data-parallel ones), got '" +
                  (sub.empty() ? std::string("none") : sub) + "'");
    LaunchOptions o = a->o;
    o.argv = {self_executable()};
    o.argv.insert(o.argv.end(), a->args.begin(), a->args.end());
    return launch_ranks(o);
  };
}

}  // namespace llmc::cli
