"""Ray job submission against a real local head: plugin shipping, status/logs/jobs, stop, errors.

One head (1 CPU, dashboard on 127.0.0.1) serves the whole module. It is stopped by ending the
processes of the session `ray start` opened, not with `ray stop`, which ends every Ray process on
the machine (other runs' included).
"""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from rlvr.cli import main
from rlvr.cluster import jobs
from rlvr.weights.sync import free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")]  # inside Ray's log tail

RAY = Path(sys.executable).with_name("ray")
PLUGIN = '''from rlvr.verifiers.registry import register


@register("always_seven", "scores every response 0.7")
def always_seven(response, ground_truth, *, prompt=None):
    return 0.7
'''


def _ours(proc: psutil.Process, sid: int, temp: str) -> bool:
    try:
        return os.getsid(proc.pid) == sid or any(temp in a for a in proc.cmdline())
    except (psutil.Error, OSError):
        return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE  # nobody may reap daemons re-parented to init
    except psutil.Error:
        return False


def _stop_head(sid: int, temp: str) -> None:
    """End the head's processes (the `ray start` session, or naming its temp dir) and their children."""
    roots = [p for p in psutil.process_iter() if p.pid != os.getpid() and _ours(p, sid, temp)]
    procs = {}
    for root in roots:
        try:
            procs.update({p.pid: p for p in [root, *root.children(recursive=True)]})
        except psutil.Error:
            pass
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.terminate()
    # gcs_server and raylet sit out SIGTERM for ~10 s; a throwaway test head can take SIGKILL after 3
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and any(_alive(p) for p in procs.values()):
        time.sleep(0.2)
    for p in procs.values():
        if _alive(p):
            with contextlib.suppress(psutil.Error):
                p.kill()


