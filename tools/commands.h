#pragma once
// One function per subcommand: `add_*` registers options on the CLI11 app and returns the action
// to run when that subcommand was chosen. Actions return the process exit code.
#include <CLI/CLI.hpp>

#include <functional>

namespace llmc::cli {

using Action = std::function<int()>;

Action add_info(CLI::App& app);
Action add_generate(CLI::App& app);
Action add_eval(CLI::App& app);
Action add_export(CLI::App& app);
Action add_bench(CLI::App& app);
Action add_lut(CLI::App& app);
Action add_search(CLI::App& app);
Action add_sweep(CLI::App& app);
Action add_launch(CLI::App& app);

}  // namespace llmc::cli
