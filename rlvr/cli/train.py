"""`rlvr train`: which run directory a start may use (fresh, resumed, overwritten), then the Trainer."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from rlvr.cli.common import fail


def _train_recipe(args):
    """The recipe to train: RECIPE, or with `--resume RUN_DIR` and no RECIPE the run's own config.yaml."""
    from rlvr.config import RecipeError, load_recipe

    overrides = list(args.set or [])
    path = args.recipe
    if isinstance(args.resume, str):
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise RecipeError(f"--resume: run directory not found: {run_dir}")
        path = path or run_dir / "config.yaml"
        overrides += [f"output_dir={run_dir.parent}", f"name={run_dir.name}"]
    if not path:
        raise RecipeError("rlvr train needs a RECIPE (or --resume RUN_DIR)")
    return load_recipe(path, overrides)


def cmd_train(args) -> int:
    import shutil

    from rlvr.checkpoint import CheckpointError, completed_steps, has_checkpoint, is_running
    from rlvr.config import RecipeError

    try:
        recipe = _train_recipe(args)
        run_dir = recipe.run_dir
        point = None
        if is_running(run_dir):
            raise RecipeError(f"{run_dir} is being trained right now by another `rlvr train`; stop it first or "
                              "pick another name (--set name=...)")
        # a start killed before its first step left nothing worth keeping: it may simply start again
        fresh = completed_steps(run_dir) == 0 and not has_checkpoint(run_dir)
        if args.resume and fresh and not (run_dir / "summary.json").is_file():
            print(f"{run_dir} never completed a step: starting it from the beginning")
        elif args.resume:
            from rlvr.loop.checkpoints import resume_point

            point = resume_point(recipe)
            if point is None:
                print(f"{run_dir} already finished all its steps (summary.json): nothing to do")
                return 0
        if not point and ((run_dir / "metrics.jsonl").is_file() or (run_dir / "checkpoints").is_dir()):
            if not (args.overwrite or fresh):  # never clobber a run that may hold hours of training
                raise RecipeError(f"{run_dir} already holds a run ({completed_steps(run_dir)} steps): continue it "
                                  "with --resume, start over with --overwrite, or pick another name (--set name=...)")
            for old in ("checkpoints", "final", "summary.json", "metrics.jsonl", "eval.jsonl", "eval_samples.jsonl"):
                target = run_dir / old
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        from rlvr.loop.trainer import Trainer, prepare

        prep = prepare(recipe)
    except (RecipeError, CheckpointError) as e:
        return fail(str(e))
    from rlvr.cluster.placement import PreflightError

    if prep.report:
        print(prep.report)
    trainer = Trainer(prep, resume=point)
    try:
        s = trainer.run(point)
    except PreflightError as e:  # the plan does not fit the cluster: say which fields to change
        return fail(str(e))
    finally:
        trainer.shutdown()
    t = s["timings"]
    print(f"\nrun finished: {s['run_dir']}")
    print(f"held-out greedy accuracy {s['accuracy_before']:.1%} -> {s['accuracy_after']:.1%} "
          f"({s['accuracy_gain_points']:+.1f} points) in {s['steps']} steps, {s['wall_seconds']:.0f}s wall "
          f"({s['rl_seconds']:.0f}s after start-up)")
    print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in t.items()))
    if "env_after" in s:
        b, e = s["env_before"], s["env_after"]
        print("tool use (held-out, greedy): " + ", ".join(
            f"{k.removeprefix('env/')} {b.get(k, 0):.2f} -> {e.get(k, 0):.2f}" for k in sorted(set(b) | set(e))))
    print(f"final policy: {s['run_dir']}/final   metrics: {s['run_dir']}/metrics.jsonl   plots: rlvr plot {s['run_dir']}")
    return 0


# --------------------------------------------------------------------------- the command



def cmd_config(args) -> int:
    from rlvr.config import field_reference

    lines = [f"| `{n}` | `{d}` | {desc} |" if args.markdown else f"{n:38s} {d:14s} {desc}" for n, d, desc in field_reference()]
    return print_lines(lines)


