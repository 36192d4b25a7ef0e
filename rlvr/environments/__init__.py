"""Environments for multi-turn rollouts: tools, code feedback, plugins (engine-free layer).

See docs/environments.md. Importing this package is cheap: the sandbox-backed pieces
(``python_tool``, ``code_feedback``) are imported when first used through the registry.
"""
from rlvr.environments.base import (Environment, EnvironmentConfigError, Observation, SingleTurn, accumulate_info,
                                    content_text)
from rlvr.environments.calculator import calculator
from rlvr.environments.parsers import ToolCall, ToolCallParser, format_call, get_parser, list_parsers, register_parser
from rlvr.environments.registry import (ENTRY_POINT_GROUP, check_environment_names, get_environment, get_tool,
                                        list_environments, list_tools, load_environment_plugins,
                                        register_environment, register_tool, tools_environment,
                                        unregister_environment, unregister_tool)
from rlvr.environments.template import TemplateMismatchError, render_delta
from rlvr.environments.tools import ToolEnvironment, tool_schema, truncate

__all__ = [
    "Environment", "EnvironmentConfigError", "Observation", "SingleTurn", "accumulate_info", "content_text",
    "calculator", "ToolCall", "ToolCallParser", "format_call", "get_parser", "list_parsers", "register_parser",
    "ENTRY_POINT_GROUP", "check_environment_names", "get_environment", "get_tool", "list_environments", "list_tools",
    "load_environment_plugins", "register_environment", "register_tool", "tools_environment",
    "unregister_environment", "unregister_tool", "TemplateMismatchError", "render_delta", "ToolEnvironment",
    "tool_schema", "truncate",
]
