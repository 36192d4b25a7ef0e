"""rlvr.environments without a sandbox or tokenizer: base types, parsers, tool schemas,
ToolEnvironment's error handling and counters, the calculator, registries, the command."""
import argparse
import asyncio
import importlib.metadata
import json
import sys
import textwrap
import time
from typing import Literal, Optional

import pytest

from rlvr.environments import registry
from rlvr.environments.base import (Environment, EnvironmentConfigError, Observation, SingleTurn, accumulate_info,
                                    content_text)
from rlvr.environments.calculator import calculator, format_number
from rlvr.cli.environments import add_arguments, cmd_environments
from rlvr.environments.parsers import (ToolCall, ToolCallParser, format_call, get_parser, list_parsers,
                                       register_parser)
from rlvr.environments.registry import (check_environment_names, get_environment, get_tool, list_environments,
                                        list_tools, load_environment_plugins, register_environment, register_tool,
                                        tools_environment, unregister_environment, unregister_tool)
from rlvr.environments.tools import ToolEnvironment, tool_schema, truncate

run = asyncio.run


def assistant(text):
    return {"role": "assistant", "content": text}


def hermes(name, **arguments):
    return format_call(name, arguments)


# ---------------------------------------------------------------- base


def test_observation_defaults_are_independent():
    a, b = Observation([]), Observation([])
    a.info["x"] = 1
    assert b.info == {} and a.reward == 0.0 and a.done is False


def test_environment_defaults_reset_copies_messages_and_offers_no_tools():
    class Echo(Environment):
        async def step(self, assistant_message):
            return Observation([{"role": "user", "content": "again"}])

    row = {"messages": [{"role": "user", "content": "hi"}]}
    env = Echo()
    msgs = run(env.reset(row))
    msgs.append({"role": "assistant", "content": "x"})
    msgs[0]["content"] = "changed"
    assert row["messages"] == [{"role": "user", "content": "hi"}]  # the row is untouched
    assert env.tools == [] and run(env.close()) is None
    with pytest.raises(EnvironmentConfigError, match="row: needs a 'messages'"):
        run(env.reset({"prompt": "no messages"}))
    with pytest.raises(TypeError):
        Environment()  # step is abstract


def test_single_turn_is_done_after_one_step_without_messages():
    env = SingleTurn()
    assert run(env.reset({"messages": [{"role": "user", "content": "2+2?"}]})) == [{"role": "user", "content": "2+2?"}]
    obs = run(env.step(assistant("4")))
    assert obs.done is True and obs.messages == [] and obs.reward == 0.0


def test_environment_config_error_is_a_value_error():
    assert issubclass(EnvironmentConfigError, ValueError)


