"""Errors that cross rooms: raised at the edges (engines), recognised below them (environments, agents)."""


class EngineDead(RuntimeError):
    """The vLLM engine under a rollout actor is gone (its EngineCore died or it stopped answering).

    Environments and agents let it pass: the scheduler reruns the group elsewhere and restarts the
    engine; it is never a trajectory's own error (reward 0)."""
