"""The `rlvr eval` command: a model directory and data files in, accuracy and pass@k out.

Rows are loaded and prompts rendered exactly as the trainer does (rlvr.data), completions come
from the trainer's RolloutActor (a plain class, used here without Ray), scores from the
VerifierPool, numbers from rlvr.evaluation. Every input check happens before vLLM starts.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rlvr.models import context_length as model_context


class EvalInputError(ValueError):
    """Bad `rlvr eval` input, with a one-line message naming the option or file."""


@dataclass
class EvalInputs:
    rows: list[dict]
    prompts: list[str]
    greedy: bool
    temperature: float


def sampling(n: int, temperature: float | None) -> tuple[bool, float]:
    """(greedy, temperature): greedy for one sample unless a temperature is given; several
    samples are drawn at the given temperature, 1.0 by default."""
    if temperature is not None and temperature < 0:
        raise EvalInputError(f"--temperature must be >= 0, got {temperature:g}")
    if n > 1 and temperature == 0:
        raise EvalInputError(f"--temperature 0 is greedy decoding, which gives one answer per prompt; use --n 1 or a "
                             f"temperature > 0 for --n {n}")
    if temperature is None:
        return n == 1, 1.0
    return temperature == 0, temperature


def prepare_inputs(args) -> EvalInputs:
    """Check every option, load the tokenizer and the rows, render the prompts; EvalInputError on bad input."""
    from rlvr.data import DataError, DataSourceConfig, encode_prompts, load_sources, render_prompt
    from rlvr.environments.base import EnvironmentConfigError
    from rlvr.verifiers import PluginError, check_verifier_names, load_plugins

    for name, value in (("--n", args.n), ("--max-tokens", args.max_tokens), ("--limit", args.limit)):
        if value is not None and value < 1:
            raise EvalInputError(f"{name} must be >= 1, got {value}")
    greedy, temperature = sampling(args.n, args.temperature)
    if args.out is not None and Path(args.out).is_dir():
        raise EvalInputError(f"--out: {args.out} is a directory; give a file name such as results.json")
    try:
        load_plugins(args.plugin or [])
        from rlvr.cli.verify import model_names

        try:
            extra = model_names(getattr(args, "judges", None))
        except ValueError as e:
            raise EvalInputError(f"--judges: {e}") from None
        if args.verifier:
            check_verifier_names([args.verifier], also_known=extra, field="--verifier")
        rows = load_sources([DataSourceConfig(path=p, verifier=args.verifier, env=args.env) for p in args.data], strict=True)
        rows = list(rows)[:args.limit] if args.limit else list(rows)
        check_verifier_names((r["verifier"] for r in rows), also_known=extra, field="--data rows' verifier/dataset column")
        check_environment_names_for_eval(args, rows)
    except DataError as e:
        msg = str(e)
        # strict loading names the first row lacking a verifier; say how to supply one
        raise EvalInputError(msg + (" (name one with --verifier)" if msg.endswith("no verifier") else "")) from None
    except (PluginError, EnvironmentConfigError) as e:
        raise EvalInputError(str(e)) from None
    if not rows:
        raise EvalInputError(f"--data: no rows in {', '.join(args.data)}")
    args.model_dir, args.model_commit = model_location(args.model, getattr(args, "revision", None))
    tokenizer = load_tokenizer(args.model_dir)
    prompts = [render_prompt(tokenizer, r) for r in rows]
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "sequence longer than model_max_length" warning would precede our one line
    try:
        token_ids = encode_prompts(tokenizer, prompts)
    finally:
        hf_logging.set_verbosity(level)
    check_prompt_lengths(rows, token_ids, context_length(args.model_dir, args.max_model_len))
    return EvalInputs(rows, prompts, greedy, temperature)


def check_environment_names_for_eval(args, rows: list[dict]) -> None:
    """Environment plugins load and every row's environment exists (before any engine starts)."""
    from rlvr.environments import check_environment_names, load_environment_plugins

    if args.max_turns is not None and args.max_turns < 1:
        raise EvalInputError(f"--max-turns must be >= 1, got {args.max_turns}")
    load_environment_plugins(args.env_plugin or [])
    check_environment_names(r["env"] for r in rows if r.get("env"))


def context_length(model: str, max_model_len: int | None) -> int | None:
    """The context vLLM will use (see models.context_length); --max-model-len must be positive."""
    if max_model_len is not None and max_model_len < 1:
        raise EvalInputError(f"--max-model-len must be >= 1, got {max_model_len}")
    return model_context(model, max_model_len)


def check_prompt_lengths(rows: list[dict], token_ids: list[list[int]], context: int | None) -> None:
    """vLLM rejects a prompt that fills the context (with a traceback, after start-up): refuse it here."""
    if context is None:
        return
    for row, ids in zip(rows, token_ids):
        if len(ids) >= context:
            src, i = row["source"], row["index"]
            where = f"line {i + 1}" if src.endswith((".jsonl", ".jsonl.gz")) else f"row {i}"
            raise EvalInputError(f"--data: {src} {where}: the prompt has {len(ids)} tokens with the chat template, "
                                 f"the model's context is {context} (--max-model-len)")