def test_content_text_handles_strings_parts_and_none():
    assert content_text({"content": "abc"}) == "abc"
    assert content_text({"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}) == "ab"
    assert content_text({"content": None}) == "" and content_text({}) == ""


def test_accumulate_info_sums_numbers_and_merges_nested_counts():
    total = {}
    accumulate_info(total, {"tool_calls": {"calculator": 1}, "tool_seconds": {"calculator": 0.5}, "attempts": 1})
    accumulate_info(total, {"tool_calls": {"calculator": 2, "python": 1}, "tool_seconds": {"calculator": 0.25},
                            "attempts": 1, "reason": "last"})
    assert total == {"tool_calls": {"calculator": 3, "python": 1}, "tool_seconds": {"calculator": 0.75},
                     "attempts": 2, "reason": "last"}


# ---------------------------------------------------------------- parsers


def test_hermes_parses_several_calls_and_string_arguments():
    text = ("Let me compute.\n" + hermes("calculator", expression="2+3") + "\nand\n"
            + '<tool_call>{"name": "python", "arguments": "{\\"code\\": \\"print(1)\\"}"}</tool_call>')
    calls, errors = get_parser("hermes").parse(text)
    assert errors == []
    assert calls == [ToolCall("calculator", {"expression": "2+3"}), ToolCall("python", {"code": "print(1)"})]


def test_hermes_reports_malformed_calls_and_ignores_thinking():
    p = get_parser("hermes")
    calls, errors = p.parse('<tool_call>{"name": "calculator", "arguments": {"expression": </tool_call>')
    assert calls == [] and len(errors) == 1 and "invalid JSON" in errors[0] and "<tool_call>" in errors[0]
    assert "missing \"name\"" in p.parse('<tool_call>{"arguments": {}}</tool_call>')[1][0]
    assert "must be a JSON object" in p.parse('<tool_call>{"name": "f", "arguments": [1]}</tool_call>')[1][0]
    # a call mentioned while thinking is not a call; an unclosed block at the very end is
    calls, errors = p.parse('<think>maybe <tool_call>{"name": "x"}</tool_call></think>'
                            '<tool_call>{"name": "calculator", "arguments": {"expression": "1"}}')
    assert calls == [ToolCall("calculator", {"expression": "1"})] and errors == []
    assert p.parse("The answer is 5.") == ([], [])


def test_hermes_format_call_round_trips():
    text = format_call("calculator", {"expression": "6*7"})
    assert text.startswith("<tool_call>\n") and text.endswith("\n</tool_call>")
    assert get_parser("hermes").parse(text)[0] == [ToolCall("calculator", {"expression": "6*7"})]


def test_compact_parses_one_string_argument_and_formats_it():
    p = get_parser("compact")
    calls, errors = p.parse("first <tool>calculator: 12 * (3 + 4)</tool> then <tool>no colon here</tool>")
    assert calls == [ToolCall("calculator", "12 * (3 + 4)")]
    assert len(errors) == 1 and "<tool>TOOL: ARGUMENT</tool>" in errors[0]
    assert format_call("calculator", "1+1", parser="compact") == "<tool>calculator: 1+1</tool>"
    assert format_call("calculator", {"expression": "1+1"}, parser="compact") == "<tool>calculator: 1+1</tool>"


def test_parser_registry_lists_registers_and_rejects_unknown_names():
    assert [n for n, _ in list_parsers()][:2] == ["compact", "hermes"]
    with pytest.raises(EnvironmentConfigError, match=r"unknown tool-call parser 'nope' \(known: compact, hermes"):
        get_parser("nope")

    @register_parser("test_upper")
    class Upper(ToolCallParser):
        syntax = "CALL NAME"

        def parse(self, text):
            return [ToolCall(w[5:].lower(), {}) for w in text.split() if w.startswith("CALL:")], []

    try:
        assert get_parser("test_upper").parse("CALL:NOW") == ([ToolCall("now", {})], [])
        assert ("test_upper", "CALL NAME") in list_parsers()
    finally:
        from rlvr.environments import parsers
        parsers._PARSERS.pop("test_upper")


# ---------------------------------------------------------------- tool_schema and truncate


def sample_tool(query: str, limit: int = 5, ratio: Optional[float] = None, exact: bool = False,
                tags: list[str] = (), extra: dict = None, mode: Literal["fast", "slow"] = "fast") -> str:
    """Search the index.

    Longer explanation that is not part of the description.

    Args:
        query: what to look for,
            continued on a second line.
        limit (int): at most this many results.
        mode: how hard to look.

    Returns:
        the hits.
    """
    return query


async def async_tool(x: int) -> int:
    """Double it."""
    return 2 * x


def test_tool_schema_types_required_and_docstring():
    s = tool_schema(sample_tool)
    assert s["type"] == "function"
    f = s["function"]
    assert f["name"] == "sample_tool" and f["description"] == "Search the index."
    props = f["parameters"]["properties"]
    assert f["parameters"]["type"] == "object" and f["parameters"]["required"] == ["query"]
    assert props["query"] == {"type": "string", "description": "what to look for, continued on a second line."}
    assert props["limit"] == {"type": "integer", "description": "at most this many results."}
    assert props["ratio"] == {"type": "number"} and props["exact"] == {"type": "boolean"}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}} and props["extra"] == {"type": "object"}
    assert props["mode"] == {"type": "string", "enum": ["fast", "slow"], "description": "how hard to look."}
    json.dumps(s)  # what the chat template gets must be JSON


def test_tool_schema_async_and_unsupported_types():
    assert tool_schema(async_tool)["function"] == {
        "name": "async_tool", "description": "Double it.",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}

    def bad(when: time.struct_time) -> str:
        return ""

    with pytest.raises(EnvironmentConfigError, match="parameter 'when' has type struct_time"):
        tool_schema(bad)
    with pytest.raises(EnvironmentConfigError, match="not a named function"):
        tool_schema(42)
    assert tool_schema(async_tool, name="double")["function"]["name"] == "double"


