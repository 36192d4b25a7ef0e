"""`rlvr submit` up to the runtime environment: what travels with a job, with no cluster involved."""

import shlex

import pytest
import yaml

from rlvr.cluster import jobs
from rlvr.config import RecipeError, parse_overrides

PLUGIN = 'from rlvr.verifiers.registry import register\n\n@register("{name}")\ndef f(response, ground_truth, *, prompt=None):\n    return 1.0\n'


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A recipe whose model is absolute, whose data is local, and whose plugins live outside rlvr."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (tmp_path / "train.jsonl").write_text('{"prompt": "1+1?", "ground_truth": "2", "verifier": "math"}\n')
    plugins = tmp_path / "plugins_dir"
    (plugins / "unit_pkg_rewards").mkdir(parents=True)
    (plugins / "unit_pkg_rewards" / "__init__.py").write_text(PLUGIN.format(name="unit_pkg"))
    (plugins / "unit_file_rewards.py").write_text(PLUGIN.format(name="unit_file"))
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.chdir(tmp_path)  # data paths in the recipe are relative to here
    recipe = {"name": "unit", "model": {"path": str(model)}, "data": {"train": [{"path": "train.jsonl"}]},
              "verifiers": {"plugins": ["unit_file_rewards", "unit_pkg_rewards", "json", "rlvr.verifiers.gsm8k"]}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    staging = tmp_path / "staging"
    staging.mkdir()
    return tmp_path, plugins, staging


def _sets(entrypoint: str) -> list[str]:
    argv = shlex.split(entrypoint)
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]


def test_recipe_plugins_rlvr_and_pip_travel(setup):
    tmp, plugins, staging = setup
    spec = jobs.build_train_job(tmp / "recipe.yaml", staging, overrides=["learner.lr=3e-5", "train.steps=3"],
                                pip=["langdetect==1.0.9"])
    env = spec.runtime_env
    assert env["working_dir"] == str(staging)
    assert (staging / "recipe.yaml").read_text() == (tmp / "recipe.yaml").read_text()
    # rlvr and the plugin package go as py_modules; the single-file plugin sits in the working_dir
    # (first on the job's PYTHONPATH); stdlib and rlvr's own modules are not shipped again.
    assert env["py_modules"] == [str(jobs.RLVR_DIR), str(plugins / "unit_pkg_rewards")]
    assert (staging / "unit_file_rewards.py").read_text() == (plugins / "unit_file_rewards.py").read_text()
    assert env["pip"] == ["langdetect==1.0.9"]
    assert "__pycache__" in env["excludes"]
    assert shlex.split(spec.entrypoint)[:5] == ["python", "-m", "rlvr.cli", "train", "recipe.yaml"]
    sets = _sets(spec.entrypoint)
    # attach to the job's cluster first, so the user's overrides still win over it
    assert sets[:3] == ["cluster.address=auto", "learner.lr=3e-5", "train.steps=3"]
    assert "data.train.0.path=data/train0-train.jsonl" in sets
    assert (staging / "data" / "train0-train.jsonl").is_file()
    assert spec.submission_id.startswith("rlvr-unit-")


def test_no_ship_rlvr_and_installed_modules(setup):
    tmp, plugins, staging = setup
    spec = jobs.build_train_job(tmp / "recipe.yaml", staging, ship_rlvr=False)
    assert spec.runtime_env["py_modules"] == [str(plugins / "unit_pkg_rewards")]
    assert "pip" not in spec.runtime_env
    assert jobs.module_path("yaml") is None  # site-packages: must be installed on the cluster
    assert jobs.module_path("rlvr.verifiers.gsm8k") is None  # travels inside rlvr


def test_missing_plugin_is_an_error_unless_pip_may_provide_it(setup):
    tmp, _, staging = setup
    with pytest.raises(jobs.JobError, match="'no_such_rewards' is not importable here"):
        jobs.build_train_job(tmp / "recipe.yaml", staging, overrides=["verifiers.plugins=[no_such_rewards]"])
    spec = jobs.build_train_job(tmp / "recipe.yaml", staging, overrides=["verifiers.plugins=[no_such_rewards]"],
                                pip=["no-such-rewards"])
    assert any("expecting it from --pip no-such-rewards" in n for n in spec.notes)


def test_bad_recipe_fails_before_anything_is_staged(setup):
    tmp, _, staging = setup
    with pytest.raises(RecipeError, match="rollout.engnes: unknown field") as e:
        jobs.build_train_job(tmp / "recipe.yaml", staging, overrides=["rollout.engnes=2"])
    assert "\n" not in str(e.value)
    assert not (staging / "recipe.yaml").exists()