def model_location(model: str, revision: str | None) -> tuple[str, str | None]:
    """(local directory, Hub commit or None): a Hub id (org/name, not a local path) is fetched or found in the cache."""
    from rlvr.hub import ModelPathError, is_hub_id, resolve

    if not is_hub_id(model):
        return model, None  # a local directory, checked by load_tokenizer
    try:
        return resolve(model, revision, "--model")
    except ModelPathError as e:
        raise EvalInputError(str(e)) from None


def load_tokenizer(model: str):
    """The model directory's tokenizer; EvalInputError unless it is a local Hugging Face model directory."""
    path = Path(model)
    if not path.is_dir():
        raise EvalInputError(f"--model: not a directory: {model}")
    if not (path / "config.json").is_file():
        raise EvalInputError(f"--model: {model} has no config.json (expected a Hugging Face model directory)")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model)
    except Exception as e:  # transformers raises many types; the first line says what is missing
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise EvalInputError(f"--model: cannot load a tokenizer from {model} ({first})") from None


def cmd_eval(args) -> int:
    from rich.console import Console

    from rlvr.evaluation import sample_records, summarize, summary_table

    try:
        inp = prepare_inputs(args)
        if args.out is not None:
            try:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise EvalInputError(f"--out: cannot create the directory of {args.out} ({e.strerror})") from None
    except EvalInputError as e:
        print(f"rlvr: error: {e}", file=sys.stderr)
        return 2
    rows, prompts = inp.rows, inp.prompts
    mode = "greedy" if inp.greedy else f"{args.n} samples at temperature {inp.temperature:g}"
    print(f"evaluating {args.model} on {len(rows)} prompts ({mode}, at most {args.max_tokens} tokens)", file=sys.stderr)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from rlvr.data import encode_prompts
    from rlvr.engines.rollout import RolloutActor
    from rlvr.verifiers import VerifierConfig, VerifierPool, VerifyRequest

    t0 = time.time()
    # The whole device is ours here (no learner beside the engine), hence the higher memory share and every core.
    engine = RolloutActor(args.model_dir, seed=args.seed, dtype=args.dtype, max_model_len=args.max_model_len,
                          gpu_memory_utilization=0.9, cpu_threads=os.cpu_count())
    kwargs = dict(n=1 if inp.greedy else args.n, temperature=inp.temperature, max_tokens=args.max_tokens,
                  greedy=inp.greedy, track_versions=False)

    async def generate_all():
        t_gen = None
        try:
            await engine.ready()
            t_gen = time.time()
            limits = {"max_turns": args.max_turns} if args.max_turns else {}
            env_kw = dict(env_options={}, plugins=list(args.env_plugin or []), limits=limits)
            results = await asyncio.gather(*(
                engine.run_env(rows[k], env=rows[k]["env"], prompt_index=k, **env_kw, **kwargs) if rows[k].get("env")
                else engine.generate(ids, prompt_index=k, **kwargs)
                for k, ids in enumerate(encode_prompts(inp_tokenizer, prompts))))
            return results, time.time() - t_gen
        finally:
            await engine.shutdown()

    try:
        inp_tokenizer = load_tokenizer(args.model_dir)
        results, t_generation = asyncio.run(generate_all())
    except RuntimeError as e:
        print(f"rlvr: error: {e}", file=sys.stderr)
        return 1
    t_start = time.time() - t0 - t_generation
    comps = [c for res in results for c in res.completions]
    t0 = time.time()
    from rlvr.cli.verify import with_judges

    # Judges' own engines start only now, after the policy's engine has shut down.
    with with_judges(VerifierPool(VerifierConfig(plugins=args.plugin or [])), getattr(args, "judges", None)) as pool:
        scores = pool.score(VerifyRequest.for_completions(rows, prompts, comps))
        judged = {k: v for k, v in pool.stats().items() if k.startswith(("judge/", "reward_model/"))}
    if judged:
        print("model verifiers: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(judged.items())), file=sys.stderr)
    t_verify = time.time() - t0

    records = sample_records(rows, comps, scores, prompts)
    from rlvr.environments.trajectory import env_metrics

    env_summary = env_metrics([c.trajectory for c in comps if c.trajectory], prefix="")
    if env_summary:
        print("environments: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(env_summary.items())), file=sys.stderr)
    summary = summarize(records)
    console = Console()
    if not console.is_terminal:  # a pipe or log file has no width; rich would assume 80 and fold the labels
        console = Console(width=200)
    console.print(summary_table(summary, title=f"rlvr eval: {args.model}"))
    if args.out is not None:
        report = {"model": args.model, "revision": args.model_commit, "data": args.data, "n": summary["n"], "greedy": inp.greedy,
                  "temperature": 0.0 if inp.greedy else inp.temperature, "max_tokens": args.max_tokens,
                  "seed": args.seed, "seconds": {"engine_start": t_start, "generation": t_generation,
                                                 "verify": t_verify},
                  "summary": summary, "environments": env_summary, "samples": records}
        Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.out}: summary and {len(records)} samples", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- the command

def run_eval(args) -> int:

    return cmd_eval(args)


def add_parsers(sub) -> None:
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
    ev.set_defaults(fn=run_eval)
