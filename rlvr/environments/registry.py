"""Environment and tool registries: built-ins, decorators, plugin modules and entry points.

Mirrors the verifier registry (``rlvr/verifiers/registry.py``): built-ins are listed by
``module:attr`` and imported on first use; plugins register with a decorator when their module
is imported (``environments.plugins`` in a recipe, a module name or a ``.py`` path) or through
the ``rlvr.environments`` entry-point group; every problem is one ``EnvironmentConfigError``
line naming the field or plugin.

Environments are registered as factories (a class or a function) called with a recipe's
options, once per trajectory: ``get_environment("tools", tools=["calculator"])`` is a fresh
``ToolEnvironment``. Tools are registered the same way, so the ``tools`` environment can take
them by name; a stateful tool (``python`` with ``stateful: true``) is made per environment.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from rlvr.environments.base import Environment, EnvironmentConfigError
from rlvr.verifiers.registry import _first_line, _qualname

ENTRY_POINT_GROUP = "rlvr.environments"


@dataclass
class _Entry:
    name: str
    description: str
    source: str
    obj: Any = None               # the factory (environments) or the tool/factory (tools); None until imported
    target: str | None = None     # "module:attr" of a lazy built-in
    is_factory: bool = True       # tools: call obj(**options) to make the tool; else obj is the tool

    def resolve(self) -> "_Entry":
        if self.obj is None:
            mod_name, attr = self.target.split(":")
            self.obj = getattr(importlib.import_module(mod_name), attr)
        return self


_ENV_BUILTINS = {
    "single_turn": ("rlvr.environments.base:SingleTurn",
                    "one answer ends the trajectory; the row's verifier scores it (existing rows)"),
    "tools": ("rlvr.environments.registry:tools_environment",
              "runs the model's tool calls (calculator, python, plugin tools) until it answers without one"),
    "code_feedback": ("rlvr.environments.code_feedback:CodeFeedbackEnvironment",
                      "program submissions run against the row's tests; failing tests come back, up to max_attempts"),
    "ask_twice": ("rlvr.environments.agent:ask_twice_agent",
                  "agent (OpenAI client): asks, then asks 'Are you sure?' with the history re-sent"),
}
_TOOL_BUILTINS = {
    "calculator": ("rlvr.environments.calculator:calculator", False,
                   "arithmetic: + - * / // % ** and parentheses, no names or calls"),
    "python": ("rlvr.environments.python_tool:make_python_tool", True,
               "runs Python in the bwrap sandbox and returns its output (options: stateful, timeout_s, ...)"),
}


def _env_builtin(name: str) -> _Entry:
    target, desc = _ENV_BUILTINS[name]
    return _Entry(name, desc, target.split(":")[0], target=target)


def _tool_builtin(name: str) -> _Entry:
    target, factory, desc = _TOOL_BUILTINS[name]
    return _Entry(name, desc, target.split(":")[0], target=target, is_factory=factory)


_ENVS: dict[str, _Entry] = {n: _env_builtin(n) for n in _ENV_BUILTINS}
_TOOLS: dict[str, _Entry] = {n: _tool_builtin(n) for n in _TOOL_BUILTINS}
_LOADING_SOURCE: str | None = None   # set while a plugin file or entry point loads: its registrations' source
_ENTRY_POINTS_LOADED = False


def _register(table: dict[str, _Entry], kind: str, name: str, obj: Any, description: str, is_factory: bool) -> None:
    if not isinstance(name, str) or not name:
        raise EnvironmentConfigError(f"{kind} name must be a non-empty string, got {name!r}")
    source = _LOADING_SOURCE or getattr(obj, "__module__", None) or "?"
    old = table.get(name)
    if old is not None:
        # The same definition imported twice is harmless; two definitions of one name are a conflict.
        if not (old.obj is not None and _qualname(old.obj) == _qualname(obj) and old.source == source):
            raise EnvironmentConfigError(f"{kind} '{name}' registered twice: by {old.source} and by {source}")
    table[name] = _Entry(name, description or _first_line(obj.__doc__), source, obj=obj, is_factory=is_factory)


def register_environment(name: str, description: str = "") -> Callable[[Any], Any]:
    """Decorator registering an Environment subclass, or a function returning one, under ``name``.

    It is called with the recipe's options as keyword arguments, once per trajectory.
    """
    def deco(obj: Any) -> Any:
        if not callable(obj):
            raise EnvironmentConfigError(f"environment '{name}': {obj!r} is neither a class nor a function")
        _register(_ENVS, "environment", name, obj, description, True)
        return obj
    return deco


def register_tool(name: str | None = None, description: str = "", *, factory: bool = False) -> Callable[[Any], Any]:
    """Decorator registering a tool function (its ``__name__`` unless ``name`` is given; bare
    ``@register_tool`` works too).

    With ``factory=True`` the decorated function instead *makes* the tool from the recipe's
    options (``tool_options``), once per environment: the way to give a tool per-trajectory state.
    """
    if callable(name):  # used bare: @register_tool
        return register_tool()(name)

    def deco(obj: Any) -> Any:
        if not callable(obj):
            raise EnvironmentConfigError(f"tool {name or obj!r} is not callable")
        _register(_TOOLS, "tool", name or obj.__name__, obj, description, factory)
        return obj
    return deco


def unregister_environment(name: str) -> None:
    """Remove a plugin environment (tests use this); a built-in comes back as it was."""
    _ENVS.pop(name, None)
    if name in _ENV_BUILTINS:
        _ENVS[name] = _env_builtin(name)


def unregister_tool(name: str) -> None:
    """Remove a plugin tool (tests use this); a built-in comes back as it was."""
    _TOOLS.pop(name, None)
    if name in _TOOL_BUILTINS:
        _TOOLS[name] = _tool_builtin(name)


def _known(table: dict[str, _Entry]) -> str:
    return ", ".join(sorted(table))


def _check_options(fn: Callable[..., Any], options: dict, where: str, skip: Iterable[str] = ()) -> None:
    """EnvironmentConfigError naming the first option ``fn`` does not accept (or a missing one)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
                and n not in skip]
    for key in options:
        if key not in accepted:
            raise EnvironmentConfigError(f"{where}: unknown option '{key}' (accepted: {', '.join(accepted) or 'none'})")
    for n, p in params.items():
        if n not in skip and p.default is p.empty and p.kind is not p.VAR_POSITIONAL and n not in options:
            raise EnvironmentConfigError(f"{where}: missing option '{n}'")


