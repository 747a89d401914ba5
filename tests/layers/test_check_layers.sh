#!/usr/bin/env bash
# scripts/check_layers.sh must fail on an upward include, on a dependency cycle and on a README
# table that disagrees with src/CMakeLists.txt, and pass on a tree that follows the order.
# Usage: test_check_layers.sh PATH/TO/check_layers.sh
set -euo pipefail
check="$1"
t="$(mktemp -d)"
trap 'rm -rf "$t"' EXIT

make_tree() {  # a two-stage tree: low (bottom), high (uses low)
  rm -rf "$t/tree"
  mkdir -p "$t/tree/src/low" "$t/tree/src/high" "$t/tree/include/llmc/low" "$t/tree/include/llmc/high" "$t/tree/kernels"
  cat > "$t/tree/src/CMakeLists.txt" <<'CM'
llmc_stage(low       TORCH_FREE ALL)
llmc_stage(high      DEPS low
                     TORCH_FREE ALL)
CM
  cat > "$t/tree/README.md" <<'MD'
<!-- layers begin -->
| stage | may use | owns |
|---|---|---|
| `low` | | a |
| `high` | low | b |
<!-- layers end -->
MD
  echo '#include "llmc/low/a.h"' > "$t/tree/include/llmc/high/b.h"
  echo '#include "llmc/high/b.h"' > "$t/tree/src/high/b.cpp"
  echo '#include "llmc/low/a.h"' > "$t/tree/src/low/a.cpp"
}

expect() {  # expect ok|fail WHAT
  local rc=0 out
  out="$(bash "$check" "$t/tree" 2>&1)" || rc=$?
  if [ "$1" = ok ] && [ "$rc" -ne 0 ]; then echo "FAIL: $2: expected success, got: $out"; exit 1; fi
  if [ "$1" = fail ] && [ "$rc" -eq 0 ]; then echo "FAIL: $2: expected a failure, got: $out"; exit 1; fi
  echo "ok: $2"
}

make_tree
expect ok "a tree that follows the order"
echo '#include "llmc/high/b.h"' >> "$t/tree/src/low/a.cpp"
expect fail "an upward include in a source"
make_tree
echo '  #  include "llmc/high/b.h"' >> "$t/tree/include/llmc/low/a.h"
expect fail "an upward include in a header (spaces in the directive)"
make_tree
sed -i 's/^llmc_stage(low       TORCH_FREE ALL)/llmc_stage(low       DEPS high TORCH_FREE ALL)/' "$t/tree/src/CMakeLists.txt"
expect fail "a dependency on a stage declared above"
make_tree
sed -i 's/^| `high` | low | b |/| `high` | | b |/' "$t/tree/README.md"
expect fail "a README table that differs"
make_tree
echo '#include "llmc/low/a.h"' > "$t/tree/kernels/k.cpp"
expect fail "kernels including llmc/"
make_tree
mkdir -p "$t/tree/src/extra"
expect fail "a folder that is not a declared stage"
echo "1 passed, 0 failed"
