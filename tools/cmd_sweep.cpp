// llmcompress sweep: the resumable Pareto study of one model (include/llmc/sweep/sweep.h).
#include <cstdio>
#include <memory>

#include "commands.h"
#include "llmc/sweep/sweep.h"

namespace llmc::cli {

namespace {
struct SweepArgs {
  std::string config, out, machine;
  bool dry_run = false, report_only = false, restart_searches = false;
  std::vector<std::string> points, redo;
  int rebench = 0, versus = 0;
};
}  // namespace

Action add_sweep(CLI::App& app) {
  auto a = std::make_shared<SweepArgs>();
  app.add_option("--config", a->config, "Sweep config JSON (see include/llmc/sweep/sweep.h, configs/README.md)")
      ->required();
  app.add_option("--out", a->out, "Study folder: manifest.json, lut.json, points/, report.{json,md}, pareto.svg")
      ->required();
  app.add_flag("--dry-run", a->dry_run,
               "Print the stages still to run and their commands (with --rebench / --versus: what they would "
               "time); run nothing");
  app.add_flag("--report-only", a->report_only, "Write the report of what is finished now; run nothing");
  app.add_option("--rebench", a->rebench,
                 "Bench every benched point again, N rounds in one period (points alternated), keep each "
                 "point's median round; then the report")
      ->check(CLI::PositiveNumber);
  app.add_option("--versus", a->versus,
                 "Time each joint point against the uniform baselines near its decode time with `bench --versus` "
                 "(N repeats, in turn, token by token); the report's ratios come from it")
      ->check(CLI::Range(2, 1000));
  app.add_option("--points", a->points,
                 "Run only these search points (comma-separated names as in the report, e.g. joint-t6.110); the "
                 "baselines run first regardless")
      ->delimiter(',');
  app.add_flag("--restart-searches", a->restart_searches,
               "The base search config changed: move the finished search points to OUT/stale/ and redo them "
               "(baselines kept)");
  app.add_option("--redo", a->redo,
                 "Run these finished stages again (comma-separated POINT/STAGE, STAGE one of export, bench, "
                 "eval, ppl; POINT may be a pattern: '*/eval'); an export with its point's bench, eval and ppl")
      ->delimiter(',');
  app.add_option("--machine", a->machine, "Machine description for the report (default: the CPU's name)");
  return [a] {
    const SweepConfig c = load_sweep_config(a->config);
    SweepOptions o;
    o.out = a->out;
    o.dry_run = a->dry_run;
    o.machine = a->machine;
    o.points = a->points;
    o.restart_searches = a->restart_searches;
    o.redo = a->redo;
    if (a->rebench > 0) {
      rebench_sweep(c, o, a->rebench);
      return 0;
    }
    if (a->versus > 0) {
      versus_sweep(c, o, a->versus);
      return 0;
    }
    if (a->report_only) {
      if (a->dry_run) {
        std::printf("sweep --report-only would write %s/report.md, report.json and pareto.svg\n", a->out.c_str());
        return 0;
      }
      write_sweep_report(c, o);
      return 0;
    }
    const int rc = run_sweep(c, o);
    if (rc == 0 && !a->dry_run) std::printf("%s/report.md\n", a->out.c_str());
    return rc;
  };
}

}  // namespace llmc::cli
