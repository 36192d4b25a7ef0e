"""Tools as plain Python functions, and the environment that runs the calls a model makes.

A tool is any function (sync or ``async def``) with type hints and a docstring: its JSON
schema, which the chat template shows the model, is derived from them by ``tool_schema``, so
there is one source of truth. ``ToolEnvironment`` parses the calls in each assistant
message, runs them, and answers with one ``{"role": "tool"}`` message per call.

Nothing a tool or a model does ends the rollout: broken call syntax, an unknown tool, wrong
arguments, a tool that raises or runs too long each become an ``error: ...`` message telling
the model what to fix, and are counted in ``Observation.info``.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
import types
import typing
from typing import Any, Callable, Mapping, Sequence

from rlvr.environments.base import Environment, EnvironmentConfigError, Observation, content_text
from rlvr.environments.parsers import ToolCall, get_parser

_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean"}
_SECTION_RE = re.compile(r"^(Args|Arguments|Parameters|Returns?|Raises|Yields?|Examples?|Notes?|Attributes):\s*$")
_ARG_LINE_RE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def tool_schema(fn: Callable[..., Any], name: str | None = None) -> dict:
    """The OpenAI-style function schema of ``fn``, from its signature and docstring.

    ``name``: the tool's name (default ``fn.__name__``).

    Types: int -> integer, float -> number, str -> string, bool -> boolean, list/tuple -> array
    (with ``items`` when the element type is known), dict -> object, ``Literal[...]`` -> enum.
    A parameter with a default, or ``Optional``, is not required. The description is the
    docstring's first paragraph; Google-style ``Args:`` lines describe the parameters.
    EnvironmentConfigError for a type that has no JSON equivalent.
    """
    name = name or getattr(fn, "__name__", None)
    if not callable(fn) or not name:
        raise EnvironmentConfigError(f"tools: {fn!r} is not a named function")
    try:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
    except (TypeError, ValueError, NameError) as e:
        raise EnvironmentConfigError(f"tools: cannot read the signature of {name}: {e}") from None
    description, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
    properties: dict[str, dict] = {}
    required: list[str] = []
    for pname, param in sig.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        ann = hints.get(pname, inspect.Parameter.empty)
        prop, optional = _json_type(ann, f"tool {name}: parameter {pname!r}")
        if pname in arg_docs:
            prop["description"] = arg_docs[pname]
        properties[pname] = prop
        if param.default is inspect.Parameter.empty and not optional:
            required.append(pname)
    return {"type": "function",
            "function": {"name": name, "description": description,
                         "parameters": {"type": "object", "properties": properties, "required": required}}}


def _json_type(ann: Any, where: str) -> tuple[dict, bool]:
    """(JSON schema of a type hint, whether None is allowed)."""
    if ann is inspect.Parameter.empty or ann is Any:
        return {}, False
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _json_type(rest[0], where)[0], len(rest) < len(args)
        return {"anyOf": [_json_type(a, where)[0] for a in rest]}, len(rest) < len(args)
    if origin is typing.Literal:
        kinds = {_SCALARS.get(type(a)) for a in args}
        return ({"type": kinds.pop()} if len(kinds) == 1 and None not in kinds else {}) | {"enum": list(args)}, False
    if ann in _SCALARS:
        return {"type": _SCALARS[ann]}, False
    if ann in (list, tuple) or origin in (list, tuple, Sequence, typing.Sequence):
        schema: dict = {"type": "array"}
        if args and args[0] is not Ellipsis:
            item = _json_type(args[0], where)[0]
            if item:
                schema["items"] = item
        return schema, False
    if ann is dict or origin is dict:
        return {"type": "object"}, False
    if ann is type(None):
        return {"type": "null"}, True
    raise EnvironmentConfigError(f"{where} has type {getattr(ann, '__name__', ann)!s}, which has no JSON equivalent "
                                 "(use int, float, str, bool, list or dict)")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(first paragraph as one line, {parameter: description} from an ``Args:`` section)."""
    lines = doc.splitlines()
    para: list[str] = []
    for line in lines:
        if not line.strip() or _SECTION_RE.match(line.strip()):
            break
        para.append(line.strip())
    args: dict[str, str] = {}
    in_args, indent, current = False, None, None
    for line in lines:
        stripped = line.strip()
        if not line.startswith((" ", "\t")) and _SECTION_RE.match(stripped):
            in_args, indent, current = stripped.split(":")[0] in ("Args", "Arguments", "Parameters"), None, None
            continue
        if not in_args or not stripped:
            continue
        level = len(line) - len(line.lstrip())
        if level == 0:
            in_args = False  # text back at the left margin ends the section
            continue
        if indent is None:
            indent = level
        m = _ARG_LINE_RE.match(stripped)
        if level == indent and m:
            current = m.group(1)
            args[current] = m.group(2).strip()
        elif current is not None and level > indent:
            args[current] = (args[current] + " " + stripped).strip()
    return " ".join(para), args