def test_truncate_keeps_head_and_tail_and_says_so():
    assert truncate("short", 100) == "short"
    text = "A" * 500 + "Z" * 500
    out = truncate(text, 150)
    assert out.startswith("A" * 100) and out.endswith("Z" * 50)
    assert "[truncated: 850 characters omitted]" in out


# ---------------------------------------------------------------- ToolEnvironment


def failing_tool(x: int) -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


async def slow_tool(seconds: float) -> str:
    """Sleeps."""
    await asyncio.sleep(seconds)
    return "woke"


def sync_slow_tool(seconds: float) -> str:
    """Sleeps in a thread."""
    time.sleep(seconds)
    return "woke"


def own_timeout_tool() -> str:
    """Raises its own TimeoutError at once."""
    raise TimeoutError("upstream timed out")


def big_tool() -> str:
    """A lot of output."""
    return "x" * 10_000


def exiting_tool() -> str:
    """Calls sys.exit."""
    sys.exit(3)


def make_env(**kw):
    return ToolEnvironment([calculator, async_tool, failing_tool, slow_tool, sync_slow_tool, own_timeout_tool,
                            big_tool, exiting_tool], **kw)


def test_tool_environment_runs_calls_in_order_and_counts_them():
    env = make_env()
    assert [t["function"]["name"] for t in env.tools][:2] == ["calculator", "async_tool"]
    obs = run(env.step(assistant("I'll compute. " + hermes("calculator", expression="6*7") + hermes("async_tool", x=21))))
    assert obs.done is False and obs.reward == 0.0
    assert obs.messages == [{"role": "tool", "name": "calculator", "content": "42"},
                            {"role": "tool", "name": "async_tool", "content": "42"}]
    assert obs.info["tool_calls"] == {"calculator": 1, "async_tool": 1} and obs.info["tool_errors"] == {}
    assert set(obs.info["tool_seconds"]) == {"calculator", "async_tool"}


def test_tool_environment_message_without_calls_is_the_final_answer():
    obs = run(make_env().step(assistant("The answer is 42.")))
    assert obs.done is True and obs.messages == []


def test_tool_environment_turns_every_failure_into_an_error_message():
    env = make_env(tool_timeout_s=0.3, max_calls_per_turn=20)
    text = "".join([
        '<tool_call>{"name": "calculator", "arguments": {"expression": "1+"</tool_call>',   # malformed JSON
        hermes("search", query="x"),                                                      # unknown tool
        hermes("calculator"),                                                             # missing argument
        hermes("calculator", expression="1", precision=3),                                # unexpected argument
        hermes("calculator", expression=7),                                               # wrong type
        hermes("calculator", expression="2 ^ 3"),                                         # tool raises ValueError
        hermes("failing_tool", x=1),                                                      # tool raises
        hermes("slow_tool", seconds=5),                                                   # async timeout
        hermes("sync_slow_tool", seconds=2),                                              # thread timeout
        hermes("own_timeout_tool"),                                                       # its own TimeoutError
        hermes("exiting_tool"),                                                           # sys.exit
    ])

    async def timed_step():
        t0 = time.monotonic()
        obs = await env.step(assistant(text))
        return obs, time.monotonic() - t0

    # (asyncio.run then waits for the sleeping thread: a thread cannot be stopped, only left behind)
    obs, seconds = run(timed_step())
    assert seconds < 1.5  # both timeouts were bounded by tool_timeout_s
    assert obs.done is False
    contents = [m["content"] for m in obs.messages]
    assert all(c.startswith("error:") for c in contents), contents
    assert obs.messages[0]["name"] == "parse" and "invalid JSON" in contents[0]
    assert "unknown tool 'search'" in contents[1] and "calculator" in contents[1]
    assert "missing argument 'expression'" in contents[2] and "expected calculator(expression: string)" in contents[2]
    assert "unexpected argument 'precision'" in contents[3]
    assert "argument 'expression' must be a string, got 7" in contents[4]
    assert "use ** for powers" in contents[5]
    assert "RuntimeError: disk on fire" in contents[6]
    assert "did not finish within 0.3s" in contents[7] and "did not finish within 0.3s" in contents[8]
    assert "TimeoutError: upstream timed out" in contents[9] and "did not finish" not in contents[9]
    assert "the tool called sys.exit(3)" in contents[10]
    assert obs.info["tool_errors"] == {"parse": 1, "unknown": 1, "calculator": 4, "failing_tool": 1, "slow_tool": 1,
                                       "sync_slow_tool": 1, "own_timeout_tool": 1, "exiting_tool": 1}
    assert obs.info["tool_timeouts"] == {"slow_tool": 1, "sync_slow_tool": 1}
    assert obs.info["tool_calls"]["calculator"] == 4 and "search" not in obs.info["tool_calls"]