@pytest.fixture(scope="module")
def head():
    """A one-CPU Ray head bound to loopback; yields its dashboard URL."""
    temp = tempfile.mkdtemp(prefix="rlvr-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    dashboard = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env.update(PATH=f"{RAY.parent}{os.pathsep}{env.get('PATH', '')}",  # jobs run `python`: this venv's
               RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # single-node mode: every service on 127.0.0.1
               RAY_AUTH_MODE="disabled")  # else a token in ~/.ray turns auth on for the head only
    ports = {f"--{name}": free_port() for name in ("port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "runtime-env-agent-port", "metrics-export-port", "node-manager-port",
                                                    "object-manager-port", "ray-client-server-port")}
    cmd = [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dashboard}", "--num-cpus=1", "--include-dashboard=true", f"--temp-dir={temp}",
           "--disable-usage-stats", *(f"{k}={v}" for k, v in ports.items())]
    # its own session: every daemon it leaves behind carries that session id, which _stop_head uses
    proc = subprocess.Popen(cmd, env=env, cwd=temp, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            pytest.fail(f"ray start failed ({proc.returncode}):\n{out[-3000:]}")
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        if proc.poll() is None:
            proc.kill()
        _stop_head(proc.pid, temp)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.fixture(scope="module")
def plugin_job(head, tmp_path_factory):
    """`rlvr verify` with a plugin from a directory outside the package, run as a job on the head."""
    tmp = tmp_path_factory.mktemp("plugin-job")
    plugins = tmp / "plugins_dir"
    plugins.mkdir()
    (plugins / "my_rewards.py").write_text(PLUGIN)
    rows = tmp / "rows.jsonl"
    rows.write_text(json.dumps({"id": "r1", "response": "anything", "ground_truth": "x", "verifier": "always_seven"}) + "\n")
    command = ("python -c 'import rlvr; print(\"RLVR_FROM\", rlvr.__file__)' && "
               # --workers 1: the plugin must also import in the verifier's worker process
               "python -m rlvr.cli verify --plugin my_rewards --input rows.jsonl --output out.jsonl --workers 1 && "
               "cat out.jsonl")
    sys.path.insert(0, str(plugins))  # found locally the way a user's PYTHONPATH would find it
    try:
        job_id = jobs.submit_command(command, head, files=[rows], modules=["my_rewards"])
    finally:
        sys.path.remove(str(plugins))
    out = io.StringIO()
    final = jobs.logs(job_id, head, follow=True, out=out)
    return job_id, final, out.getvalue()


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _cli_process(*argv, **env_vars) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **env_vars}
    return subprocess.run([sys.executable, "-m", "rlvr.cli", *map(str, argv)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_plugin_shipped_from_outside_the_package_scores_inside_the_job(plugin_job):
    job_id, final, logs = plugin_job
    assert final == "SUCCEEDED", logs
    scored = [json.loads(line) for line in logs.splitlines() if line.startswith('{"id": "r1"')]
    assert scored == [{"id": "r1", "score": 0.7, "details": {}}]
    # the job imported the shipped copy of rlvr, not this checkout
    rlvr_from = next(line for line in logs.splitlines() if line.startswith("RLVR_FROM"))
    assert "runtime_resources" in rlvr_from and str(jobs.RLVR_DIR) not in rlvr_from


def test_status_logs_and_jobs_list(plugin_job, head, capsys):
    job_id = plugin_job[0]
    code, out, _ = _cli(capsys, "status", job_id, "--address", head)
    assert code == 0 and out.startswith(f"{job_id} SUCCEEDED")
    code, out, _ = _cli(capsys, "logs", job_id, "--address", head)
    assert code == 0 and '"score": 0.7' in out
    code, out, _ = _cli(capsys, "jobs", "--address", head)
    assert code == 0 and out.splitlines()[0].split() == ["ID", "STATUS", "START", "ENTRYPOINT"]
    [row] = [line for line in out.splitlines() if line.startswith(job_id)]
    assert row.split()[1] == "SUCCEEDED" and "python -c" in row


def test_stop_ends_a_long_job(head, capsys):
    job_id = jobs.submit_command('python -c "import time; time.sleep(600)"', head, ship_rlvr=False)
    deadline = time.monotonic() + 60
    while jobs.status(job_id, head).status.value != "RUNNING":
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.5)
    code, out, _ = _cli(capsys, "stop", job_id, "--address", head)
    assert code == 0 and out.strip() == f"{job_id} STOPPED"
    assert jobs.status(job_id, head).status.value == "STOPPED"


def test_bad_recipe_exits_2_and_submits_nothing(head, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: {path: /models/x}\ndata: {train: [{path: /data/x.jsonl}]}\nrollout: {engnes: 2}\n")
    before = len(jobs.list_jobs(head))
    r = _cli_process("submit", recipe, "--address", head)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [f"rlvr: error: {recipe}: rollout.engnes: unknown field "
                                     "(check its spelling; `rlvr config` lists fields)"]
    assert len(jobs.list_jobs(head)) == before


def test_unreachable_cluster_is_one_line():
    closed = f"http://127.0.0.1:{free_port()}"
    r = _cli_process("jobs", "--address", closed)
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(f"rlvr: error: cannot reach the Ray cluster at {closed} ")
    r = _cli_process("status", "some-job", RAY_ADDRESS=closed)  # the address from the environment
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and closed in r.stderr


def test_train_recipe_runs_in_the_job_on_this_cluster(head, toy_dir, capsys):
    """The real `rlvr submit` path as far as it is cheap: the shipped recipe and data load in the job,
    which attaches to the head (1 CPU) and stops at the resource preflight before any engine starts."""
    root = Path(__file__).resolve().parents[2]
    code, out, err = _cli(capsys, "submit", root / "recipes" / "toy_addition_cpu.yaml", "--address", head,
                          "--set", f"model.path={toy_dir}/model", "--set", f"data.train.0.path={toy_dir}/train.jsonl",
                          "--set", f"data.eval.0.path={toy_dir}/eval.jsonl", "--set", "rollout.num_cpus=8",
                          "--set", "logging.wandb=false", "--set", "logging.progress=false")
    job_id = out.splitlines()[0]
    assert code == 1 and f"job {job_id} FAILED" in err
    assert "note: data.train.0.path: shipping" in err and "note: shipping rlvr from" in err
    assert "data/train0-train.jsonl: available" in out  # the shipped copy was read in the job
    assert "the recipe needs 9 CPUs but the cluster has 1" in out  # the head's CPU: attached, not embedded


ENV_PLUGIN = """from rlvr.environments import Environment, Observation, register_environment


@register_environment("shipped_countdown", "asks twice more, then ends")
class Countdown(Environment):
    def __init__(self):
        self.left = 2

    async def step(self, assistant_message):
        self.left -= 1
        return Observation([{"role": "user", "content": "Again?"}], done=self.left < 0)
"""


def test_environment_plugin_shipped_with_submit_loads_in_the_job(head, toy_dir, tmp_path, capsys, monkeypatch):
    """An environment plugin from a directory outside the package travels with `rlvr submit`: the job's
    prepare step (plugins loaded, every row's environment known and built) passes, and the job stops only
    at the resource preflight (the head has 1 CPU)."""
    plugins = tmp_path / "env_plugins"
    plugins.mkdir()
    (plugins / "my_envs.py").write_text(ENV_PLUGIN)
    rows = tmp_path / "env_rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"What is {a} + 1?", "ground_truth": str(a + 1), "env": "shipped_countdown"}) + "\n"
                            for a in range(10, 20)))
    monkeypatch.syspath_prepend(str(plugins))
    root = Path(__file__).resolve().parents[2]
    # A plain reward function in a file next to the recipe (path relative to it): it must load in the job,
    # since the train rows name it as their verifier (an unknown one would stop prepare).
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "recipe.yaml").write_text(f"base: {root / 'recipes' / 'toy_addition_cpu.yaml'}\n"
                                      "verifiers: {plugins: [shipped_reward.py:shipped_reward]}\n")
    (proj / "shipped_reward.py").write_text("def shipped_reward(completion, ground_truth, **row):\n    return 1.0\n")
    code, out, err = _cli(capsys, "submit", proj / "recipe.yaml", "--address", head,
                          "--set", f"model.path={toy_dir}/model", "--set", f"data.train.0.path={rows}",
                          "--set", "data.train.0.verifier=shipped_reward",
                          "--set", f"data.eval.0.path={toy_dir}/eval.jsonl", "--set", "environments.plugins=[my_envs]",
                          "--set", "rollout.num_cpus=8", "--set", "logging.wandb=false", "--set", "logging.progress=false")
    assert code == 1 and "note: shipping module my_envs from" in err, err
    assert "note: shipping module " + str(proj / "shipped_reward.py") in err, err
    assert "the recipe needs 9 CPUs but the cluster has 1" in out, out[-2000:]  # prepare passed in the job
    assert "shipped_countdown" not in out  # no unknown-environment error
    # the job's recipe names the shipped copy, and prepare loaded it (no unknown-verifier or import error)
    assert """verifiers.plugins=["shipped_reward.py:shipped_reward"]""" in out, out[-2000:]
    assert "unknown verifier" not in out and "cannot import verifier plugin" not in out