def get_environment(name: str, **options: Any) -> Environment:
    """A new environment (one trajectory's) made by the factory registered under ``name``."""
    entry = _ENVS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise EnvironmentConfigError(f"env: unknown environment {name!r} (known: {_known(_ENVS)}; plugins are loaded "
                                     f"from environments.plugins and the '{ENTRY_POINT_GROUP}' entry points)")
    factory = entry.resolve().obj
    _check_options(factory, options, f"environment '{name}'")
    env = factory(**options)
    if not isinstance(env, Environment):
        raise EnvironmentConfigError(f"environment '{name}': its factory returned {type(env).__name__}, "
                                     "not an Environment")
    return env


def check_environment_names(names: Iterable[str]) -> None:
    """EnvironmentConfigError naming every unknown environment (for validating a recipe early)."""
    unknown = sorted({n for n in names if n not in _ENVS}, key=str)
    if unknown:
        raise EnvironmentConfigError(f"env: unknown environment{'s' if len(unknown) > 1 else ''} "
                                     f"{', '.join(repr(u) for u in unknown)} (known: {_known(_ENVS)})")


def list_environments() -> list[tuple[str, str, str]]:
    """(name, description, source) of every registered environment, sorted by name."""
    return [(e.name, e.description, e.source) for e in sorted(_ENVS.values(), key=lambda e: e.name)]


def get_tool(name: str, **options: Any) -> Callable[..., Any]:
    """The tool registered under ``name``; a factory-registered tool is made with ``options``."""
    entry = _TOOLS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise EnvironmentConfigError(f"tools: unknown tool {name!r} (known: {_known(_TOOLS)})")
    obj = entry.resolve().obj
    if not entry.is_factory:
        if options:
            raise EnvironmentConfigError(f"tool_options: tool '{name}' takes no options, got '{next(iter(options))}'")
        return obj
    _check_options(obj, options, f"tool_options.{name}")
    return obj(**options)