def test_tool_environment_truncates_output_and_limits_calls_per_turn():
    env = make_env(max_output_chars=200, max_calls_per_turn=2)
    obs = run(env.step(assistant(hermes("big_tool") * 3)))
    assert len(obs.messages) == 3
    assert "[truncated: 9800 characters omitted]" in obs.messages[0]["content"]
    assert len(obs.messages[0]["content"]) < 300
    assert obs.messages[2]["content"].startswith("error: not run: at most 2 tool calls")
    assert obs.info["tool_calls"] == {"big_tool": 2} and obs.info["tool_errors"] == {"too_many": 1}


def test_tool_environment_with_compact_parser_passes_the_first_parameter():
    env = ToolEnvironment([calculator], parser="compact")
    obs = run(env.step(assistant("<tool>calculator: (2 + 3) * 4</tool>")))
    assert obs.messages == [{"role": "tool", "name": "calculator", "content": "20"}]


def test_tool_environment_survives_a_broken_parser():
    env = ToolEnvironment([calculator])

    class Broken(ToolCallParser):
        def parse(self, text):
            raise KeyError("bug")

    env.parser = Broken()
    obs = run(env.step(assistant("anything")))
    assert obs.done is False and obs.messages[0]["content"].startswith("error: could not read the tool calls")
    assert obs.info["tool_errors"] == {"parse": 1}


def test_tool_environment_config_errors_name_the_field():
    with pytest.raises(EnvironmentConfigError, match="tool_timeout_s"):
        ToolEnvironment([calculator], tool_timeout_s=0)
    with pytest.raises(EnvironmentConfigError, match="max_output_chars"):
        ToolEnvironment([calculator], max_output_chars=10)
    with pytest.raises(EnvironmentConfigError, match="max_calls_per_turn"):
        ToolEnvironment([calculator], max_calls_per_turn=0)
    with pytest.raises(EnvironmentConfigError, match="two tools are named 'calculator'"):
        ToolEnvironment([calculator, calculator])
    with pytest.raises(EnvironmentConfigError, match="parser"):
        ToolEnvironment([calculator], parser="xml")


# ---------------------------------------------------------------- calculator


@pytest.mark.parametrize("expr,want", [
    ("1 + 2", "3"), ("6 / 3", "2"), ("7 / 2", "3.5"), ("-(3) ** 2", "-9"), ("2 ** -1", "0.5"), ("17 // 5", "3"),
    ("17 % 5", "2"), ("(12 + 30) * 2", "84"), ("0.1 + 0.2", "0.30000000000000004"), ("+4", "4"), ("2 ** 100",
                                                                                                 str(2 ** 100)),
])
def test_calculator_evaluates_arithmetic(expr, want):
    assert calculator(expr) == want


@pytest.mark.parametrize("expr,msg", [
    ("x + 1", "names such as 'x' are not allowed"), ("abs(-1)", "function calls are not allowed"),
    ("(1).real", "Attribute is not allowed"), ("__import__('os')", "function calls are not allowed"),
    ("1 / 0", "division by zero"), ("9 ** 9 ** 9", "exponent 387420489 is too large"), ("2 ** 5000", "too large"),
    ("2 ^ 3", "use \\*\\* for powers"), ("1 +", "not a valid arithmetic expression"), ("'a' * 3", "only numbers"),
    ("True + 1", "only numbers"), ("1e308 * 10", "not a finite number"), ("(-8) ** 0.5", "not a real number"),
    ("1" * 1001, "longer than 1000"), ("[1, 2]", "List is not allowed"),
])
def test_calculator_rejects_everything_else_with_a_clear_message(expr, msg):
    with pytest.raises(ValueError, match=msg):
        calculator(expr)


