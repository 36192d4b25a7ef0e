"""Tool-call parsers: find the tool calls in an assistant message's text.

A parser turns text into ``(calls, errors)``: the calls it could read, in order, and one
message per call it could not (so the environment can tell the model what to fix instead of
silently ignoring a broken call). ``format_call`` writes a call in the same syntax, for toy
data and tests. Parsers are registered by name (``@register_parser``) and a recipe picks
one per environment (``ToolEnvironment(parser=...)``).

Built-ins:

* ``hermes`` (default): the Qwen2.5 / Qwen3 / Hermes syntax, any number of blocks per message::

      <tool_call>
      {"name": "calculator", "arguments": {"expression": "2 + 3"}}
      </tool_call>

  ``arguments`` may also be a JSON string holding the object (some models emit that).
* ``compact``: one line per call, for tiny toy models that cannot learn JSON::

      <tool>calculator: 2 + 3</tool>

  The text after ``NAME:`` (stripped) is the single string argument, given to the tool's
  first parameter (``ToolCall.arguments`` is then a ``str``, not a dict).

Only the text after the last ``</think>`` is searched: a model thinking about a call
("maybe I should use <tool_call>...") has not made one. A block left open at the very end
counts as closed, since generation is often stopped on the closing tag itself.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable

from rlvr.environments.base import EnvironmentConfigError


@dataclass
class ToolCall:
    """One call: the tool's name and its arguments (a dict, or one string for ``compact``)."""
    name: str
    arguments: dict | str


class ToolCallParser:
    """Base class of parsers: ``parse(text) -> (calls, errors)`` and ``format_call``."""
    name = ""
    syntax = ""  # shown to the model in error messages: how a call must look

    def parse(self, text: str) -> tuple[list[ToolCall], list[str]]:
        raise NotImplementedError

    def format_call(self, name: str, arguments: dict | str) -> str:
        raise NotImplementedError


_PARSERS: dict[str, type[ToolCallParser]] = {}


def register_parser(name: str) -> Callable[[type[ToolCallParser]], type[ToolCallParser]]:
    """Class decorator registering a ``ToolCallParser`` subclass under ``name``."""
    def deco(cls: type[ToolCallParser]) -> type[ToolCallParser]:
        old = _PARSERS.get(name)
        if old is not None and old.__qualname__ != cls.__qualname__:
            raise EnvironmentConfigError(f"parser: '{name}' registered twice ({old.__module__} and {cls.__module__})")
        cls.name = name
        _PARSERS[name] = cls
        return cls
    return deco


def get_parser(name: str) -> ToolCallParser:
    """A new parser instance; EnvironmentConfigError listing the known names if unknown."""
    cls = _PARSERS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise EnvironmentConfigError(f"parser: unknown tool-call parser {name!r} (known: {', '.join(sorted(_PARSERS))})")
    return cls()


def list_parsers() -> list[tuple[str, str]]:
    """(name, syntax) of every registered parser, sorted by name."""
    return [(n, _PARSERS[n].syntax) for n in sorted(_PARSERS)]


def format_call(name: str, arguments: dict | str, parser: str = "hermes") -> str:
    """``name(arguments)`` written in a parser's syntax (default hermes)."""
    return get_parser(parser).format_call(name, arguments)


def _after_thinking(text: str) -> str:
    return text.rsplit("</think>", 1)[1] if "</think>" in text else text


_HERMES_RE = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)


@register_parser("hermes")
class HermesParser(ToolCallParser):
    syntax = '<tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>'

    def parse(self, text: str) -> tuple[list[ToolCall], list[str]]:
        calls: list[ToolCall] = []
        errors: list[str] = []
        for i, body in enumerate(_HERMES_RE.findall(_after_thinking(text or "")), start=1):
            call, err = self._one(body.strip())
            if call is not None:
                calls.append(call)
            else:
                errors.append(f"tool call {i}: {err}; write {self.syntax} with valid JSON")
        return calls, errors

    @staticmethod
    def _one(body: str) -> tuple[ToolCall | None, str]:
        try:
            obj = json.loads(body)
        except ValueError as e:
            msg = getattr(e, "msg", str(e))
            col = getattr(e, "colno", None)
            return None, f"invalid JSON ({msg}{f' at column {col}' if col else ''})"
        if not isinstance(obj, dict):
            return None, "expected a JSON object with \"name\" and \"arguments\""
        name = obj.get("name")
        if not isinstance(name, str) or not name.strip():
            return None, "missing \"name\" (a non-empty string)"
        args: Any = obj.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                return None, "\"arguments\" is a string that is not a JSON object"
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return None, "\"arguments\" must be a JSON object"
        return ToolCall(name.strip(), args), ""

    def format_call(self, name: str, arguments: dict | str) -> str:
        if isinstance(arguments, str):
            raise ValueError("hermes calls take a dict of arguments")
        return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + "\n</tool_call>"


_COMPACT_RE = re.compile(r"<tool>(.*?)(?:</tool>|\Z)", re.S)
_COMPACT_CALL_RE = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*:(.*)", re.S)


@register_parser("compact")
class CompactParser(ToolCallParser):
    syntax = "<tool>TOOL: ARGUMENT</tool>"

    def parse(self, text: str) -> tuple[list[ToolCall], list[str]]:
        calls: list[ToolCall] = []
        errors: list[str] = []
        for i, body in enumerate(_COMPACT_RE.findall(_after_thinking(text or "")), start=1):
            m = _COMPACT_CALL_RE.fullmatch(body)
            if m is None:
                errors.append(f"tool call {i}: expected a tool name and a colon; write {self.syntax}")
            else:
                calls.append(ToolCall(m.group(1), m.group(2).strip()))
        return calls, errors

    def format_call(self, name: str, arguments: dict | str) -> str:
        if isinstance(arguments, dict):
            if len(arguments) != 1:
                raise ValueError("compact calls take exactly one argument")
            arguments = next(iter(arguments.values()))
        return f"<tool>{name}: {arguments}</tool>"
