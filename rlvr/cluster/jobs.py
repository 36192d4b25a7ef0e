"""Run `rlvr train` (or any command) on a running Ray cluster as a Ray job, and manage it.

A thin layer over ``ray.job_submission.JobSubmissionClient``. What travels with a job:

* ``working_dir``: a temporary directory holding the recipe as ``recipe.yaml`` and a copy of
  every local data file or directory the recipe names that is at most ``SHIP_DATA_MAX_MB``
  (larger ones, and ``hf:`` sources, are read on the cluster);
* ``py_modules``: the ``rlvr`` package itself (unless ``ship_rlvr=False``) and every
  ``verifiers.plugins`` and ``environments.plugins`` module found locally outside ``rlvr`` and
  outside site-packages;
* ``pip``: requirements given with ``--pip``.

The model is never shipped: ``model.path`` must exist on the cluster nodes. See docs/cluster.md.
"""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import site
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

if TYPE_CHECKING:
    from rlvr.config import Recipe

# rlvr.config (and with it torch, through the algorithm config) is imported only to build a train
# job, so that `rlvr status/logs/stop/jobs` start in a fraction of a second.

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# Data is uploaded through the head node's GCS (hard limit 512 MiB per package); past this size
# a file is better placed on shared storage once than re-uploaded with every job.
SHIP_DATA_MAX_MB = 50
RLVR_DIR = Path(__file__).resolve().parents[1]
EXCLUDES = ["__pycache__", "*.pyc"]
CONNECT_TIMEOUT_S = 10.0
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class JobError(RuntimeError):
    """A job-submission problem; the message is one line that says what to do."""


@dataclass
class JobSpec:
    """Everything `submit_job` needs; built (and checked) before any cluster is contacted."""

    entrypoint: str
    runtime_env: dict[str, Any]
    submission_id: str
    metadata: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- address and connection

def resolve_address(address: str | None = None) -> str:
    """--address, else $RAY_ADDRESS, else the local default; always an http(s) dashboard URL."""
    addr = (address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS).strip().rstrip("/")
    if "://" not in addr and addr != "auto":
        addr = f"http://{addr}"
    if not addr.startswith(("http://", "https://")):
        raise JobError(f"address {addr!r} is not a dashboard URL: pass --address http://HEAD:8265 "
                       "(the head node's dashboard) or set RAY_ADDRESS to it")
    return addr


@contextlib.contextmanager
def _without_env(*names: str) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _probe(url: str) -> None:
    """Fail fast on an unreachable cluster: Ray's own check has no timeout (minutes on a dead host)."""
    import requests

    try:
        requests.get(f"{url}/api/version", timeout=CONNECT_TIMEOUT_S)
    except requests.RequestException as e:
        reason = type(e).__name__
        raise JobError(f"cannot reach the Ray cluster at {url} ({reason}): start it (`ray start --head`) "
                       "or pass --address http://HEAD:8265 (the dashboard port) or set RAY_ADDRESS") from None