def test_model_is_never_shipped(setup):
    tmp, _, staging = setup
    with pytest.raises(RecipeError, match="model.path: nowhere is relative and not found here"):
        jobs.build_train_job(tmp / "recipe.yaml", staging, overrides=["model.path=nowhere"])
    # a relative model that exists here is pointed at by its absolute path (shared storage, same machine)
    spec = jobs.build_train_job(tmp / "recipe.yaml", staging, overrides=["model.path=model"])
    assert f"model.path={tmp / 'model'}" in _sets(spec.entrypoint)
    assert not (staging / "model").exists()


def test_data_shipping_rules(setup, monkeypatch):
    tmp, _, staging = setup
    with pytest.raises(RecipeError, match="data.train.0.path: file not found: gone.jsonl"):
        jobs.build_train_job(tmp / "recipe.yaml", staging, overrides=["data.train.0.path=gone.jsonl"])
    # absolute and absent here: read on the cluster; hf: sources are downloaded there
    cluster_only = ["data.train.0.path=/cluster/only.jsonl", "data.eval=[{path: 'hf:openai/gsm8k'}]"]
    spec = jobs.build_train_job(tmp / "recipe.yaml", staging, overrides=cluster_only)
    assert _sets(spec.entrypoint) == ["cluster.address=auto", *cluster_only]  # no path rewritten
    # over the size limit: not copied, read at its absolute path
    monkeypatch.setattr(jobs, "SHIP_DATA_MAX_MB", 1e-6)
    spec = jobs.build_train_job(tmp / "recipe.yaml", staging)
    assert f"data.train.0.path={tmp / 'train.jsonl'}" in _sets(spec.entrypoint)
    assert any("over the" in n for n in spec.notes)


def test_paths_survive_yaml_parsing_of_overrides():
    for path in ["/data/a #1.jsonl", "data/x: y.jsonl", "123", "true", "plain/path.jsonl"]:
        [(key, value)] = parse_overrides([f"data.train.0.path={jobs._yaml_str(path)}"])
        assert value == path


def test_address_resolution(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert jobs.resolve_address() == jobs.DEFAULT_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:8265")
    assert jobs.resolve_address() == "http://10.0.0.5:8265"
    assert jobs.resolve_address("https://head:8265/") == "https://head:8265"  # --address wins
    for bad in ["auto", "ray://head:10001"]:
        with pytest.raises(jobs.JobError, match="not a dashboard URL"):
            jobs.resolve_address(bad)


def test_command_job_copies_files_and_ships_modules(setup):
    tmp, plugins, staging = setup
    rows = tmp / "rows.jsonl"
    rows.write_text("{}\n")
    spec = jobs.build_command_job(["python", "-m", "rlvr.cli", "verify", "--input", "rows.jsonl"], staging,
                                  files=[rows], modules=["unit_file_rewards", str(plugins / "unit_pkg_rewards")])
    assert spec.entrypoint == "python -m rlvr.cli verify --input rows.jsonl"
    assert (staging / "rows.jsonl").is_file() and (staging / "unit_file_rewards.py").is_file()
    assert spec.runtime_env["py_modules"] == [str(jobs.RLVR_DIR), str(plugins / "unit_pkg_rewards")]


def test_token_protected_cluster_is_a_one_line_hint(monkeypatch):
    import ray.job_submission
    from ray.exceptions import AuthenticationError

    def refuse(address):
        raise AuthenticationError("Authentication required: Unauthorized: Missing authentication token")

    monkeypatch.setattr(jobs, "_probe", lambda url: None)
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", refuse)
    with pytest.raises(jobs.JobError, match="export RAY_AUTH_MODE=token") as e:
        jobs.connect("http://127.0.0.1:8265")
    assert "\n" not in str(e.value)


def test_reward_file_next_to_the_recipe_travels_and_the_recipe_points_at_the_copy(setup):
    tmp, _, staging = setup
    (tmp / "proj").mkdir()
    (tmp / "proj" / "my_reward.py").write_text("def reward(completion, ground_truth, **row):\n    return 1.0\n")
    text = (tmp / "recipe.yaml").read_text().replace("- unit_file_rewards", "- my_reward.py:reward")
    (tmp / "proj" / "recipe.yaml").write_text(text.replace("train.jsonl", str(tmp / "train.jsonl")))
    spec = jobs.build_train_job(tmp / "proj" / "recipe.yaml", staging)
    assert (staging / "my_reward.py").is_file()  # found relative to the recipe, not the current directory
    sets = dict(s.split("=", 1) for s in _sets(spec.entrypoint))
    assert yaml.safe_load(sets["verifiers.plugins"])[0] == "my_reward.py:reward"  # resolves in the working_dir
