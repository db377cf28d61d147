#!/usr/bin/env bash
# Install the package with its C++ extension the way the README does, and fail if the extension did not build
# or does not load (a user install would carry on without it; CI must not).
set -euo pipefail
cd "$(dirname "$0")/.."
export NF_KERNELS_REQUIRE_EXTENSION=1
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
time python3 -m pip install -e . --no-build-isolation --no-deps -q
python3 - <<'PY'
import torch
import nf_kernels
from nf_kernels._dispatch import why_unavailable

print(nf_kernels.list_backends())
reason = why_unavailable("cpu", torch.device("cpu"))
assert reason is None, f"the 'cpu' backend is unavailable after the build: {reason}"
PY
