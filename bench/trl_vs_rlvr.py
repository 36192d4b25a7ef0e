"""rlvr against TRL's GRPOTrainer on the same machine, model, prompts and batch (issue #25's comparison).

Both sides train SmolLM2-135M-Instruct with GRPO on the synthetic IFEval-constraint prompts, scored by the
same `ifeval` check (prompt-level strict share of followed instructions): 4 prompts x 8 completions of at
most 64 tokens per optimizer step, temperature 1.0, lr 2e-6, no KL term, micro-batches of 8, full
fine-tuning. TRL runs with its defaults otherwise (generation by transformers' `generate`, loss `dapo`)
except gradient checkpointing, which TRL turns on by default and which only costs time at this size:
it is turned off so that TRL is measured at its faster setting.

Each row runs `--steps` optimizer steps in a fresh process, one after the other, so that rows never
share the cores. The first step is start-up and is dropped; samples/s is 32 / the median step time.
Every ratio is against the first TRL row, measured in the same command. Extra rows: `--trl K=V,...`
(GRPOConfig fields, or `lora=RANK` for a peft adapter on all linear layers, alpha 2 x rank) and
`--rlvr K=V,...` (recipe overrides).

TRL is installed into a venv of its own (`.cache/rlvr/trl-venv`, `trl==1.16.0`) that reads torch,
transformers and the rest from rlvr's venv through a .pth file, so both sides use the same torch build.

  python bench/trl_vs_rlvr.py                    # fp32 on both sides, full fine-tuning
  python bench/trl_vs_rlvr.py --dtype bfloat16   # bf16 on both sides (slower on CPUs without avx512_bf16/AMX)
  python bench/trl_vs_rlvr.py --trl gradient_checkpointing=true --trl lora=16 \
      --rlvr "learner.lora={rank: 16, alpha: 32, sync: merged}" --rlvr train.async_steps=1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / ".cache/rlvr/smollm2-135m"
DATA = ROOT / ".cache/rlvr/data/constraints_train.jsonl"
RECIPE = ROOT / "recipes/smollm2_ifeval_cpu.yaml"
TRL_VERSION = "1.16.0"
PROMPTS, N, MAX_TOKENS, LR, MICRO = 4, 8, 64, 2e-6, 8


def ensure_inputs() -> None:
    rlvr = [sys.executable, "-m", "rlvr.cli"]
    if not (MODEL / "config.json").exists():
        subprocess.run(rlvr + ["model", "smollm2"], check=True, cwd=ROOT)
    if not DATA.exists():
        subprocess.run(rlvr + ["data", "constraints", "--n", "2000", "--seed", "0", "--output", str(DATA)],
                       check=True, cwd=ROOT)


def trl_python(venv: Path) -> Path:
    """The TRL venv's python, made on first use: its own trl, everything else read from this interpreter's site."""
    py = venv / "bin/python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "rlvr_base.pth").write_text(sysconfig.get_paths()["purelib"] + "\n" + str(ROOT) + "\n")
    have = subprocess.run([str(py), "-c", "import trl; print(trl.__version__)"], capture_output=True, text=True)
    if have.stdout.strip() != TRL_VERSION:
        print(f"installing trl=={TRL_VERSION} into {venv}", file=sys.stderr, flush=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", f"trl=={TRL_VERSION}"], check=True)
    return py


def median_step(stamps: list[float]) -> float:
    """The median step time from the ends of steps 1..k: the gaps are steps 2..k (step 1 is start-up)."""
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    if not gaps:
        raise ValueError("fewer than 2 steps finished")
    return statistics.median(gaps)


# ---- the TRL side: runs inside the TRL venv (`--side trl`) ----------------------------------------------

def run_trl_side(steps: int, dtype: str, out: Path, overrides: dict) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.verifiers.ifeval import verify_ifeval

    rows = [json.loads(line) for line in DATA.read_text().splitlines()[: PROMPTS * (steps + 2)]]
    dataset = Dataset.from_list([{"prompt": r["messages"], "ground_truth": json.dumps(r["ground_truth"])}
                                 for r in rows])

    def ifeval_reward(completions, ground_truth, **_):
        return [verify_ifeval(c[-1]["content"], json.loads(g))[0] for c, g in zip(completions, ground_truth)]

    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                stamps.append(time.perf_counter())  # the first step's start: its own time is start-up

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())

    bf16 = dtype == "bfloat16"
    overrides = dict(overrides)
    lora = int(overrides.pop("lora", 0))
    model = AutoModelForCausalLM.from_pretrained(str(MODEL), dtype=torch.bfloat16 if bf16 else torch.float32)
    settings = dict(
        output_dir=str(out / "trl-run"), use_cpu=True, bf16=bf16, seed=0, max_steps=steps,
        num_generations=N, per_device_train_batch_size=MICRO, gradient_accumulation_steps=PROMPTS * N // MICRO,
        max_completion_length=MAX_TOKENS, temperature=1.0, learning_rate=LR, beta=0.0,
        gradient_checkpointing=False, save_strategy="no", report_to="none", logging_steps=1,
        dataloader_num_workers=0)
    settings.update(overrides)
    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=lora, lora_alpha=2 * lora, task_type="CAUSAL_LM", target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    trainer = GRPOTrainer(model=model, reward_funcs=ifeval_reward, args=GRPOConfig(**settings), train_dataset=dataset,
                          processing_class=AutoTokenizer.from_pretrained(str(MODEL)), callbacks=[Stamp()],
                          peft_config=peft_config)
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    (out / "trl.json").write_text(json.dumps({"stamps": stamps, "mean_length": lengths,
                                              "threads": torch.get_num_threads()}))


def parse_pairs(text: str) -> dict:
    """'a=1,b=true' -> {'a': 1, 'b': True} (values read as YAML)."""
    import yaml

    pairs = [kv.split("=", 1) for kv in text.split(",") if kv.strip()]
    return {k.strip(): yaml.safe_load(v) for k, v in pairs}


def trl_figures(py: Path, steps: int, dtype: str, tmp: Path, overrides: str) -> dict:
    t0 = time.time()
    out = Path(tempfile.mkdtemp(dir=tmp))
    proc = subprocess.run([str(py), __file__, "--side", "trl", "--steps", str(steps), "--dtype", dtype,
                           "--out", str(out), "--trl", overrides], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit("TRL side failed:\n" + "\n".join(proc.stderr.strip().splitlines()[-15:]))
    got = json.loads((out / "trl.json").read_text())
    step = median_step(got["stamps"][1:])  # stamps[0] is the first step's start; stamps[1] its end
    return {"step s": step, "samples/s": PROMPTS * N / step, "wall s": time.time() - t0,
            "mean length": statistics.mean(got["mean_length"][1:] or got["mean_length"])}


def rlvr_figures(steps: int, dtype: str, extra: list[str], tmp: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from rlvr.loop.bench_step import run_variant

    overrides = [f"model.dtype={dtype}", f"train.prompts_per_step={PROMPTS}", f"rollout.n={N}",
                 f"rollout.max_tokens={MAX_TOKENS}", f"learner.lr={LR}", f"learner.micro_batch_size={MICRO}",
                 "algorithm.kl_coef=0.0", "rollout.temperature=1.0", *extra]
    f = run_variant(str(RECIPE), overrides, steps, Path(tempfile.mkdtemp(dir=tmp)), "rlvr")
    return {"step s": f["time/step"], "samples/s": f["samples/s"], "wall s": f["wall s"],
            "generation s": f["time/generation"], "learner s": f["time/learner_compute"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=5, help="optimizer steps per row (the first is dropped)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--venv", default=str(ROOT / ".cache/rlvr/trl-venv"))
    p.add_argument("--trl", action="append", default=[], help="another TRL row: GRPOConfig K=V,... or lora=RANK")
    p.add_argument("--rlvr", action="append", default=[], help="another rlvr row: recipe overrides K=V,...")
    p.add_argument("--side", choices=["both", "trl"], default="both", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side == "trl":
        return run_trl_side(a.steps, a.dtype, Path(a.out), parse_pairs(a.trl[0] if a.trl else ""))
    ensure_inputs()
    py = trl_python(Path(a.venv))
    rows = []
    with tempfile.TemporaryDirectory(prefix="rlvr-vs-trl-") as tmp:
        for spec in [""] + a.trl:
            print(f"TRL {TRL_VERSION} GRPOTrainer {spec}: {a.steps} steps...", file=sys.stderr, flush=True)
            f = trl_figures(py, a.steps, a.dtype, Path(tmp), spec)
            rows.append((f"TRL {spec}".strip(), f, f"mean completion length {f['mean length']:.1f}"))
        for spec in [""] + a.rlvr:
            print(f"rlvr {spec}: {a.steps} steps...", file=sys.stderr, flush=True)
            extra = [kv.strip() for kv in split_overrides(spec)]
            f = rlvr_figures(a.steps, a.dtype, extra, Path(tmp))
            rows.append((f"rlvr {spec}".strip(), f, f"generation {f['generation s']:.2f} s, learner {f['learner s']:.2f} s"))
    base = rows[0][1]["samples/s"]
    print(f"SmolLM2-135M-Instruct, {PROMPTS} prompts x {N} completions <= {MAX_TOKENS} tokens, {a.dtype}, "
          f"{os.cpu_count()} cores; medians over {a.steps - 1} steps after the first; ratio: samples/s / the first row's")
    print(f"{'row':58s} {'step s':>7s} {'samples/s':>9s} {'ratio':>6s} {'wall s':>7s}  detail")
    for label, f, detail in rows:
        print(f"{label[:58]:58s} {f['step s']:7.2f} {f['samples/s']:9.2f} {f['samples/s'] / base:5.2f}x {f['wall s']:7.1f}  {detail}")


def split_overrides(spec: str) -> list[str]:
    """'a=1,b={x: 1, y: 2}' -> ['a=1', 'b={x: 1, y: 2}']: commas inside braces or brackets stay."""
    parts, depth, cur = [], 0, ""
    for ch in spec:
        depth += ch in "{["
        depth -= ch in "}]"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [x for x in parts + [cur] if x.strip()]


if __name__ == "__main__":
    main()
