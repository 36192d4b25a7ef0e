"""Start model-scored verifiers: judges' vLLM engines (Ray actors, or in-process for `rlvr verify` / `rlvr eval`)
and reward models, handed to the scorer as clients. The verifiers room sees only those clients, never an
engine class: this module is where the two meet."""
from __future__ import annotations

from rlvr.hub import local_path
from rlvr.verifiers.judge import JudgeClient
from rlvr.verifiers.model_config import JudgeConfig, RewardModelConfig
from rlvr.verifiers.reward_model import RewardModelClient
from rlvr.verifiers.scorer import ModelVerifiers


def start_model_verifiers(judges: dict[str, JudgeConfig], reward_models: dict[str, RewardModelConfig], *,
                          placement=None, seed: int = 0) -> ModelVerifiers | None:
    """Start the judges' engines and the reward models as Ray actors (in the placement plan's bundles when
    `placement` is given); endpoint judges get an HTTP client. Actors load in the background:
    call `wait_ready()`. None when nothing is declared."""
    if not judges and not reward_models:
        return None
    import ray

    from rlvr.engines.judge import JudgeActor
    from rlvr.verifiers.judge import EngineBackend
    from rlvr.verifiers.reward_model import RewardModelActor

    clients: dict[str, JudgeClient] = {}
    actors, ready = [], []
    for name, cfg in judges.items():
        if not cfg.own_engine:
            clients[name] = JudgeClient.for_endpoint(name, cfg)
            continue
        engines = []
        for i in range(cfg.engines):
            opts = placement.judge_options(name, i) if placement else {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus * cfg.tensor_parallel_size}
            h = ray.remote(JudgeActor).options(**opts).remote(
                local_path(cfg.path, cfg.revision), seed=seed, dtype=cfg.dtype, max_model_len=cfg.max_model_len,
                kv_cache_gib=cfg.kv_cache_gib,
                tensor_parallel_size=cfg.tensor_parallel_size, gpu_memory_utilization=cfg.gpu_memory_utilization,
                engine_index=i, name=name)
            engines.append(h)
            ready.append(h.ready.remote())
        actors += engines
        clients[name] = JudgeClient(name, cfg, EngineBackend(engines))
    rms: dict[str, RewardModelClient] = {}
    for name, cfg in reward_models.items():
        opts = placement.reward_model_options(name) if placement else {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}
        h = ray.remote(RewardModelActor).options(**opts).remote(cfg.model_dump(mode="json"), threads=max(1, int(cfg.num_cpus)))
        actors.append(h)
        ready.append(h.ready.remote())
        rms[name] = RewardModelClient(name, cfg, h)
    mv = ModelVerifiers(clients, rms, actors=actors)
    mv._ready_refs = ready
    return mv


def local_model_verifiers(judges: dict[str, JudgeConfig], reward_models: dict[str, RewardModelConfig], *,
                          seed: int = 0) -> ModelVerifiers | None:
    """The same, in this process without Ray (`rlvr verify`, `rlvr eval`): engines run on the client's loop."""
    if not judges and not reward_models:
        return None
    from rlvr.engines.judge import JudgeActor
    from rlvr.verifiers.judge import EngineBackend
    from rlvr.verifiers.reward_model import RewardModelActor

    clients: dict[str, JudgeClient] = {}
    local = []
    for name, cfg in judges.items():
        if not cfg.own_engine:
            clients[name] = JudgeClient.for_endpoint(name, cfg)
            continue
        engines = [JudgeActor(local_path(cfg.path, cfg.revision), seed=seed, dtype=cfg.dtype, max_model_len=cfg.max_model_len,
                              kv_cache_gib=cfg.kv_cache_gib, tensor_parallel_size=cfg.tensor_parallel_size,
                              gpu_memory_utilization=cfg.gpu_memory_utilization, engine_index=i, name=name)
                   for i in range(cfg.engines)]
        local += engines
        clients[name] = JudgeClient(name, cfg, EngineBackend(engines))
    rms = {name: RewardModelClient(name, cfg, RewardModelActor(cfg.model_dump(mode="json")))
           for name, cfg in reward_models.items()}
    return ModelVerifiers(clients, rms, local_engines=local)