def print_lines(lines) -> int:
    """Print to stdout; a reader that stops early (`| head`) ends the command quietly, as for any Unix tool."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
    return 0


def cmd_check_final(args) -> int:
    from rlvr.replay import replay_final

    run = Path(args.run_dir)
    if args.limit is not None and args.limit < 1:
        return fail(f"--limit: must be at least 1, got {args.limit}")
    need = [n for n in ("config.yaml", "eval_samples.jsonl", "final/config.json") if not (run / n).is_file()]
    if not run.is_dir():
        return fail(f"RUN_DIR: {run} does not exist")
    if need:
        return fail(f"RUN_DIR: {run} has no {need[0]}: check-final needs a finished run (config.yaml, "
                     "eval_samples.jsonl and final/)")
    if not (run / "eval_samples.jsonl").read_text().strip():
        return fail(f"RUN_DIR: {run}/eval_samples.jsonl is empty: the run logged no evaluation to replay")
    ok, total, bad = replay_final(args.run_dir, limit=args.limit, progress=sys.stderr.isatty())
    print(f"transformers greedy decoding of {args.run_dir}/final reproduces {ok}/{total} completions of the last evaluation")
    for prompt, vllm_text, hf_text in bad[:5]:
        print(f"  mismatch: {prompt!r}: vLLM {vllm_text!r} vs transformers {hf_text!r}")
    return 0 if ok == total else 1


def cmd_scale(args) -> int:
    """Ask a running `rlvr train` to grow or shrink its engine pool (it applies the request at its next step)."""
    import json

    run = Path(args.run_dir)
    if not (run / "config.yaml").is_file():
        return fail(f"RUN: {run} is not a run directory (runs/<name>, with config.yaml); for a Ray job, run "
                     "`rlvr scale` on the cluster's head node with the job's run directory")
    if (run / "summary.json").is_file():
        return fail(f"RUN: {run} has finished (summary.json): nothing to scale")
    if args.engines < 1:
        return fail("--engines: must be >= 1")
    from rlvr.checkpoint import is_running

    running = is_running(run)
    tmp = run / "scale.json.tmp"
    tmp.write_text(json.dumps({"engines": args.engines}))
    tmp.replace(run / "scale.json")  # atomic: the controller never reads half a request
    if running:
        print(f"asked {run} for {args.engines} engine(s); it applies this at its next step (see rollout/engines in metrics.jsonl)")
    else:  # killed or not started yet: the request waits in scale.json for `rlvr train --resume`
        print(f"{run} is not running: the request for {args.engines} engine(s) is kept in {run}/scale.json and "
              "applied when the run continues (rlvr train --resume)")
    return 0


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="run a recipe on an embedded (or attached) Ray cluster")
    t.add_argument("recipe", nargs="?", help="recipe YAML file (optional with --resume RUN_DIR: its config.yaml)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. --set learner.lr=3e-5")
    t.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue the run from its newest checkpoint (default run dir: output_dir/name)")
    t.add_argument("--overwrite", action="store_true", help="start over in a run directory that already holds a run")
    t.set_defaults(fn=cmd_train)

    c = sub.add_parser("config", help="list every recipe field with its default and description")
    c.add_argument("--markdown", action="store_true", help="as a Markdown table (docs/config.md)")
    c.set_defaults(fn=cmd_config)

    cf = sub.add_parser("check-final", help="replay the last evaluation with plain transformers on final/")
    cf.add_argument("run_dir")
    cf.add_argument("--limit", type=int, help="replay only the first N samples (a real model takes seconds per prompt on a CPU)")
    cf.set_defaults(fn=cmd_check_final)

    sc = sub.add_parser("scale", help="grow or shrink a running training's vLLM engine pool")
    sc.add_argument("run_dir", metavar="RUN", help="the run directory (runs/<name>)")
    sc.add_argument("--engines", type=int, required=True, help="engines wanted")
    sc.set_defaults(fn=cmd_scale)
