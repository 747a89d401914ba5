#include "llmc/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "llmc/core/error.h"

namespace llmc {

void setup_logging(const std::string& level) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") fail("--log-level: unknown level '{}'", level);
  auto logger = spdlog::stderr_color_mt("llmc");
  logger->set_pattern("[%H:%M:%S %^%l%$] %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(lvl);
}

}  // namespace llmc
