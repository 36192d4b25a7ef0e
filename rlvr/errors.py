"""Errors that cross rooms: raised at the edges (engines), recognised below them (environments, agents)."""


class EngineDead(RuntimeError):
    """The vLLM engine under a rollout actor is gone (its EngineCore died or it stopped answering).

    Environments and agents let it pass: the scheduler reruns the group elsewhere and restarts the
    engine; it is never a trajectory's own error (reward 0)."""


class PromptRefused(ValueError):
    """The engine refused one request (vLLM's input checks: e.g. a prompt of `max_model_len` tokens or more).

    The row's problem, not the engine's: its group is skipped and counted (`rollout/refused_prompts`),
    the engine is never restarted for it."""


class EngineCallEnded(RuntimeError):
    """An engine's streaming call ended before returning all its groups (the engine is then checked)."""


def engine_error_kind(error: BaseException, engine_errored: bool) -> str:
    """How a failed engine request is handled: "dead" (restart the engine, rerun the group elsewhere),
    "refused" (vLLM rejected the request itself, a client error: skip the row) or "other"."""
    if engine_errored or isinstance(error, EngineDead):
        return "dead"
    if isinstance(error, PromptRefused):
        return "refused"
    try:
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:  # no vLLM here (a unit test's stand-in): nothing else to recognise
        return "other"
    if isinstance(error, EngineDeadError):
        return "dead"
    return "refused" if isinstance(error, VLLMClientError) else "other"
