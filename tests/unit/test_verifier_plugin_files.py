"""Reward functions from a file: `file.py`, `file.py:function` (no decorator) and a module from the
start directory, in the caller and in real verifier worker processes; recipe paths resolve like base:."""
import json
import os
import sys

import pytest

from rlvr.config import load_recipe
from rlvr.verifiers import VerifierConfig, VerifierPool, VerifyRequest, load_plugins
from rlvr.verifiers.base import PluginError
from rlvr.cli.verify import cmd_verify
from rlvr.verifiers.registry import _LOADED_SPECS, _REGISTRY, check_verifier_names, unregister

REWARD = '''
def ends_with_truth(completion, ground_truth, **row):
    """1 if the completion ends with the ground truth; a unit column scales nothing but must arrive."""
    assert row.get("unit") in (None, "apples"), row
    return float(completion.strip().endswith(str(ground_truth)) and row.get("unit", "apples") == "apples")
'''

DECORATED = '''
from rlvr.verifiers import register

@register("t_file_decorated")
def check(response, ground_truth, *, prompt=None):
    return response == ground_truth
'''


@pytest.fixture
def clean_registry():
    before = set(_REGISTRY)
    specs = list(_LOADED_SPECS)
    yield
    for n in set(_REGISTRY) - before:
        unregister(n)
    _LOADED_SPECS[:] = specs


def test_plain_function_from_a_file_runs_in_the_caller_and_in_workers(tmp_path, clean_registry):
    (tmp_path / "rewards.py").write_text(REWARD)
    spec = f"{tmp_path / 'rewards.py'}:ends_with_truth"
    load_plugins([spec])
    assert "ends_with_truth" in _REGISTRY and _REGISTRY["ends_with_truth"].source == spec
    load_plugins([spec])  # loading twice (pool + prepare) is harmless
    reqs = [VerifyRequest("so 12", "12", "ends_with_truth", extra={"unit": "apples"}),
            VerifyRequest("so 12", "12", "ends_with_truth", extra={"unit": "pears"}),
            VerifyRequest("so 13", "12", "ends_with_truth")]
    for workers in (0, 1):  # in-process, and a real worker subprocess that must import the file itself
        with VerifierPool(VerifierConfig(workers=workers, plugins=[spec])) as pool:
            got = pool.score(reqs)
        assert [r.score for r in got] == [1.0, 0.0, 0.0], [r.error for r in got]


def test_decorated_file_and_module_from_the_start_directory(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "decorated.py").write_text(DECORATED)
    pkg = tmp_path / "my_project"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "verifiers.py").write_text(DECORATED.replace("t_file_decorated", "t_module_from_cwd"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    load_plugins(["decorated.py", "my_project.verifiers"])  # relative: against the current directory here
    assert {"t_file_decorated", "t_module_from_cwd"} <= set(_REGISTRY)
    with VerifierPool(VerifierConfig(workers=1, plugins=["decorated.py", "my_project.verifiers"])) as pool:
        got = pool.score([VerifyRequest("x", "x", "t_file_decorated"), VerifyRequest("x", "y", "t_module_from_cwd")])
    assert [r.score for r in got] == [1.0, 0.0], [r.error for r in got]


def test_bad_plugin_specs_are_one_line(tmp_path, clean_registry):
    (tmp_path / "rewards.py").write_text(REWARD)
    with pytest.raises(PluginError, match="has no function 'nope'"):
        load_plugins([f"{tmp_path / 'rewards.py'}:nope"])
    with pytest.raises(PluginError, match="cannot import verifier plugin '.*missing.py': FileNotFoundError"):
        load_plugins([str(tmp_path / "missing.py")])


def test_recipe_plugin_paths_resolve_against_the_recipe_file(tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "base.yaml").write_text("name: t\nmodel: {path: m}\ndata: {train: [{path: d.jsonl}]}\n"
                                    "verifiers: {plugins: [rewards.py:ends_with_truth, my_project.verifiers]}\n"
                                    "environments: {plugins: [envs/tools.py]}\n")
    (proj / "sub").mkdir()
    (proj / "sub" / "child.yaml").write_text("base: ../base.yaml\ntrain: {steps: 1}\n")
    monkeypatch.chdir(tmp_path)
    r = load_recipe(proj / "sub" / "child.yaml", check_files=False)
    assert r.verifiers.plugins == [f"{proj / 'rewards.py'}:ends_with_truth", "my_project.verifiers"]
    assert r.environments.plugins == [str(proj / "envs" / "tools.py")]


def test_unknown_verifier_names_the_field_and_the_known_names(tmp_path, capsys):
    with pytest.raises(PluginError, match=r"unknown verifier 'nope' in data\.train\.0\.verifier \(known: .*gsm8k.*math"):
        check_verifier_names(["nope"], field="data.train.0.verifier")
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"response": "1", "verifier": "nope", "ground_truth": "1"}) + "\n")
    assert cmd_verify(str(src), str(dst), VerifierConfig(workers=0)) == 1
    err = capsys.readouterr().err
    assert "in.jsonl:1: unknown verifier 'nope' in field 'verifier' (known: " in err and "math" in err


def test_rlvr_verify_uses_a_reward_file_and_passes_other_row_fields(tmp_path, capsys, clean_registry):
    (tmp_path / "rewards.py").write_text(REWARD)
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"id": i, "response": resp, "verifier": "ends_with_truth", "ground_truth": "7",
                                       "unit": unit}) + "\n"
                           for i, (resp, unit) in enumerate([("so 7", "apples"), ("so 7", "pears"), ("8", "apples")])))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = cmd_verify(str(src), str(dst), VerifierConfig(workers=1, plugins=["rewards.py:ends_with_truth"]))
    finally:
        os.chdir(cwd)
    assert code == 0, capsys.readouterr().err
    assert [json.loads(x)["score"] for x in dst.read_text().splitlines()] == [1.0, 0.0, 0.0]
