#pragma once
// Logging goes to stderr through spdlog; results go to stdout.
#include <spdlog/spdlog.h>

#include <string>

namespace llmc {

// level: trace|debug|info|warn|error|off. Throws llmc::Error on an unknown level.
void setup_logging(const std::string& level);

}  // namespace llmc