def test_calculator_never_evaluates_code(monkeypatch):
    import builtins
    monkeypatch.setattr(builtins, "eval", lambda *a, **k: pytest.fail("eval was called"))
    assert calculator("3 * 3") == "9"


def test_format_number():
    assert format_number(3.0) == "3" and format_number(-2) == "-2" and format_number(1e20) == "1e+20"
    assert format_number(2.5) == "2.5"
    with pytest.raises(ValueError):
        format_number(float("nan"))


# ---------------------------------------------------------------- registries


@pytest.fixture
def clean_registry():
    envs, tools = dict(registry._ENVS), dict(registry._TOOLS)
    yield
    registry._ENVS.clear()
    registry._ENVS.update(envs)
    registry._TOOLS.clear()
    registry._TOOLS.update(tools)


def test_builtin_environments_and_tools_are_listed():
    envs = {name: source for name, _, source in list_environments()}
    assert envs["single_turn"] == "rlvr.environments.base"
    assert envs["tools"] == "rlvr.environments.registry"
    assert envs["code_feedback"] == "rlvr.environments.code_feedback"
    assert [n for n, _, _ in list_environments()] == sorted(envs)
    assert {n for n, _, _ in list_tools()} >= {"calculator", "python"}


def test_get_environment_makes_a_fresh_instance_each_time():
    a, b = get_environment("single_turn"), get_environment("single_turn")
    assert isinstance(a, SingleTurn) and a is not b


def test_get_environment_errors_are_one_line_and_name_the_problem():
    with pytest.raises(EnvironmentConfigError) as e:
        get_environment("chess")
    assert "unknown environment 'chess'" in str(e.value)
    # Other tests may have registered plugin environments: only the built-ins are certain.
    known = str(e.value).split("(known: ", 1)[1].split(";", 1)[0].split(", ")
    assert {"code_feedback", "single_turn", "tools"} <= set(known) and known == sorted(known)
    assert "\n" not in str(e.value)
    with pytest.raises(EnvironmentConfigError, match="environment 'code_feedback': unknown option 'attempts'"):
        get_environment("code_feedback", attempts=2)
    with pytest.raises(EnvironmentConfigError, match="environment 'tools': unknown option 'timeout'"):
        get_environment("tools", timeout=2)
    with pytest.raises(EnvironmentConfigError, match="max_attempts"):
        get_environment("code_feedback", max_attempts=0)


def test_check_environment_names_lists_every_unknown_name():
    check_environment_names(["single_turn", "tools"])
    with pytest.raises(EnvironmentConfigError, match=r"unknown environments 'a', 'b' \(known: "):
        check_environment_names(["tools", "b", "a"])


def test_tools_environment_takes_tools_by_name_with_options():
    env = get_environment("tools", tools=["calculator"], parser="compact", tool_timeout_s=3)
    assert isinstance(env, ToolEnvironment) and env.tool_timeout_s == 3.0
    assert [t["function"]["name"] for t in env.tools] == ["calculator"]
    assert run(env.step(assistant("<tool>calculator: 2*21</tool>"))).messages[0]["content"] == "42"
    env = tools_environment(tools=["calculator", async_tool])
    assert [t["function"]["name"] for t in env.tools] == ["calculator", "async_tool"]
    with pytest.raises(EnvironmentConfigError, match=r"unknown tool 'search' \(known: calculator, python"):
        tools_environment(tools=["search"])
    with pytest.raises(EnvironmentConfigError, match="tool_options: 'python' is not one of the tools"):
        tools_environment(tools=["calculator"], tool_options={"python": {}})
    with pytest.raises(EnvironmentConfigError, match="tool 'calculator' takes no options"):
        tools_environment(tools=["calculator"], tool_options={"calculator": {"x": 1}})
    with pytest.raises(EnvironmentConfigError, match="tool_options.python: unknown option 'timeout'"):
        tools_environment(tools=["python"], tool_options={"python": {"timeout": 1}})
    with pytest.raises(EnvironmentConfigError, match="tools: must be a list"):
        tools_environment(tools="calculator")
    with pytest.raises(EnvironmentConfigError, match="tools: 'calculator' is listed twice"):
        tools_environment(tools=["calculator", "calculator"])


