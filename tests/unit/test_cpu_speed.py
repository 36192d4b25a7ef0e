"""CPU step-time choices: engine cores, the held-out constraint split and kinds, `rlvr bench step`'s arithmetic."""
import json
import os

import pytest

from rlvr.cli import main
from rlvr.config import Recipe
from rlvr.data.constraints import IDS, SPLITS, TASKS, check_kinds, generate_constraint_prompts, split_prompts
from rlvr.engines.async_llm import bind_cpu_threads
from rlvr.loop.bench_step import format_step, step_figures
from rlvr.loop.engines import engine_cpu_threads


def recipe(**sections) -> Recipe:
    base = {"model": {"path": "m"}, "data": {"train": [{"path": "t.jsonl"}]}, "cluster": {"num_cpus": 8}}
    for k, v in sections.items():
        base.setdefault(k, {}).update(v)
    return Recipe.model_validate(base)


def test_engines_get_every_core_when_training_waits_and_their_share_when_it_runs():
    assert engine_cpu_threads(recipe()) == 8                                       # synchronous: turns
    assert engine_cpu_threads(recipe(rollout={"engines": 2})) == 4                 # shared among the engines
    assert engine_cpu_threads(recipe(train={"async_steps": 1}, rollout={"num_cpus": 3})) == 3  # learner runs too
    assert engine_cpu_threads(recipe(rollout={"cpu_threads": 5})) == 5             # the user's figure wins
    assert engine_cpu_threads(recipe(rollout={"cpu_threads": 0})) == 0             # vLLM's own binding


@pytest.fixture
def clean_bind_env(monkeypatch):
    for k in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr("rlvr.engines.async_llm._has_cuda", lambda: False)


def test_bind_cpu_threads_gives_each_engine_its_own_slice(clean_bind_env, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6, 7})
    assert bind_cpu_threads(2, engine_index=1) == [6, 7]
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "6,7" and os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"


def test_bind_cpu_threads_clamps_and_leaves_a_users_binding_alone(clean_bind_env, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert bind_cpu_threads(16) == [0, 1]
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1")
    assert bind_cpu_threads(2) is None and os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert bind_cpu_threads(0) is None and bind_cpu_threads(None) is None


def test_heldout_tasks_never_appear_in_training_rows(tmp_path):
    assert set(split_prompts(TASKS, "train", 5)).isdisjoint(split_prompts(TASKS, "heldout", 5))
    assert set(split_prompts(TASKS, "train", 5)) | set(split_prompts(TASKS, "heldout", 5)) == set(TASKS)
    files = {}
    for split in ("train", "heldout"):
        generate_constraint_prompts(300, 0, tmp_path / f"{split}.jsonl", max_constraints=1, split=split)
        files[split] = {json.loads(l)["messages"][0]["content"].split(". ")[0] for l in (tmp_path / f"{split}.jsonl").read_text().splitlines()}
    assert files["train"].isdisjoint(files["heldout"])
    with pytest.raises(ValueError, match="split must be one of"):
        split_prompts(TASKS, "test", 5)
    assert SPLITS == ("all", "train", "heldout")


def test_kinds_by_id_or_group_and_unknown_kinds_named(tmp_path, capsys):
    assert check_kinds(["startend"]) == [i for i in IDS if i.startswith("startend:")]
    assert check_kinds(["startend:end_checker", "startend:end_checker"]) == ["startend:end_checker"]
    out = tmp_path / "k.jsonl"
    assert main(["data", "constraints", "--n", "40", "--kinds", "startend:end_checker,detectable_content",
                 "--max-constraints", "2", "--output", str(out)]) == 0
    ids = {i for l in out.read_text().splitlines() for i in json.loads(l)["ground_truth"]["instruction_id_list"]}
    assert ids and ids <= {"startend:end_checker", "detectable_content:postscript", "detectable_content:number_placeholders"}
    capsys.readouterr()
    bad = tmp_path / "never.jsonl"
    assert main(["data", "constraints", "--n", "4", "--kinds", "startend,nonsense", "--output", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--kinds" in err[0] and "'nonsense'" in err[0]
    assert not bad.exists()


def test_step_figures_leave_out_the_first_step_and_take_medians():
    steps = [{"step": 1, "time/generation": 50, "time/learner_compute": 40, "time/training": 45, "time/weight_sync": 1, "time/step": 99},
             {"step": 2, "time/generation": 10, "time/learner_compute": 20, "time/training": 22, "time/weight_sync": 1, "time/step": 33},
             {"step": 3, "time/generation": 12, "time/learner_compute": 18, "time/training": 20, "time/weight_sync": 1, "time/step": 31},
             {"step": 3, "eval/accuracy": 0.5}]
    f = step_figures(steps, samples_per_step=64)
    assert f["time/generation"] == 11 and f["time/step"] == 32 and f["steps"] == 2
    assert f["samples/s"] == pytest.approx(2.0)
    table = format_step([("as written", f), ("faster", {**f, "time/step": 16.0, "samples/s": 4.0})])
    assert "2.00x" in table.splitlines()[2] and "1.00x" in table.splitlines()[1]
    with pytest.raises(ValueError, match="no steps"):
        step_figures([{"eval/accuracy": 1.0}], samples_per_step=1)
