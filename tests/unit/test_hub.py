"""Hub model ids (rlvr.hub): resolved from a cache built here, offline; a missing id is one line with the fix."""
import pytest

from rlvr import hub
from rlvr.cli import main
from rlvr.config import RecipeError, load_recipe
from hub_cache import COMMIT, hub_cache


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, toy_dir):
    root = hub_cache(tmp_path / "hub", "toyorg/toy-addition", toy_dir / "model")
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_resolved", {})
    return root


def test_hub_id_resolves_to_the_cached_snapshot(offline_cache):
    local, commit = hub.resolve("toyorg/toy-addition")
    assert commit == COMMIT and local.endswith(f"snapshots/{COMMIT}")
    assert hub.local_path("toyorg/toy-addition", COMMIT) == local  # the pinned commit finds the same files


def test_local_path_wins_and_is_not_a_hub_id(toy_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(toy_dir.parent)
    assert not hub.is_hub_id("toy-addition/model")  # exists here: a local path, even though it reads org/name
    assert hub.resolve("toy-addition/model") == ("toy-addition/model", None)
    with pytest.raises(hub.ModelPathError, match="not a Hub id"):
        hub.resolve(str(tmp_path / "a" / "b"))


def test_missing_hub_id_offline_is_one_line_naming_the_fetch_command(offline_cache):
    with pytest.raises(hub.ModelPathError) as e:
        hub.resolve("toyorg/absent", field="model.path")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("model.path: toyorg/absent is not a local directory")
    assert "`hf download toyorg/absent`" in msg and "HF_HUB_OFFLINE=1" in msg


def _recipe(tmp_path, toy_dir, model):
    p = tmp_path / "r.yaml"
    p.write_text(f"model: {{path: {model}}}\ndata: {{train: [{{path: {toy_dir / 'train.jsonl'}}}]}}\n")
    return p


def test_recipe_pins_the_resolved_commit(offline_cache, tmp_path, toy_dir):
    r = load_recipe(_recipe(tmp_path, toy_dir, "toyorg/toy-addition"))
    assert (r.model.path, r.model.revision) == ("toyorg/toy-addition", COMMIT)
    assert r.model_dump(mode="json")["model"]["revision"] == COMMIT  # what config.yaml is written from


def test_recipe_with_missing_hub_id_fails_before_any_cluster(offline_cache, tmp_path, toy_dir):
    with pytest.raises(RecipeError, match=r"^model\.path: toyorg/absent is not a local directory.*hf download toyorg/absent"):
        load_recipe(_recipe(tmp_path, toy_dir, "toyorg/absent"))


def test_eval_with_missing_hub_id_exits_2_in_one_line(offline_cache, toy_dir, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("vLLM started despite a missing model")
    monkeypatch.setattr("rlvr.engines.rollout.RolloutActor", boom)
    assert main(["eval", "--model", "toyorg/absent", "--revision", "v1", "--data", str(toy_dir / "eval.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--model: toyorg/absent@v1" in err and "hf download toyorg/absent --revision v1" in err


def test_judge_file_accepts_a_hub_id(offline_cache, tmp_path):
    from rlvr.config import load_model_sections

    p = tmp_path / "j.yaml"
    p.write_text("reward_models: {rm: {path: toyorg/toy-addition}}\n")
    assert load_model_sections(str(p)).reward_models["rm"].revision == COMMIT
    p.write_text("judges: {j: {path: toyorg/absent}}\n")
    with pytest.raises(ValueError, match="judges.j.path: toyorg/absent is not a local directory"):
        load_model_sections(str(p))


def test_a_name_in_external_paths_is_looked_up_in_the_cache_only(offline_cache, tmp_path, toy_dir, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")  # online: still no download for a declared name
    p = _recipe(tmp_path, toy_dir, "models/Qwen2.5-1.5B-Instruct")
    p.write_text(p.read_text() + "external_paths: {models/Qwen2.5-1.5B-Instruct: hf download Qwen/Qwen2.5-1.5B-Instruct "
                                 "--local-dir models/Qwen2.5-1.5B-Instruct}\n")
    with pytest.raises(RecipeError, match=r"^model\.path: no Hugging Face checkpoint at models/Qwen2.5-1.5B-Instruct "
                                          r"\(get it with: hf download Qwen/Qwen2.5-1.5B-Instruct"):
        load_recipe(p)
    p.write_text(p.read_text().replace("models/Qwen2.5-1.5B-Instruct", "toyorg/toy-addition"))
    assert load_recipe(p).model.revision == COMMIT  # declared and cached: used


def test_submit_leaves_a_hub_id_to_the_cluster(tmp_path, toy_dir):
    from rlvr.cluster.jobs import _model_sets

    notes = []
    r = load_recipe(_recipe(tmp_path, toy_dir, "Qwen/Qwen2.5-0.5B-Instruct"), check_files=False)
    assert _model_sets(r, notes) == [] and "Hub model Qwen/Qwen2.5-0.5B-Instruct, fetched on the cluster" in notes[0]