def truncate(text: str, max_chars: int) -> str:
    """``text`` if short enough, else its head and tail with a marker saying what was cut."""
    if len(text) <= max_chars:
        return text
    head = max_chars * 2 // 3
    tail = max_chars - head
    cut = len(text) - head - tail
    return f"{text[:head]}\n... [truncated: {cut} characters omitted] ...\n{text[len(text) - tail:] if tail else ''}"


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _json_ok(value: Any, schema: dict) -> bool:
    kind = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        return False
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True


_JSON_NAMES = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
               "array": "a list", "object": "an object"}


class ToolEnvironment(Environment):
    """Runs the tool calls of each assistant message; a message without calls ends the trajectory.

    ``tools``: the functions offered, named by their ``__name__``, or a ``{name: function}`` dict.
    ``parser``: the tool-call syntax (``parsers.py``). ``tool_timeout_s``: limit of one call
    (a sync tool runs in a thread, which cannot be stopped: it finishes in the background,
    so tools that can hang should bound themselves too, as the sandboxed ``python`` does).
    ``max_output_chars``: longer results are cut, head and tail kept.
    ``max_calls_per_turn``: calls past this many in one message are not run (error message).

    ``info`` of each step: ``tool_calls``, ``tool_errors``, ``tool_timeouts`` (counts by tool
    name; errors of unreadable calls under ``"parse"``, calls of unknown tools under
    ``"unknown"``) and ``tool_seconds`` (by tool name).
    """

    def __init__(self, tools: Sequence[Callable[..., Any]] | Mapping[str, Callable[..., Any]], *,
                 parser: str = "hermes", tool_timeout_s: float = 10.0,
                 max_output_chars: int = 4000, max_calls_per_turn: int = 8):
        if not isinstance(tool_timeout_s, (int, float)) or tool_timeout_s <= 0:
            raise EnvironmentConfigError(f"tool_timeout_s: must be a positive number of seconds, got {tool_timeout_s!r}")
        if not isinstance(max_output_chars, int) or max_output_chars < 100:
            raise EnvironmentConfigError(f"max_output_chars: must be an integer >= 100, got {max_output_chars!r}")
        if not isinstance(max_calls_per_turn, int) or max_calls_per_turn < 1:
            raise EnvironmentConfigError(f"max_calls_per_turn: must be an integer >= 1, got {max_calls_per_turn!r}")
        self.parser = get_parser(parser)
        self.tool_timeout_s = float(tool_timeout_s)
        self.max_output_chars = max_output_chars
        self.max_calls_per_turn = max_calls_per_turn
        self._tools: dict[str, Callable[..., Any]] = {}
        self._schemas: dict[str, dict] = {}
        named = tools.items() if isinstance(tools, Mapping) else [(None, fn) for fn in tools]
        for given, fn in named:
            schema = tool_schema(fn, name=given)
            name = schema["function"]["name"]
            if name in self._tools:
                raise EnvironmentConfigError(f"tools: two tools are named {name!r}")
            self._tools[name] = fn
            self._schemas[name] = schema

    @property
    def tools(self) -> list[dict]:
        return list(self._schemas.values())

    async def step(self, assistant_message: dict) -> Observation:
        info: dict[str, dict] = {"tool_calls": {}, "tool_errors": {}, "tool_timeouts": {}, "tool_seconds": {}}
        try:
            calls, errors = self.parser.parse(content_text(assistant_message))
        except Exception as e:  # noqa: BLE001 - a parser bug is reported, not raised
            calls, errors = [], [f"could not read the tool calls ({type(e).__name__}: {e})"]
        if not calls and not errors:
            return Observation(messages=[], done=True, info=info)
        messages = []
        for err in errors:
            _count(info["tool_errors"], "parse")
            messages.append(self._message("parse", f"error: {err}"))
        for k, call in enumerate(calls):
            if k >= self.max_calls_per_turn:
                _count(info["tool_errors"], "too_many")
                messages.append(self._message(call.name, f"error: not run: at most {self.max_calls_per_turn} tool "
                                                         "calls per message; make fewer calls at a time"))
                continue
            messages.append(self._message(call.name, await self._run_call(call, info)))
        return Observation(messages=messages, done=False, info=info)

    def _message(self, name: str, content: str) -> dict:
        return {"role": "tool", "name": name, "content": truncate(content, self.max_output_chars)}

    async def _run_call(self, call: ToolCall, info: dict) -> str:
        """The content of the tool message answering ``call``; never raises (but on cancellation)."""
        name = call.name
        fn = self._tools.get(name)
        if fn is None:
            _count(info["tool_errors"], "unknown")
            return f"error: unknown tool {name!r}; available tools: {', '.join(sorted(self._tools)) or 'none'}"
        _count(info["tool_calls"], name)
        t0 = time.monotonic()
        try:
            kwargs, problem = self._arguments(name, call.arguments)
            if problem:
                _count(info["tool_errors"], name)
                return f"error: wrong arguments for {name}: {problem}; expected {self._signature(name)}"
            # A task and asyncio.wait rather than wait_for: a tool raising its own TimeoutError
            # must read as that tool's error, not as running past tool_timeout_s.
            task = asyncio.ensure_future(_guarded(fn, kwargs))
            try:
                done, _ = await asyncio.wait({task}, timeout=self.tool_timeout_s)
            except asyncio.CancelledError:
                task.cancel()
                raise
            if not done:
                task.cancel()
                _count(info["tool_errors"], name)
                _count(info["tool_timeouts"], name)
                return (f"error: {name} did not finish within {self.tool_timeout_s:g}s; "
                        "try a smaller input or a faster approach")
            return _as_text(task.result())
        except Exception as e:  # noqa: BLE001 - a tool's failure is an observation
            _count(info["tool_errors"], name)
            return f"error: {name} failed: {type(e).__name__}: {e}; fix the arguments and try again"
        finally:
            info["tool_seconds"][name] = info["tool_seconds"].get(name, 0.0) + (time.monotonic() - t0)

    def _arguments(self, name: str, arguments: dict | str) -> tuple[dict, str]:
        """(keyword arguments, "" ) or ({}, what is wrong with them)."""
        props = self._schemas[name]["function"]["parameters"]["properties"]
        required = self._schemas[name]["function"]["parameters"]["required"]
        if isinstance(arguments, str):  # one bare argument (compact syntax): the first parameter
            if not props:
                return {}, f"{name} takes no arguments"
            arguments = {next(iter(props)): arguments}
        unknown = [a for a in arguments if a not in props]
        if unknown:
            return {}, f"unexpected argument {unknown[0]!r}"
        missing = [p for p in required if p not in arguments]
        if missing:
            return {}, f"missing argument {missing[0]!r}"
        for arg, value in arguments.items():
            if value is None and arg not in required:
                continue
            if not _json_ok(value, props[arg]):
                want = props[arg].get("enum") or _JSON_NAMES.get(props[arg].get("type"), "another type")
                return {}, f"argument {arg!r} must be {want}, got {json.dumps(value)[:50]}"
        return dict(arguments), ""

    def _signature(self, name: str) -> str:
        props = self._schemas[name]["function"]["parameters"]["properties"]
        return f"{name}(" + ", ".join(f"{p}: {s.get('type', 'any')}" for p, s in props.items()) + ")"


class ToolExit(Exception):
    """A tool called ``sys.exit``: reported like any failure (asyncio would stop the loop on it)."""


async def _guarded(fn: Callable[..., Any], kwargs: dict) -> Any:
    """Run the tool (a sync one in a thread) with SystemExit turned into an ordinary error."""
    try:
        if _is_async(fn):
            return await fn(**kwargs)
        return await asyncio.to_thread(fn, **kwargs)
    except SystemExit as e:
        raise ToolExit(f"the tool called sys.exit({e.code!r})") from None


def _as_text(result: Any) -> str:
    if result is None:
        return "(no output)"
    if isinstance(result, str):
        return result if result else "(no output)"
    try:
        return json.dumps(result, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(result)


def _count(counter: dict, key: str) -> None:
    counter[key] = counter.get(key, 0) + 1
