#pragma once
#include <string>

namespace llmc {

// Root of the shared data/models folder: $LLMC_SHARED if set, else `../shared` next to the source
// tree (compiled in), else `../shared` relative to the working directory.
std::string shared_root();

}  // namespace llmc
