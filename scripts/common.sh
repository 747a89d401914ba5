# Sourced by the scripts (after `set -euo pipefail`): where things are, and how OpenMP waits.
#   root    the source tree          shared  $LLMC_SHARED (default ../shared next to the tree)
#   bin     $BUILD/bin/llmcompress   (BUILD default: root/build)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${LLMC_SHARED:-$root/../shared}"
bin="${BUILD:-$root/build}/bin/llmcompress"
# Idle OpenMP workers sleep instead of spinning: on shared or busy cores spinning workers starve the
# thread that has the work (measured: stories260K ARC-Challenge at 2 threads on a busy 2-core machine,
# 23.6 req/s spinning, 610.9 req/s passive).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