def test_register_environment_and_tool_plugins(clean_registry):
    @register_tool
    def shout(text: str) -> str:
        """Upper-cases text."""
        return text.upper()

    counter = {"made": 0}

    @register_tool("counter", factory=True)
    def make_counter(start: int = 0):
        """A per-environment counter."""
        state = {"n": start}

        def count() -> int:
            """Counts calls."""
            state["n"] += 1
            return state["n"]
        counter["made"] += 1
        return count

    @register_environment("echo_env", description="repeats the answer back once")
    class EchoEnv(Environment):
        def __init__(self, times: int = 1):
            self.times = times

        async def step(self, assistant_message):
            return Observation([], done=True, reward=float(self.times))

    @register_environment("not_an_env")
    def bad_factory():
        return object()

    assert get_tool("shout")("hi") == "HI"
    assert get_tool("counter", start=10)() == 11
    env = tools_environment(tools=["shout", "counter"], tool_options={"counter": {"start": 5}})
    obs = run(env.step(assistant(hermes("counter") + hermes("counter") + hermes("shout", text="ok"))))
    assert [m["content"] for m in obs.messages] == ["6", "7", "OK"]
    assert counter["made"] == 2  # one counter per environment
    assert [t["function"]["name"] for t in env.tools] == ["shout", "counter"]  # the registry name, not __name__
    listed = {n: (d, s) for n, d, s in list_environments()}
    assert listed["echo_env"] == ("repeats the answer back once", __name__)
    assert ("shout", "Upper-cases text.", __name__) in list_tools()
    assert run(get_environment("echo_env", times=3).step(assistant("x"))).reward == 3.0
    with pytest.raises(EnvironmentConfigError, match="its factory returned object, not an Environment"):
        get_environment("not_an_env")
    with pytest.raises(EnvironmentConfigError, match="environment 'echo_env' registered twice"):
        register_environment("echo_env")(SingleTurn)
    register_environment("echo_env", description="repeats the answer back once")(EchoEnv)  # same definition: fine
    with pytest.raises(EnvironmentConfigError, match="tool 'shout' registered twice"):
        register_tool("shout")(calculator)
    unregister_environment("echo_env")
    unregister_tool("shout")
    assert "echo_env" not in {n for n, _, _ in list_environments()}
    assert "shout" not in {n for n, _, _ in list_tools()}


def test_unregister_restores_a_builtin(clean_registry):
    registry._ENVS.pop("single_turn")
    register_environment("single_turn")(lambda: SingleTurn())
    unregister_environment("single_turn")
    assert dict((n, s) for n, _, s in list_environments())["single_turn"] == "rlvr.environments.base"
    registry._TOOLS.pop("calculator")
    unregister_tool("calculator")
    assert get_tool("calculator") is calculator


PLUGIN = textwrap.dedent('''
    from rlvr.environments import Environment, Observation, register_environment, register_tool

    @register_tool()
    def {tool}(word: str) -> str:
        """Reverses a word."""
        return word[::-1]

    @register_environment("{env}")
    class Guess(Environment):
        """Guess the secret word."""
        async def step(self, assistant_message):
            return Observation([], reward=1.0, done=True)
''')


def test_load_environment_plugins_by_module_name_and_by_path(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "my_env_plugin.py").write_text(PLUGIN.format(tool="reverse_a", env="guess_a"))
    other = tmp_path / "sub" / "file_plugin.py"
    other.parent.mkdir()
    other.write_text(PLUGIN.format(tool="reverse_b", env="guess_b"))
    monkeypatch.syspath_prepend(str(tmp_path))
    load_environment_plugins(["my_env_plugin", str(other)], entry_points=False)
    load_environment_plugins([str(other)], entry_points=False)  # loading a file twice is harmless
    listed = {n: (d, s) for n, d, s in list_environments()}
    assert listed["guess_a"] == ("Guess the secret word.", "my_env_plugin")
    assert listed["guess_b"] == ("Guess the secret word.", str(other))
    assert get_tool("reverse_b")("abc") == "cba"
    monkeypatch.delitem(sys.modules, "my_env_plugin")


