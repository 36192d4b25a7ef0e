"""`rlvr train`: which run directory a start may use (fresh, resumed, overwritten), then the Trainer."""
from __future__ import annotations

import sys
from pathlib import Path


def _fail(msg: str, code: int = 2) -> int:
    print(f"rlvr: error: {msg}", file=sys.stderr)
    return code


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

    from rlvr.checkpoint import CheckpointError
    from rlvr.config import RecipeError

    from rlvr.checkpoint import completed_steps, has_checkpoint, is_running

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
            from rlvr.loop.trainer import resume_point

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
        return _fail(str(e))
    from rlvr.cluster.placement import PreflightError

    if prep.report:
        print(prep.report)
    trainer = Trainer(prep, resume=point)
    try:
        s = trainer.run(point)
    except PreflightError as e:  # the plan does not fit the cluster: say which fields to change
        return _fail(str(e))
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
