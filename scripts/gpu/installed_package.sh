#!/usr/bin/env bash
# GPU part "installed_package": oea-trt installed as a user would install it, used away from the
# checkout. Makes a venv that sees the system's torch / triton (--system-site-packages, no
# network), pip-installs this repository into it (not editable: the wheel route, so the routing
# kernel comes from the package's oea_trt/routing/csrc/ and is built through its CMake project
# into a fresh cache on first use), then from /tmp runs route() on CUDA tensors and moe_forward
# on its result, each against the reference.
#   RESULTS_DIR=/tmp/r bash scripts/gpu/installed_package.sh     (from the repo root; ~2-3 min)
# Writes $RESULTS_DIR/installed_package/{install.log,check.log,summary.txt}; exit status 0 = all good.
set -u
cd "$(dirname "$0")/../.."
REPO="$PWD"
RESULTS_DIR="${RESULTS_DIR:-./out}"
OUT="$RESULTS_DIR/installed_package"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d /tmp/oea-installed.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
VENV="$WORK/venv"

# A clean copy of what a wheel build reads, so no build output of the checkout leaks into the install.
python3 - "$REPO" "$WORK/src" <<'COPY'
import shutil, sys
from pathlib import Path
repo, src = Path(sys.argv[1]), Path(sys.argv[2])
src.mkdir(parents=True)
ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info", "lib")
for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "CMakeLists.txt", "oea_trt", "plugin"):
    if (repo / name).is_dir():
        shutil.copytree(repo / name, src / name, ignore=ignore)
    else:
        shutil.copy2(repo / name, src / name)
COPY
# --without-pip: no ensurepip needed; the system's pip (seen through --system-site-packages)
# installs into the venv it runs in.
python3 -m venv --without-pip --system-site-packages "$VENV" || { echo "installed_package: venv failed" | tee "$OUT/summary.txt"; exit 1; }
# --system-site-packages sees the BASE interpreter's packages; where python3 is itself a venv (the
# GPU box: torch lives in /opt/torch/.venv) the new venv must see that venv's packages too. A .pth
# file appends them after the new venv's own site-packages, so oea_trt still comes from the install.
python3 -c "import site; print('\n'.join(site.getsitepackages()))" > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/outer_site.pth"
if ! "$VENV/bin/python" -m pip install --no-deps --no-build-isolation --no-index "$WORK/src" > "$OUT/install.log" 2>&1; then
  tail -n 30 "$OUT/install.log"
  echo "installed_package: pip install failed (see install.log)" | tee "$OUT/summary.txt"
  exit 1
fi

cd /tmp
env -u PYTHONPATH -u OEA_ROUTING_LIBRARY OEA_TRT_CACHE="$WORK/cache" timeout 900 "$VENV/bin/python" - "$REPO" \
  > "$OUT/check.log" 2>&1 <<'EOF'
import os
import sys
import time
from pathlib import Path

import torch

import oea_trt
from oea_trt.moe import ExpertWeights, moe_forward
from oea_trt.moe.reference import moe_reference
from oea_trt.routing import OEAConfig, oea_route
from oea_trt.routing.kernel import load_library
from oea_trt.routing.library import kernel_sources

repo = Path(sys.argv[1]).resolve()
package = Path(oea_trt.__file__).resolve().parent
print("package:", package)
print("kernel sources:", kernel_sources())
assert repo not in package.parents, f"imported the checkout ({package}), not the installed package"
assert kernel_sources() == package / "routing" / "csrc", kernel_sources()

t0 = time.time()
library = load_library()  # built through the package's CMake project into $OEA_TRT_CACHE
print(f"routing library: {library.path} ({time.time() - t0:.0f} s)")
assert str(library.path).startswith(os.environ["OEA_TRT_CACHE"]), library.path

torch.manual_seed(0)
problems = []
for T, k0 in [(1, 3), (16, 3), (64, 4), (300, 3)]:
    cfg = OEAConfig(num_experts=128, top_k=8, k0=k0)
    logits = (torch.randn(T, 128, device="cuda") * 2).to(torch.bfloat16)
    got, want = oea_trt.route(logits, cfg, backend="kernel"), oea_route(logits, cfg)
    if not torch.equal(got.expert_ids, want.expert_ids):
        problems.append(f"route T={T} k0={k0}: expert ids differ from the reference")
    elif not torch.allclose(got.weights, want.weights, rtol=1e-6, atol=1e-30):
        problems.append(f"route T={T} k0={k0}: weights differ from the reference")
    print(f"route T={T} k0={k0}: distinct experts {int(got.num_active)} (reference {int(want.num_active)})")

E, H, I = 128, 2048, 768  # Qwen3-30B-A3B's MoE layer
g = torch.Generator(device="cuda").manual_seed(1)
weights = ExpertWeights(torch.randn(E, 2 * I, H, generator=g, device="cuda", dtype=torch.bfloat16) * H ** -0.5,
                        torch.randn(E, H, I, generator=g, device="cuda", dtype=torch.bfloat16) * I ** -0.5)
for T in (1, 16):
    x = torch.randn(T, H, device="cuda", dtype=torch.bfloat16)
    routing = oea_trt.route(torch.randn(T, E, device="cuda"), OEAConfig(num_experts=E, top_k=8, k0=3), signal=True)
    out = moe_forward(x, weights, routing)
    ref = moe_reference(x, weights.w13, weights.w2, routing.expert_ids, routing.weights)
    err = float((out.float() - ref.float()).abs().max() / ref.float().abs().max())
    print(f"moe_forward T={T}: max error {err:.2e} of the reference's largest value")
    if not err <= 2e-2:
        problems.append(f"moe_forward T={T}: max relative error {err:.3e} > 2e-2")
print("PROBLEMS:" if problems else "ALL GOOD", *problems, sep="\n  ")
sys.exit(1 if problems else 0)
EOF
rc=$?
cat "$OUT/check.log"
{ echo "installed_package: rc=$rc"; tail -n 3 "$OUT/check.log"; } > "$OUT/summary.txt"
exit $rc
