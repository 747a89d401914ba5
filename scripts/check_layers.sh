#!/usr/bin/env bash
# The one-way layer order, checked. src/CMakeLists.txt declares the stages bottom to top
# (`llmc_stage(NAME DEPS ...)`); this script fails when
#   - a stage lists a dependency that is not declared below it (a cycle),
#   - a header or source of a stage includes "llmc/<other>/..." for a stage it may not use,
#   - kernels/ includes anything of llmc/,
#   - the README's Layout table ("| stage | may use |" rows) says something else than src/CMakeLists.txt.
# Usage: scripts/check_layers.sh [SOURCE_ROOT]. Run by the build (target check_layers) and by ctest.
set -euo pipefail
root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$root"

# "name dep dep ..." per stage, in declaration order (continuation lines of a call are joined).
stages="$(awk '
  /^llmc_stage\(/ { buf = $0; open = 1 }
  open && !/^llmc_stage\(/ { buf = buf " " $0 }
  open && /\)/ { print buf; open = 0 }' src/CMakeLists.txt |
  sed -E 's/^llmc_stage\(//; s/\).*$//' |
  awk '{ name = $1; out = name; mode = "";
         for (i = 2; i <= NF; i++) {
           if ($i == "DEPS" || $i == "TORCH_FREE" || $i == "LIBS") { mode = $i; continue }
           if (mode == "DEPS") out = out " " $i
         }
         print out }')"
[ -n "$stages" ] || { echo "check_layers: no llmc_stage() calls in src/CMakeLists.txt" >&2; exit 1; }

declare -A allowed declared
fail=0
while read -r name deps; do
  for d in $deps; do
    if [ "$d" != kernels ] && [ -z "${declared[$d]:-}" ]; then
      echo "check_layers: src/CMakeLists.txt: stage '$name' uses '$d', which is not declared below it" >&2
      fail=1
    fi
  done
  declared[$name]=1
  allowed[$name]=" $name $deps "
done <<< "$stages"

for dir in include/llmc/* src/*; do
  [ -d "$dir" ] || continue
  stage="$(basename "$dir")"
  if [ -z "${declared[$stage]:-}" ]; then
    echo "check_layers: $dir is not a stage declared in src/CMakeLists.txt" >&2
    fail=1
    continue
  fi
  while IFS=: read -r file line inc; do
    other="$(sed -E 's@.*"llmc/([a-z_]+)/.*@\1@' <<< "$inc")"
    if [[ "${allowed[$stage]}" != *" $other "* ]]; then
      echo "check_layers: $file:$line: stage '$stage' includes llmc/$other/ (it may use:${allowed[$stage]% })" >&2
      fail=1
    fi
  done < <(grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"llmc/' "$dir" || true)
done

if grep -rnE '^[[:space:]]*#[[:space:]]*include[[:space:]]+"llmc/' kernels >&2; then
  echo "check_layers: kernels/ must not include llmc/ headers (above)" >&2
  fail=1
fi

# README: the rows between "<!-- layers -->" markers: | `stage` | dep, dep |
readme="$(awk '/<!-- layers begin -->/ { on = 1; next } /<!-- layers end -->/ { on = 0 } on' README.md |
  { grep -E '^\| `[a-z_]+` \|' || true; } | sed -E 's/^\| `([a-z_]+)` \| ([^|]*)\|.*/\1 \2/; s/,/ /g; s/—|-$//' |
  awk '{ $1 = $1; print }')"
want="$(awk '{ $1 = $1; print }' <<< "$stages")"
if [ "$readme" != "$want" ]; then
  echo "check_layers: README.md's layer table (between <!-- layers begin/end -->) differs from src/CMakeLists.txt:" >&2
  diff <(echo "$want") <(echo "$readme") >&2 || true
  fail=1
fi

[ "$fail" -eq 0 ] && echo "check_layers: ok ($(wc -l <<< "$stages") stages)"
exit "$fail"