def list_tools() -> list[tuple[str, str, str]]:
    """(name, description, source) of every registered tool, sorted by name."""
    return [(e.name, e.description, e.source) for e in sorted(_TOOLS.values(), key=lambda e: e.name)]


def tools_environment(tools: Sequence[str | Callable[..., Any]] = ("calculator",),
                      tool_options: dict[str, dict] | None = None, **options: Any) -> Environment:
    """The ``tools`` environment: a ToolEnvironment offering registered tools by name.

    ``tools``: names from the tool registry (or functions); ``tool_options``: per-tool options,
    e.g. ``{"python": {"stateful": true, "timeout_s": 3}}``; other options go to ToolEnvironment
    (``parser``, ``tool_timeout_s``, ``max_output_chars``, ``max_calls_per_turn``).
    """
    from rlvr.environments.tools import ToolEnvironment

    if isinstance(tools, str) or not isinstance(tools, Sequence):
        raise EnvironmentConfigError(f"tools: must be a list of tool names, got {tools!r}")
    tool_options = dict(tool_options or {})
    names = [t for t in tools if isinstance(t, str)]
    if not all(isinstance(t, str) or callable(t) for t in tools):
        raise EnvironmentConfigError(f"tools: must be a list of tool names, got {list(tools)!r}")
    for key in tool_options:
        if key not in names:
            raise EnvironmentConfigError(f"tool_options: '{key}' is not one of the tools ({', '.join(names)})")
    _check_options(ToolEnvironment, options, "environment 'tools'", skip=("tools",))
    made: dict[str, Callable[..., Any]] = {}
    for t in tools:
        name = t if isinstance(t, str) else getattr(t, "__name__", repr(t))
        if name in made:
            raise EnvironmentConfigError(f"tools: {name!r} is listed twice")
        made[name] = get_tool(t, **tool_options.get(t, {})) if isinstance(t, str) else t
    return ToolEnvironment(made, **options)


def load_environment_plugins(modules: Iterable[str] = (), entry_points: bool = True) -> None:
    """Import plugin modules (dotted names or ``.py`` paths), then the entry points (once).

    Importing runs their ``@register_environment`` / ``@register_tool`` decorators. A file is
    imported once per path, under a name derived from it (``rlvr_plugin_<stem>_<hash>``, rlvr/plugins.py).
    """
    for mod in modules:
        try:
            from rlvr.plugins import import_target, is_file

            if is_file(mod):
                _import_path(mod)
            else:
                import_target(mod)  # the start directory is importable too
        except EnvironmentConfigError:
            raise
        except BaseException as e:  # noqa: BLE001 - a plugin's SystemExit must not end the run either
            raise EnvironmentConfigError(f"environments.plugins: cannot import '{mod}': {type(e).__name__}: {e}") from e
    if entry_points:
        _load_entry_points()


def _import_path(path: str) -> types.ModuleType:
    global _LOADING_SOURCE
    from rlvr.plugins import import_target

    _LOADING_SOURCE = path
    try:
        return import_target(path)  # one loader for every plugin kind: a file is imported once, under one name
    finally:
        _LOADING_SOURCE = None


def _load_entry_points() -> None:
    """Each entry point is a module (its decorators register) or a factory registered under the entry's name."""
    global _ENTRY_POINTS_LOADED, _LOADING_SOURCE
    if _ENTRY_POINTS_LOADED:
        return
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
        _LOADING_SOURCE = f"{dist} (entry point {ep.name})"
        try:
            obj = ep.load()
            if not isinstance(obj, types.ModuleType):
                if not callable(obj):
                    raise EnvironmentConfigError(f"environment entry point '{ep.name} = {ep.value}' from {dist} is "
                                                 "neither a module nor a factory")
                if not any(e.obj is obj for e in _ENVS.values()):
                    register_environment(ep.name)(obj)
        except EnvironmentConfigError:
            raise
        except BaseException as e:  # noqa: BLE001
            raise EnvironmentConfigError(f"cannot load environment entry point '{ep.name} = {ep.value}' from {dist}: "
                                         f"{type(e).__name__}: {e}") from e
        finally:
            _LOADING_SOURCE = None
    _ENTRY_POINTS_LOADED = True