def connect(address: str | None = None):
    """A JobSubmissionClient for the dashboard at `address`; JobError with one line if unreachable."""
    url = resolve_address(address)
    _probe(url)
    import logging

    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    # Ray's SDK logs every package upload at INFO on stderr; our own notes say what is shipped.
    for name in ("ray.dashboard.modules.job.sdk", "ray.dashboard.modules.dashboard_sdk",
                 "ray._private.runtime_env.packaging"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        # The SDK lets RAY_ADDRESS override an explicit address; here --address wins.
        with _without_env("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
            return JobSubmissionClient(url)
    except AuthenticationError:
        raise JobError(f"the Ray cluster at {url} requires a token: export RAY_AUTH_MODE=token and put the "
                       "cluster's token in RAY_AUTH_TOKEN (or ~/.ray/auth_token)") from None
    except (OSError, RuntimeError, ValueError, KeyError) as e:  # e.g. another HTTP server at that port
        raise JobError(f"{url} does not answer as a Ray dashboard: {_first_line(e)}") from None


def _call(client, fn: Callable[..., Any], job_id: str, *args: Any) -> Any:
    """Run one SDK call; a missing job or a lost cluster becomes a one-line JobError."""
    import requests

    try:
        return fn(job_id, *args)
    except requests.RequestException as e:
        raise JobError(f"lost the Ray cluster at {client.get_address()} ({type(e).__name__})") from None
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            raise JobError(f"no job {job_id!r} on {client.get_address()} (`rlvr jobs` lists them)") from None
        raise JobError(f"{client.get_address()}: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ---------------------------------------------------------------- what travels with a job

def _installed_roots() -> list[Path]:
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    return [Path(p).resolve() for p in paths if p]


def _is_installed(path: Path) -> bool:
    if {"site-packages", "dist-packages"} & set(path.parts):
        return True
    return any(path.is_relative_to(root) for root in _installed_roots())


def module_path(name: str) -> Path | None:
    """The local file or package directory to ship for module `name`, or None when nothing is
    shipped for it (part of rlvr, or installed: it must be installed on the cluster too).

    The top-level package is shipped whole, because py_modules adds whole top-level modules.
    Raises JobError when the module cannot be found here.
    """
    top = name.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)  # a top-level lookup imports nothing
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise JobError(f"module {name!r} is not importable here: add its directory to PYTHONPATH so it can be "
                       "shipped, or install it on the cluster (--pip)")
    if spec.submodule_search_locations is not None:
        locations = list(spec.submodule_search_locations)
        if len(locations) != 1:
            raise JobError(f"package {top!r} is split over {len(locations)} directories; ship one with --module PATH")
        path = Path(locations[0]).resolve()
    elif spec.origin and spec.origin.endswith(".py"):
        path = Path(spec.origin).resolve()
    else:
        return None  # built-in or compiled: nothing to ship
    if path.is_relative_to(RLVR_DIR):
        return None  # travels with rlvr, or comes with the rlvr installed on the cluster
    return None if _is_installed(path) else path


def _locate(mod: str, pip: list[str], notes: list[str]) -> Path | None:
    """The local path to ship for a module name or an explicit path (--module ./helpers, rewards.py:fn)."""
    from rlvr.plugins import split_spec

    mod = split_spec(mod)[0]  # `file.py:function` ships file.py
    if os.sep in mod or mod.endswith(".py"):
        p = Path(mod).resolve()
        if not (p.is_dir() or (p.is_file() and p.suffix == ".py")):
            raise JobError(f"--module {mod}: not a .py file or a package directory")
        return p
    try:
        return module_path(mod)
    except JobError:
        if not pip:
            raise
        notes.append(f"module {mod!r} is not importable here; expecting it from --pip {' '.join(pip)}")
        return None


def _ship_modules(modules: Iterable[str], staging: Path, ship_rlvr: bool, pip: list[str],
                  notes: list[str]) -> list[str]:
    """py_modules entries (rlvr and package directories); single-file modules go into the working_dir.

    Ray's job client uploads a py_modules entry that is a .py file as if it were a directory and
    fails; the working_dir is first on every job process's PYTHONPATH, so a copy there imports the same.
    """
    out = [str(RLVR_DIR)] if ship_rlvr else []
    notes.append(f"shipping rlvr from {RLVR_DIR}" if ship_rlvr else "not shipping rlvr: the cluster's own install is used")
    for mod in modules:
        path = _locate(mod, pip, notes)
        if path is None or str(path) in out or (staging / path.name).is_file():
            continue  # nothing to ship, or shipped already
        if path.is_file():
            shutil.copyfile(path, staging / path.name)
        else:
            out.append(str(path))
        notes.append(f"shipping module {mod} from {path}")
    return out


def _yaml_str(value: str) -> str:
    """`value` as a --set value, which is parsed as YAML: quoted (JSON is YAML) only where YAML would
    read it as something else (a path with '#' or ': ', or one that looks like a number)."""
    import yaml

    try:
        plain = yaml.safe_load(value) == value
    except yaml.YAMLError:
        plain = False
    return value if plain else json.dumps(value)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _model_sets(recipe: Recipe, notes: list[str]) -> list[str]:
    """The model is read on the cluster, never shipped: make a local relative path absolute."""
    from rlvr.config import RecipeError

    from rlvr.hub import is_hub_id

    if is_hub_id(recipe.model.path):  # the job's driver resolves it (and pins its commit) on the cluster
        notes.append(f"model.path: Hub model {recipe.model.path}, fetched on the cluster (HF_TOKEN there for a private one)")
        return []
    p = Path(recipe.model.path)
    if p.is_absolute():
        notes.append(f"model.path: the job loads {p} on the cluster (models are not shipped)")
        return []
    if not (p / "config.json").is_file():
        raise RecipeError(f"model.path: {p} is relative and not found here; give the absolute path where the "
                          "cluster nodes have the model (models are not shipped)")
    notes.append(f"model.path: the job loads {p.resolve()}, which must exist on the cluster nodes "
                 "(shared storage or this machine); models are not shipped")
    return [f"model.path={_yaml_str(str(p.resolve()))}"]


def _data_sets(recipe: Recipe, staging: Path, notes: list[str]) -> list[str]:
    """Copy small local data into the working_dir and point the recipe at the copies."""
    from rlvr.config import RecipeError

    sets: list[str] = []
    shipped: dict[Path, str] = {}
    for section in ("train", "eval"):
        for i, src in enumerate(getattr(recipe.data, section)):
            key, p = f"data.{section}.{i}.path", Path(src.path)
            if src.path.startswith("hf:"):
                continue  # downloaded by the job on the cluster
            if not p.exists():
                if p.is_absolute():
                    notes.append(f"{key}: {p} is not on this machine; the job reads it on the cluster")
                    continue
                raise RecipeError(f"{key}: file not found: {p} (local data is shipped from here; give an absolute "
                                  "path for data that exists only on the cluster)")
            real = p.resolve()
            if real not in shipped:
                size_mb = _size(real) / 2**20
                if size_mb > SHIP_DATA_MAX_MB:
                    shipped[real] = str(real)
                    notes.append(f"{key}: {p} is {size_mb:.0f} MiB, over the {SHIP_DATA_MAX_MB} MiB shipping "
                                 f"limit: the job reads {real}, which must exist on the cluster")
                else:
                    rel = f"data/{section}{i}-{p.name}"
                    (staging / "data").mkdir(exist_ok=True)
                    (shutil.copytree if real.is_dir() else shutil.copyfile)(real, staging / rel)
                    shipped[real] = rel
                    notes.append(f"{key}: shipping {p} ({size_mb:.1f} MiB)")
            sets.append(f"{key}={_yaml_str(shipped[real])}")
    return sets


def _plugin_file_sets(recipe: Recipe) -> list[str]:
    """Plugin files travel into the working_dir (next to recipe.yaml): point the recipe at the copies."""
    from rlvr.plugins import is_file, split_spec

    sets = []
    for section in ("verifiers", "environments"):
        specs = getattr(recipe, section).plugins
        moved = []
        for spec in specs:
            target, attr = split_spec(spec)
            moved.append(Path(target).name + (f":{attr}" if attr else "") if is_file(target) and target.endswith(".py") else spec)
        if moved != list(specs):
            sets.append(f"{section}.plugins={json.dumps(moved)}")
    return sets


def _new_id(label: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")[:40] or "job"
    return f"rlvr-{slug}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _runtime_env(staging: Path, py_modules: list[str], pip: list[str]) -> dict[str, Any]:
    env: dict[str, Any] = {"working_dir": str(staging), "excludes": list(EXCLUDES)}
    if py_modules:
        env["py_modules"] = py_modules
    if pip:
        env["pip"] = list(pip)
    return env


def build_train_job(recipe_path: str | os.PathLike, staging: Path, overrides: Iterable[str] = (),
                    pip: Iterable[str] = (), extra_modules: Iterable[str] = (), ship_rlvr: bool = True) -> JobSpec:
    """Validate the recipe and lay out the job in `staging` (its working_dir). Raises RecipeError/JobError."""
    import yaml

    from rlvr.config import load_recipe, read_recipe_mapping

    overrides, pip = list(overrides), list(pip)
    recipe = load_recipe(recipe_path, overrides, check_files=False)  # model/data are checked below
    notes: list[str] = []
    # Written with its `base:` chain merged in: the base files are not shipped.
    (staging / "recipe.yaml").write_text(yaml.safe_dump(read_recipe_mapping(recipe_path), sort_keys=False))
    # Attach to the job's own cluster (an embedded one would ignore it), before the user's --set so
    # those still win; path rewrites come last because they describe the final recipe.
    sets = ["cluster.address=auto", *overrides, *_model_sets(recipe, notes), *_data_sets(recipe, staging, notes)]
    modules = [*recipe.verifiers.plugins, *recipe.environments.plugins, *extra_modules]
    py_modules = _ship_modules(modules, staging, ship_rlvr, pip, notes)
    sets += _plugin_file_sets(recipe)
    if not Path(recipe.output_dir).is_absolute():
        notes.append(f"output_dir {recipe.output_dir!r} is relative: the run lands in the job's temporary working "
                     "directory on the cluster; --set output_dir=/shared/path keeps it")
    argv = ["python", "-m", "rlvr.cli", "train", "recipe.yaml"]
    for s in sets:
        argv += ["--set", s]
    return JobSpec(entrypoint=shlex.join(argv), runtime_env=_runtime_env(staging, py_modules, pip),
                   submission_id=_new_id(recipe.name), notes=notes,
                   metadata={"rlvr_recipe": str(recipe_path), "rlvr_run": recipe.name})


def build_command_job(command: str | list[str], staging: Path, files: Iterable[str | os.PathLike] = (),
                      modules: Iterable[str] = (), pip: Iterable[str] = (), ship_rlvr: bool = True) -> JobSpec:
    """Any shell command, with `files` copied into its working directory and `modules` shipped."""
    pip, notes = list(pip), []
    for f in map(Path, files):
        if not f.is_file():
            raise JobError(f"file not found: {f}")
        shutil.copyfile(f, staging / f.name)
    py_modules = _ship_modules(modules, staging, ship_rlvr, pip, notes)
    entrypoint = command if isinstance(command, str) else shlex.join(command)
    return JobSpec(entrypoint=entrypoint, runtime_env=_runtime_env(staging, py_modules, pip),
                   submission_id=_new_id("cmd"), notes=notes, metadata={"rlvr_command": entrypoint[:200]})


# ---------------------------------------------------------------- job operations

def _submit(spec: JobSpec, address: str | None, note: Callable[[str], None] = lambda s: None) -> str:
    client = connect(address)  # before the notes: an unreachable cluster is then a one-line error
    for line in spec.notes:
        note(line)
    try:
        return client.submit_job(entrypoint=spec.entrypoint, runtime_env=spec.runtime_env,
                                 submission_id=spec.submission_id, metadata=spec.metadata)
    except Exception as e:  # noqa: BLE001 - upload, runtime-env validation, HTTP: all end the same way
        raise JobError(f"submitting to {client.get_address()} failed: {_first_line(e)}") from None


def submit(recipe_path: str | os.PathLike, address: str | None = None, overrides: Iterable[str] = (),
           pip: Iterable[str] = (), extra_modules: Iterable[str] = (), ship_rlvr: bool = True,
           note: Callable[[str], None] = lambda s: None) -> str:
    """Submit `rlvr train RECIPE` as a Ray job and return its id. The recipe is checked first,
    so a bad one raises RecipeError before the cluster is contacted."""
    with tempfile.TemporaryDirectory(prefix="rlvr-job-") as tmp:
        spec = build_train_job(recipe_path, Path(tmp), overrides, pip, extra_modules, ship_rlvr)
        return _submit(spec, address, note)  # uploads the working_dir before returning


def submit_command(command: str | list[str], address: str | None = None, files: Iterable[str | os.PathLike] = (),
                   modules: Iterable[str] = (), pip: Iterable[str] = (), ship_rlvr: bool = True) -> str:
    """Submit any command (e.g. `python -m rlvr.cli verify ...`) with rlvr and `modules` shipped."""
    with tempfile.TemporaryDirectory(prefix="rlvr-job-") as tmp:
        return _submit(build_command_job(command, Path(tmp), files, modules, pip, ship_rlvr), address)


def status(job_id: str, address: str | None = None):
    """The job's JobDetails (status, message, start_time/end_time in ms, entrypoint...)."""
    client = connect(address)
    return _call(client, client.get_job_info, job_id)


def logs(job_id: str, address: str | None = None, follow: bool = False, out=None) -> str:
    """Write the job's logs; with follow, stream them until the job ends. Returns its status."""
    client = connect(address)
    out = out or sys.stdout
    info = _call(client, client.get_job_info, job_id)  # a clear error for an unknown id, before streaming
    if not follow or info.status.value in TERMINAL:  # tailing an ended job only adds a few seconds' wait
        out.write(_call(client, client.get_job_logs, job_id))
        return _call(client, client.get_job_status, job_id).value

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    return _wait_terminal(client, job_id, timeout_s=10)


def _wait_terminal(client, job_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        st = _call(client, client.get_job_status, job_id).value
        if st in TERMINAL or time.monotonic() > deadline:
            return st
        time.sleep(0.5)


def stop(job_id: str, address: str | None = None, wait_s: float = 30) -> str:
    """Ask Ray to stop the job (SIGTERM, then SIGKILL after a grace period); return its status then."""
    client = connect(address)
    _call(client, client.get_job_info, job_id)
    _call(client, client.stop_job, job_id)
    return _wait_terminal(client, job_id, wait_s)


def list_jobs(address: str | None = None) -> list:
    """Every job the cluster knows, oldest first."""
    client = connect(address)
    try:
        jobs = client.list_jobs()
    except Exception as e:  # noqa: BLE001
        raise JobError(f"listing jobs on {client.get_address()} failed: {_first_line(e)}") from None
    return sorted(jobs, key=lambda j: j.start_time or 0)


# ---------------------------------------------------------------- display

def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def describe(info) -> str:
    """One line: id, status, start time, duration and Ray's message."""
    job_id = info.submission_id or info.job_id
    took = ""
    if info.start_time:
        end = info.end_time or time.time() * 1000
        took = f", {'ran' if info.end_time else 'running for'} {(end - info.start_time) / 1000:.0f}s"
    msg = f": {info.message.strip().splitlines()[0]}" if info.message else ""  # FAILED adds the last logs
    return f"{job_id} {info.status.value} (started {_when(info.start_time)}{took}){msg}"


def jobs_table(jobs: list, width: int = 60) -> str:
    rows = [("ID", "STATUS", "START", "ENTRYPOINT")]
    for j in jobs:
        entry = " ".join((j.entrypoint or "").split())
        entry = entry if len(entry) <= width else entry[: width - 3] + "..."
        rows.append((j.submission_id or j.job_id or "-", j.status.value, _when(j.start_time), entry))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:{widths[0]}}  {r[1]:{widths[1]}}  {r[2]:{widths[2]}}  {r[3]}" for r in rows)
