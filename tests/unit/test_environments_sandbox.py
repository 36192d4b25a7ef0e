"""The sandbox-backed pieces: the python tool, PythonSession, CodeFeedbackEnvironment (real bwrap)."""
import asyncio
import shutil
import time

import pytest

from rlvr.environments.base import EnvironmentConfigError
from rlvr.environments.code_feedback import CodeFeedbackEnvironment
from rlvr.environments.parsers import format_call
from rlvr.environments.python_tool import PythonSession, make_python_tool, python, run_python
from rlvr.environments.registry import get_environment, get_tool

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (apt-get install bubblewrap)")
run = asyncio.run


def test_python_prints_output_in_order():
    assert python("import sys\nprint('a')\nprint('b', file=sys.stderr)\nprint(6 * 7)") == "a\nb\n42\n"


def test_python_returns_the_traceback_as_text():
    out = python("def f():\n    return 1 / 0\nf()")
    assert out.startswith("Traceback (most recent call last):")
    assert 'File "<cell 1>", line 2, in f' in out and out.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "driver.py" not in out  # the sandbox's own driver stays out of the model's view
    assert "SyntaxError" in python("def f(:")


def test_python_has_no_network_and_no_host_files():
    out = python("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)")
    assert "OSError" in out and "unreachable" in out
    out = python("print(open('/work/main/README.md').read())")
    assert "FileNotFoundError" in out and "rlvr" not in out.split("FileNotFoundError")[1][60:]
    assert "WANDB" not in python("import os; print(sorted(os.environ))")


def test_python_truncates_a_huge_print_quickly():
    t0 = time.monotonic()
    out = make_python_tool(max_output_chars=500)("print('x' * 100_000_000)")
    assert time.monotonic() - t0 < 5
    assert "[truncated:" in out and "the program printed too much and was stopped" in out
    assert len(out) < 700


def test_python_stops_an_infinite_loop():
    t0 = time.monotonic()
    text, ok = run_python("print('start', flush=True)\nwhile True: pass", timeout_s=1)
    assert time.monotonic() - t0 < 4
    assert not ok and text.startswith("start\n") and "ran longer than 1s and was stopped" in text


def test_python_is_stateless_between_calls():
    python("x = 5")
    assert "NameError" in python("print(x)")


def test_python_session_keeps_successful_cells_only():
    s = PythonSession(timeout_s=3)
    assert run(s.python("x = 41\nprint('set')")) == "set\n"
    assert run(s.python("import math\nx += 1\nprint(x)")) == "42\n"   # the first cell's output is not repeated
    assert "ZeroDivisionError" in run(s.python("x = 1 / 0"))
    assert run(s.python("print(x, math.pi > 3)")) == "42 True\n"     # the failed cell left nothing behind
    assert len(s.cells) == 3
    fresh = get_tool("python", stateful=True)
    assert "NameError" in run(fresh("print(x)"))  # each session is its own


def test_python_session_never_keeps_a_cell_the_model_was_told_failed():
    """Issue 21, finding 8: the environment's tool_timeout_s (1 s) abandons a cell that sleeps 2 s (the
    sandbox's own limit, 4 s, lets it finish): the model reads that it did not finish, so its side
    effects must not come back when a later call replays the session, even once its thread is done."""
    env = get_environment("tools", tools=["python"], tool_timeout_s=1,
                          tool_options={"python": {"stateful": True, "timeout_s": 4}})

    async def go():
        async def call(code):
            obs = await env.step({"role": "assistant", "content": format_call("python", {"code": code})})
            return obs.messages[0]["content"], obs.info
        assert (await call("L = []\nprint('ok')"))[0] == "ok\n"
        text, info = await call("import time\ntime.sleep(2)\nL.append('slow')\nz = 1")
        assert "did not finish within 1s" in text and info["tool_timeouts"] == {"python": 1}
        await asyncio.sleep(3.5)  # the abandoned run has finished in its thread by now
        return (await call("print(L, 'z' in globals())"))[0]
    assert run(go()) == "[] False\n"


def test_python_queueing_for_a_sandbox_slot_is_bounded_and_reported(monkeypatch):
    """Waiting for a sandbox slot does not eat into the run's own timeout_s: it is bounded apart, and a
    call that got no slot says so (and its cell is not kept)."""
    import threading

    from rlvr.environments import python_tool

    monkeypatch.setattr(python_tool, "_slots", threading.BoundedSemaphore(1))
    python_tool._slots.acquire()  # every slot taken
    try:
        s = PythonSession(timeout_s=0.5)
        text = run(s.python("x = 1\nprint('ran')"))
    finally:
        python_tool._slots.release()
    assert "sandbox is busy" in text and "not run" in text and "ran" not in text and s.cells == []
    assert run(s.python("import time\nt = time.monotonic()\ntime.sleep(0.3)\nprint('ran')")) == "ran\n"


