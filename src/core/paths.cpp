#include "llmc/core/paths.h"

#include <cstdlib>

#include "llmc/core/files.h"

#ifndef LLMC_SOURCE_DIR
#define LLMC_SOURCE_DIR "."
#endif

namespace llmc {

std::string shared_root() {
  if (const char* env = std::getenv("LLMC_SHARED"); env && *env) return env;
  std::string beside_source = std::string(LLMC_SOURCE_DIR) + "/../shared";
  if (dir_exists(beside_source)) return beside_source;
  return "../shared";
}

}  // namespace llmc
