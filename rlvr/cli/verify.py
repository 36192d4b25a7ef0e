"""`rlvr verify | verifiers` and `rlvr bench verifiers`: score a file of responses offline, list the registered
verifiers, measure them. Each returns the process exit code."""
from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from rlvr.verifiers.base import PluginError, VerifyRequest
from rlvr.verifiers.config import VerifierConfig
from rlvr.verifiers.pool import VerifierPool
from rlvr.verifiers.registry import _REGISTRY, list_verifiers, load_plugins, unknown_message

_ROW_FIELDS = ("id", "prompt", "response", "verifier", "ground_truth")


def cmd_verifiers(plugins: list[str]) -> int:
    """Print the table of registered verifiers (built-ins, listed plugins, entry points)."""
    from rich.console import Console
    from rich.table import Table
    try:
        load_plugins(plugins)
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = Table(title="verifiers")
    for col in ("name", "description", "source"):
        table.add_column(col)
    for name, desc, source in list_verifiers():
        table.add_row(name, desc, source)
    Console().print(table)
    return 0


def _read_rows(input_path: str, also_known: set[str] = frozenset()) -> tuple[list[tuple[int, dict]], list[tuple[int, Any, str]]]:
    """Good rows (line, row) and bad rows (line, id or None, reason)."""
    good, bad = [], []
    stream = sys.stdin if input_path == "-" else open(input_path, encoding="utf-8")
    with stream if input_path != "-" else nullcontext(stream):
        for n, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                bad.append((n, None, f"not valid JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(row, dict):
                bad.append((n, None, "not a JSON object"))
                continue
            missing = [k for k in ("response", "verifier", "ground_truth") if k not in row]
            if missing:
                bad.append((n, row.get("id"), f"missing field(s) {', '.join(missing)}"))
                continue
            names = [row["verifier"]] if isinstance(row["verifier"], str) else row["verifier"]
            if not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names):
                bad.append((n, row.get("id"), "verifier must be a name or a list of names"))
                continue
            unknown = [x for x in names if x not in _REGISTRY and x not in also_known]
            if unknown:
                bad.append((n, row.get("id"), unknown_message(unknown, also_known, "field 'verifier'")))
                continue
            if not isinstance(row["response"], str):
                bad.append((n, row.get("id"), "response must be a string"))
                continue
            good.append((n, row))
    return good, bad


def with_judges(pool: VerifierPool, judges_yaml: str | None):
    """The pool alone, or a Scorer with the judges and reward models of ``judges_yaml`` started in this
    process (no Ray): own-engine judges load their vLLM engine here."""
    if not judges_yaml:
        return pool
    from rlvr.config import load_model_sections
    from rlvr.engines.model_verifiers import local_model_verifiers
    from rlvr.verifiers.scorer import Scorer

    sec = load_model_sections(judges_yaml)
    models = local_model_verifiers(sec.judges, sec.reward_models)
    scorer = Scorer(pool, models, pool.config)
    try:
        models.wait_ready()
    except BaseException:
        scorer.close()
        raise
    return scorer


def model_names(judges_yaml: str | None) -> set[str]:
    """Verifier names the judges file declares (ValueError with one line if it is bad)."""
    if not judges_yaml:
        return set()
    from rlvr.config import load_model_sections
    from rlvr.verifiers.scorer import check_model_verifiers, model_name_map

    sec = load_model_sections(judges_yaml)
    check_model_verifiers(sec.judges, sec.reward_models, set(_REGISTRY))
    return set(model_name_map(sec.judges, sec.reward_models))


def cmd_verify(input_path: str, output_path: str, config: VerifierConfig, judges: str | None = None) -> int:
    """Score a JSONL file of ``{id, prompt, response, verifier, ground_truth}`` rows.

    Writes ``{id, score, details[, error]}`` per input line, in input order (``-`` = stdout).
    Bad rows are reported on stderr with their line number, written with score 0 and the
    reason, and make the exit code 1; all other rows are still scored. Input that cannot be used at
    all (a missing input file, an output folder that does not exist, a bad plugin or judges file)
    is exit code 2 with one line, before anything is scored, as for every rlvr command.
    """
    out_dir = Path(output_path).parent
    if output_path != "-" and (Path(output_path).is_dir() or not out_dir.is_dir()):
        what = "is a directory" if Path(output_path).is_dir() else f"folder {out_dir} does not exist"
        print(f"rlvr: error: --output: {output_path} {what}", file=sys.stderr)
        return 2
    try:
        load_plugins(config.plugins)
        extra = model_names(judges)
        good, bad = _read_rows(input_path, extra)
    except (PluginError, ValueError) as e:
        print(f"rlvr: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"rlvr: error: --input: cannot read {input_path} ({e.strerror})", file=sys.stderr)
        return 2
    for n, _, reason in bad:
        print(f"{input_path}:{n}: {reason}", file=sys.stderr)
    # Other fields of a row reach verifiers that take **row (plain `file.py:function` plugins).
    requests = [VerifyRequest(response=row["response"], ground_truth=row["ground_truth"], verifier=row["verifier"],
                              prompt=row.get("prompt"), extra={k: v for k, v in row.items() if k not in _ROW_FIELDS} or None)
                for _, row in good]
    with with_judges(VerifierPool(config), judges) as pool:
        results = pool.score(requests, progress=True)
        stats = pool.stats()
    judged = {k: v for k, v in stats.items() if k.startswith(("judge/", "reward_model/"))}
    if judged:
        print("model verifiers: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(judged.items())), file=sys.stderr)
    out_rows: list[tuple[int, dict]] = []
    for (n, row), res in zip(good, results):
        rec = {"id": row.get("id", n), "score": res.score, "details": res.details}
        if res.error:
            rec["error"] = res.error
        out_rows.append((n, rec))
    for n, rid, reason in bad:
        out_rows.append((n, {"id": rid if rid is not None else n, "score": 0.0, "details": {}, "error": reason,
                             "line": n}))
    out_rows.sort(key=lambda x: x[0])
    sink = sys.stdout if output_path == "-" else open(output_path, "w", encoding="utf-8")
    with sink if output_path != "-" else nullcontext(sink):
        for _, rec in out_rows:
            sink.write(json.dumps(rec, default=str) + "\n")
    errors = sum(1 for r in results if r.error)
    mean = sum(r.score for r in results) / len(results) if results else 0.0
    print(f"scored {len(results)} rows (mean score {mean:.4f}, {errors} with verifier errors); "
          f"{len(bad)} bad rows", file=sys.stderr)
    return 1 if bad else 0


def bench_verifiers(config: VerifierConfig | None = None, quick: bool = False, judges: str | None = None,
                    requests: int = 64) -> int:
    """Print checks per second of each built-in, measured through a VerifierPool; with ``judges``, requests per
    second of the judges and reward models declared there instead."""
    if judges:
        try:
            return run_model_bench(judges, requests=requests)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    from rlvr.verifiers.bench import run_bench
    return run_bench(config or VerifierConfig(), quick=quick)


def run_model_bench(judges_yaml: str, requests: int = 64) -> int:
    """`rlvr bench verifiers --judges FILE`: requests/s of every judge and reward model declared in FILE."""
    from rich.console import Console
    from rich.table import Table

    from rlvr.config import load_model_sections
    from rlvr.verifiers.bench import measure_models
    from rlvr.verifiers.scorer import model_name_map

    sec = load_model_sections(judges_yaml)
    names = [n for n, (_, entry) in model_name_map(sec.judges, sec.reward_models).items() if n == entry]
    t0 = time.perf_counter()
    with with_judges(VerifierPool(VerifierConfig(workers=0)), judges_yaml) as scorer:
        startup = time.perf_counter() - t0
        rows = measure_models(scorer, names, requests)
    table = Table(title=f"model verifiers ({judges_yaml}, in this process)")
    for col in ("verifier", "requests", "seconds", "requests/s", "p50 s", "p99 s", "tokens", "mean score", "errors"):
        table.add_column(col, justify="right" if col != "verifier" else "left")
    for r in rows:
        st, name = r["stats"], r["verifier"]
        p = f"judge/{name}/" if f"judge/{name}/requests" in st else f"reward_model/{name}/"
        table.add_row(name, str(r["requests"]), f"{r['seconds']:.2f}", f"{r['per_s']:,.1f}",
                      f"{st.get(p + 'latency_p50_s', st.get(p + 'batch_latency_p50_s', float('nan'))):.3f}",
                      f"{st.get(p + 'latency_p99_s', st.get(p + 'batch_latency_p99_s', float('nan'))):.3f}",
                      f"{st.get(p + 'tokens', 0):.0f}", f"{r['mean_score']:.3f}", str(r["errors"]))
    console = Console() if Console().is_terminal else Console(width=160)
    console.print(table)
    console.print(f"start-up (engines and models loaded): {startup:.1f}s")
    return 0


# --------------------------------------------------------------------------- the command

def run_verify(args) -> int:
    from rlvr.verifiers import VerifierConfig

    cfg = VerifierConfig(timeout_s=args.timeout, workers=args.workers, plugins=args.plugin or [])
    return cmd_verify(args.input, args.output, cfg, judges=args.judges)


def run_verifiers(args) -> int:

    return cmd_verify(args.plugin or [])


def add_parsers(sub) -> None:
    v = sub.add_parser("verify", help="score a JSONL file of responses offline")
    v.add_argument("--input", required=True)
    v.add_argument("--output", required=True)
    v.add_argument("--plugin", action="append", help="verifier plugin: module, file.py or file.py:function (repeatable)")
    v.add_argument("--timeout", type=float, default=10.0)
    v.add_argument("--workers", type=int, default=2)
    v.add_argument("--judges", metavar="YAML", help="judges: / reward_models: sections (a recipe works) for rows naming them")
    v.set_defaults(fn=run_verify)

    ls = sub.add_parser("verifiers", help="list registered verifiers")
    ls.add_argument("--plugin", action="append", help="verifier plugin: module, file.py or file.py:function (repeatable)")
    ls.set_defaults(fn=run_verifiers)