def test_tools_environment_runs_the_python_tool():
    env = get_environment("tools", tools=["calculator", "python"], tool_options={"python": {"timeout_s": 2}})
    obs = run(env.step({"role": "assistant", "content": format_call("python", {"code": "print(2 ** 10)"})}))
    assert obs.messages == [{"role": "tool", "name": "python", "content": "1024\n"}]
    assert obs.info["tool_calls"] == {"python": 1} and obs.info["tool_errors"] == {}


ROW = {"messages": [{"role": "user", "content": "Write add(a, b)."}],
       "ground_truth": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"]}


def submit(program):
    return {"role": "assistant", "content": f"Here:\n```python\n{program}\n```"}


def test_code_feedback_gives_failing_tests_then_ends_when_all_pass():
    env = CodeFeedbackEnvironment(max_attempts=3)
    assert run(env.reset(ROW)) == ROW["messages"]
    obs = run(env.step(submit("def add(a, b):\n    return 3")))
    assert obs.done is False and obs.reward == 0.0 and obs.info["passed"] == 1 and obs.info["total"] == 3
    feedback = obs.messages[0]
    assert feedback["role"] == "user" and feedback["content"].startswith("1 of 3 tests passed.")
    assert "Failing test 1: assert add(2, 2) == 4" in feedback["content"] and "2 attempts left" in feedback["content"]
    obs = run(env.step(submit("def add(a, b):\n    return a + b")))
    assert obs.done is True and obs.reward == 1.0 and obs.messages == [] and env.attempts == 2


def test_code_feedback_final_reward_is_the_last_attempt():
    env = CodeFeedbackEnvironment(max_attempts=2)
    run(env.reset(ROW))
    obs = run(env.step({"role": "assistant", "content": "I think add is easy."}))
    assert obs.done is False and "no ```python code block" in obs.messages[0]["content"] and obs.info["no_code"] == 1
    obs = run(env.step(submit("def add(a, b):\n    return a - b if a == b else a + b")))  # passes 2 of 3
    assert obs.done is True and obs.reward == pytest.approx(2 / 3) and obs.messages == []
    env = CodeFeedbackEnvironment(max_attempts=1, all_or_nothing=True)
    run(env.reset(ROW))
    assert run(env.step(submit("def add(a, b):\n    return a - b if a == b else a + b"))).reward == 0.0


def test_code_feedback_stdin_tests_and_bad_rows():
    env = CodeFeedbackEnvironment(max_attempts=2, timeout_s=3)
    run(env.reset({"messages": [{"role": "user", "content": "echo twice"}],
                   "ground_truth": {"inputs": ["ab\n"], "outputs": ["abab\n"]}}))
    obs = run(env.step(submit("print(input())")))
    assert "Failing case 0: input 'ab\\n', expected output 'abab\\n'" in obs.messages[0]["content"]
    assert run(env.step(submit("print(input() * 2)"))).reward == 1.0
    with pytest.raises(EnvironmentConfigError, match="ground_truth"):
        run(CodeFeedbackEnvironment().reset({"messages": []}))
    with pytest.raises(EnvironmentConfigError, match="ground_truth: not usable"):
        run(CodeFeedbackEnvironment().reset({"messages": [], "ground_truth": 42}))
    with pytest.raises(EnvironmentConfigError, match="max_attempts"):
        CodeFeedbackEnvironment(max_attempts=0)


def test_sandbox_runs_are_bounded_per_process(monkeypatch):
    import threading

    from rlvr.environments import python_tool
    monkeypatch.setattr(python_tool, "_slots", threading.BoundedSemaphore(2))
    active, peak, lock = [0], [0], threading.Lock()
    real_run = python_tool.sandbox.run

    def counting_run(*a, **k):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.05)
            return real_run(*a, **k)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(python_tool.sandbox, "run", counting_run)
    env = get_environment("tools", tools=["python"])
    calls = "".join(format_call("python", {"code": f"print({i})"}) for i in range(5))

    async def many():
        return await asyncio.gather(*[env.step({"role": "assistant", "content": calls}) for _ in range(4)])

    results = run(many())
    assert [m["content"] for m in results[0].messages] == [f"{i}\n" for i in range(5)]
    assert peak[0] == 2  # four trajectories at once, two sandboxes at a time