def test_load_environment_plugins_reports_bad_plugins_in_one_line(tmp_path, monkeypatch):
    with pytest.raises(EnvironmentConfigError, match="cannot import 'no_such_env_plugin_xyz': ModuleNotFoundError"):
        load_environment_plugins(["no_such_env_plugin_xyz"], entry_points=False)
    with pytest.raises(EnvironmentConfigError, match="cannot import '.*missing.py': FileNotFoundError"):
        load_environment_plugins([str(tmp_path / "missing.py")], entry_points=False)
    (tmp_path / "exits.py").write_text("raise SystemExit(2)\n")
    with pytest.raises(EnvironmentConfigError, match="exits.py': SystemExit: 2"):
        load_environment_plugins([str(tmp_path / "exits.py")], entry_points=False)


def test_entry_points_register_modules_and_factories(tmp_path, monkeypatch, clean_registry):
    (tmp_path / "ep_env_mod.py").write_text(PLUGIN.format(tool="reverse_c", env="guess_c") + textwrap.dedent('''
        class Plain(Environment):
            """Registered by its entry point's name."""
            async def step(self, assistant_message):
                return Observation([], done=True)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [importlib.metadata.EntryPoint("ep_module", "ep_env_mod", registry.ENTRY_POINT_GROUP),
           importlib.metadata.EntryPoint("plain", "ep_env_mod:Plain", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry.importlib.metadata, "entry_points",
                        lambda group: [e for e in eps if e.group == group])
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    load_environment_plugins([])
    listed = {n: (d, s) for n, d, s in list_environments()}
    assert listed["guess_c"][1] == "ep_env_mod (entry point ep_module)"
    assert listed["plain"] == ("Registered by its entry point's name.", "ep_env_mod:Plain (entry point plain)")
    assert registry._ENTRY_POINTS_LOADED is True
    monkeypatch.delitem(sys.modules, "ep_env_mod")

    bad = [importlib.metadata.EntryPoint("broken", "no_such_mod_qq:thing", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: bad)
    monkeypatch.setattr(registry, "_ENTRY_POINTS_LOADED", False)
    with pytest.raises(EnvironmentConfigError, match="cannot load environment entry point 'broken = no_such_mod_qq"):
        load_environment_plugins([])


def test_the_plugin_example_in_the_guide_works(tmp_path, clean_registry):
    from pathlib import Path
    guide = (Path(__file__).resolve().parents[2] / "docs" / "environments.md").read_text()
    code = guide.split("# my_project/word_env.py\n", 1)[1].split("```", 1)[0]
    plugin = tmp_path / "word_env.py"
    plugin.write_text(code + "\nDICTIONARY = {'en': {'cat': 'a small feline'}}\n")
    load_environment_plugins([str(plugin)], entry_points=False)
    game = get_environment("hangman", max_guesses=5)
    run(game.reset({"messages": [{"role": "user", "content": "Guess my word."}], "ground_truth": "rlvr"}))
    assert run(game.step(assistant("r"))).messages[0]["content"] == "r__r (4 left)"
    run(game.step(assistant("l")))
    final = run(game.step(assistant("v")))
    assert final.done and final.reward == 1.0
    obs = run(get_environment("dictionary").step(assistant(hermes("lookup", word="Cat"))))
    assert obs.messages[0]["content"] == "a small feline"
    env = get_environment("tools", tools=["notes", "lookup"], tool_options={"notes": {"max_notes": 1}})
    obs = run(env.step(assistant(hermes("notes", text="a") + hermes("notes", text="b"))))
    assert [m["content"][:20] for m in obs.messages] == ["a", "error: notes failed:"]


# ---------------------------------------------------------------- command


def test_cmd_environments_prints_the_tables(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.plugin is None
    assert cmd_environments(args) == 0
    out = capsys.readouterr().out
    for word in ("environments", "single_turn", "code_feedback", "calculator", "python", "hermes", "compact"):
        assert word in out


def test_cmd_environments_reports_a_bad_plugin(capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert cmd_environments(parser.parse_args(["--plugin", "no_such_env_plugin_abc"])) == 1
    err = capsys.readouterr().err
    assert err.startswith("rlvr: error: ") and "no_such_env_plugin_abc" in err
