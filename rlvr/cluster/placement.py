"""Ray start/attach, a preflight check of the plan against the cluster, and actor placement.

Placement groups reserve every learner rank and vLLM engine before any actor starts, so a
plan that cannot fit fails at once with the recipe fields to change instead of hanging on
pending actors. A bundle always lies on one node: an engine's bundle holds all its
tensor-parallel GPUs. Three layouts (docs/cluster.md):

* ``cluster.placement: pack`` (default): the learner ranks in one group, the engines in
  another, each packed onto as few nodes as Ray can (soft: a group spills over when it must).
* ``cluster.placement: spread``: every learner rank on its own node, every engine on its own
  node (Ray's STRICT_SPREAD); a rank and an engine may still share a node.
* ``cluster.colocate: true``: learner rank i and engine i share one bundle, the device Ray
  gives both (each reserves half of its GPU, as veRL and OpenRLHF do); pack or spread then
  applies to the pairs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from rlvr.config import Recipe

EPS = 1e-9


class PreflightError(RuntimeError):
    pass


def start_ray(recipe: Recipe) -> None:
    if ray.is_initialized():
        return
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "WARNING"),
                        "PYTHONWARNINGS": "ignore"}}
    # Inside a Ray job RAY_ADDRESS names the job's cluster; otherwise "local" always starts an embedded
    # cluster rather than joining whatever `ray start` left running on this machine.
    address = recipe.cluster.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=recipe.cluster.num_cpus, include_dashboard=False, runtime_env=env, log_to_driver=False)


@dataclass(frozen=True)
class Group:
    """One placement group of the plan."""

    name: str  # "learner", "rollout" or "colocated"
    what: str  # one bundle, in messages: "learner rank", "engine", "learner rank + engine pair"
    count_field: str  # the recipe field that sets the number of bundles
    size_fields: str  # the recipe fields that size one bundle
    bundle: dict[str, float]
    count: int
    spread: bool  # STRICT_SPREAD: one bundle per node

    @property
    def strategy(self) -> str:
        return "STRICT_SPREAD" if self.spread else "PACK"


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    b = {"CPU": float(cpus)}
    if gpus:
        b["GPU"] = float(gpus)
    return b


def groups(recipe: Recipe) -> list[Group]:
    """The placement groups the recipe asks for (pure: preflight and Placement share it)."""
    lr, ro, cl = recipe.learner, recipe.rollout, recipe.cluster
    spread = cl.placement == "spread"
    if cl.colocate:
        return [Group("colocated", "learner rank + engine pair", "learner.ranks (= rollout.engines)",
                      "learner.num_cpus + rollout.num_cpus, learner/rollout.num_gpus",
                      _bundle(lr.num_cpus + ro.num_cpus, lr.num_gpus), lr.ranks, spread)] + model_groups(recipe)
    return [Group("learner", "learner rank", "learner.ranks", "learner.num_cpus/num_gpus",
                  _bundle(lr.num_cpus, lr.num_gpus), lr.ranks, spread),
            Group("rollout", "engine", "rollout.engines", "rollout.num_cpus/num_gpus/tensor_parallel_size",
                  _bundle(ro.num_cpus, ro.num_gpus * ro.tensor_parallel_size), ro.engines, spread)] + model_groups(recipe)


def model_groups(recipe: Recipe) -> list[Group]:
    """Judge engines (own-engine judges only) and reward models: their own bundles, packed (a judge's engines may
    share a node; spread applies to the learner and rollout pools)."""
    out = []
    for name, j in recipe.judges.items():
        if j.own_engine:
            out.append(Group(f"judge-{name}", f"judge '{name}' engine", f"judges.{name}.engines",
                             f"judges.{name}.num_cpus/num_gpus/tensor_parallel_size",
                             _bundle(j.num_cpus, j.num_gpus * j.tensor_parallel_size), j.engines, False))
    for name, m in recipe.reward_models.items():
        out.append(Group(f"rm-{name}", f"reward model '{name}'", f"reward_models.{name}",
                         f"reward_models.{name}.num_cpus/num_gpus", _bundle(m.num_cpus, m.num_gpus), 1, False))
    return out


def plan(recipe: Recipe) -> dict[str, float]:
    """Total CPUs and GPUs the recipe reserves."""
    need = {"CPU": 0.0, "GPU": 0.0}
    for g in groups(recipe):
        for res in need:
            need[res] += g.bundle.get(res, 0.0) * g.count
    return need


def check_layout(recipe: Recipe) -> None:
    """What no cluster can satisfy: colocation and transport rules, independent of the nodes."""
    lr, ro, cl = recipe.learner, recipe.rollout, recipe.cluster
    gpus = lr.num_gpus > 0 and ro.num_gpus > 0
    backend = cl.weight_sync_backend
    if cl.colocate:
        if ro.engines != lr.ranks:
            raise PreflightError(f"cluster.colocate pairs each learner rank with one engine, but rollout.engines={ro.engines} "
                                 f"and learner.ranks={lr.ranks}: make them equal, or set cluster.colocate=false")
        if ro.tensor_parallel_size != 1:
            raise PreflightError("cluster.colocate puts an engine on its learner rank's one device: set "
                                 "rollout.tensor_parallel_size=1 (more engines instead), or cluster.colocate=false")
        if lr.num_gpus != ro.num_gpus or lr.num_gpus > 1:
            raise PreflightError(f"cluster.colocate shares one device per pair: set learner.num_gpus and rollout.num_gpus "
                                 f"to the same value, at most 1 (now {lr.num_gpus:g} and {ro.num_gpus:g})")
        if gpus and backend == "nccl":
            raise PreflightError("NCCL cannot connect a learner rank to an engine on the same GPU: set "
                                 "cluster.weight_sync_backend=cuda_ipc (or gloo) with cluster.colocate=true")
    if backend == "cuda_ipc" and not (cl.colocate and gpus):
        raise PreflightError("cluster.weight_sync_backend=cuda_ipc maps the learner's GPU memory into a colocated engine: "
                             "it needs cluster.colocate=true and GPUs (learner.num_gpus, rollout.num_gpus); else use nccl or gloo")
    if backend == "nccl" and not gpus:
        raise PreflightError("cluster.weight_sync_backend=nccl needs GPUs on the learner and the engines "
                             "(learner.num_gpus, rollout.num_gpus > 0): use gloo on CPUs")


def _fmt(res: dict[str, float]) -> str:
    return ", ".join(f"{res.get(k, 0.0):g} {k}" for k in ("CPU", "GPU") if res.get(k, 0.0) or k == "CPU")


def _fmt_nodes(nodes: list[dict[str, float]]) -> str:
    counts: dict[str, int] = {}
    for n in nodes:
        counts[_fmt(n)] = counts.get(_fmt(n), 0) + 1
    return f"{len(nodes)} node(s): " + "; ".join(f"{c} x ({k})" for k, c in counts.items())


def _fits_node(bundle: dict[str, float], node: dict[str, float]) -> bool:
    return all(node.get(res, 0.0) + EPS >= v for res, v in bundle.items())


class _GiveUp(Exception):
    pass


def _feasible(gs: list[Group], nodes: list[dict[str, float]], budget: int = 20000) -> bool | None:
    """Can every bundle be put on a node, spread groups one bundle per node? None: search too large to tell."""
    items = sorted(((i, g.bundle) for i, g in enumerate(gs) for _ in range(g.count)),
                   key=lambda it: (-it[1].get("GPU", 0.0), -it[1]["CPU"]))
    free = [dict(n) for n in nodes]
    taken: list[set[int]] = [set() for _ in nodes]  # spread groups already on each node
    steps = [budget]

    def place(k: int) -> bool:
        if k == len(items):
            return True
        steps[0] -= 1
        if steps[0] < 0:
            raise _GiveUp
        gi, b = items[k]
        tried = set()
        for ni, f in enumerate(free):
            key = (tuple(sorted(f.items())), frozenset(taken[ni]))
            if key in tried or (gs[gi].spread and gi in taken[ni]) or not _fits_node(b, f):
                continue
            tried.add(key)  # a node identical to one already tried leads to the same outcome
            for res, v in b.items():
                f[res] -= v
            if gs[gi].spread:
                taken[ni].add(gi)
            ok = place(k + 1)
            for res, v in b.items():
                f[res] += v
            taken[ni].discard(gi)
            if ok:
                return True
        return False

    try:
        return place(0)
    except _GiveUp:
        return None


def preflight(recipe: Recipe, nodes: list[dict[str, float]] | dict[str, float]) -> None:
    """Compare the plan with the cluster's nodes; say what is missing and which fields to change.

    ``nodes``: each alive node's CPU/GPU totals (a single mapping: one node).
    """
    nodes = [nodes] if isinstance(nodes, dict) else list(nodes)
    check_layout(recipe)
    need = plan(recipe)
    models = "".join(f", {g.size_fields}" for g in model_groups(recipe))
    for res, fields in (("CPU", "rollout.engines/num_cpus, learner.ranks/num_cpus"),
                        ("GPU", "rollout.engines/num_gpus/tensor_parallel_size, learner.ranks/num_gpus")):
        fields += models
        have = sum(n.get(res, 0.0) for n in nodes)
        if need[res] > have + EPS:
            raise PreflightError(f"the recipe needs {need[res]:g} {res}s but the cluster has {have:g}: "
                                 f"lower {fields}, or add nodes")
    gs = groups(recipe)
    for g in gs:
        able = sum(_fits_node(g.bundle, n) for n in nodes)
        if not able:
            raise PreflightError(f"one {g.what} needs ({_fmt(g.bundle)}) on a single node, but no node has that much "
                                 f"({_fmt_nodes(nodes)}): lower {g.size_fields}, or add larger nodes")
        if g.spread and able < g.count:
            raise PreflightError(f"cluster.placement=spread puts each of the {g.count} {g.what}s on its own node, but only "
                                 f"{able} node(s) can hold one ({_fmt(g.bundle)}; {_fmt_nodes(nodes)}): lower {g.count_field}, "
                                 "set cluster.placement=pack, or add nodes")
    if _feasible(gs, nodes) is False:
        parts = "; ".join(f"{g.count} {g.what}(s) x ({_fmt(g.bundle)})" for g in gs)
        raise PreflightError(f"the plan ({parts}) does not fit on the nodes ({_fmt_nodes(nodes)}) although the totals do: "
                             f"each bundle must lie on one node; lower {', '.join(g.size_fields for g in gs)}, "
                             "use fewer larger nodes, or add nodes")


def hardware_problem(recipe: Recipe) -> str | None:
    """Why the plan would not fit the machines the recipe states (`hardware:`), or None: preflight against them."""
    hw = recipe.hardware
    try:
        preflight(recipe, [{"CPU": float(hw.cpus_per_node), "GPU": float(hw.gpus_per_node)} for _ in range(hw.nodes)])
    except PreflightError as e:
        return f"hardware: {e}"
    return None


def node_resources() -> list[dict[str, float]]:
    """CPU/GPU totals of every alive node of the connected cluster."""
    return [{k: float(n["Resources"].get(k, 0.0)) for k in ("CPU", "GPU")} for n in ray.nodes() if n.get("Alive")]


class Placement:
    """Placement groups and the options that put the actors in them."""

    def __init__(self, recipe: Recipe, *, timeout_s: float = 120.0):
        self.recipe = recipe
        preflight(recipe, node_resources())
        self.groups = groups(recipe)
        self.pgs = {g.name: placement_group([dict(g.bundle) for _ in range(g.count)], strategy=g.strategy)
                    for g in self.groups}
        try:
            ray.get([pg.ready() for pg in self.pgs.values()], timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.remove()
            raise PreflightError(f"the placement groups were not placed within {timeout_s:g}s although the cluster's nodes "
                                 "fit the plan: other jobs may hold resources (see `ray status`)") from None

    def _options(self, group: str, index: int, cpus: float, gpus: float) -> dict:
        return {"num_cpus": cpus, "num_gpus": gpus,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(self.pgs[group], placement_group_bundle_index=index)}

    def learner_options(self, rank: int) -> dict:
        lr = self.recipe.learner
        if self.recipe.cluster.colocate:
            # Half of the pair's device each: Ray admits both to the bundle and gives both the same GPU.
            return self._options("colocated", rank, lr.num_cpus, lr.num_gpus / 2)
        return self._options("learner", rank, lr.num_cpus, lr.num_gpus)

    def rollout_options(self, engine: int) -> dict:
        ro = self.recipe.rollout
        if self.recipe.cluster.colocate:
            opts = self._options("colocated", engine, ro.num_cpus, ro.num_gpus / 2)
        else:
            opts = self._options("rollout", engine, ro.num_cpus, ro.num_gpus * ro.tensor_parallel_size)
        opts["max_restarts"] = -1  # the controller bounds recoveries itself (a group fails on at most 3 engines)
        threads = max(1, math.floor(ro.num_cpus))
        opts["runtime_env"] = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(max(1, int(ro.kv_cache_gib))),
                                            "OMP_NUM_THREADS": str(threads)}}
        return opts

    def judge_options(self, name: str, engine: int) -> dict:
        j = self.recipe.judges[name]
        opts = self._options(f"judge-{name}", engine, j.num_cpus, j.num_gpus * j.tensor_parallel_size)
        opts["max_restarts"] = 3  # a crashed judge comes back (its engine reloads on the next request); meanwhile its samples score 0
        opts["runtime_env"] = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": str(max(1, int(j.kv_cache_gib))),
                                            "OMP_NUM_THREADS": str(max(1, math.floor(j.num_cpus)))}}
        return opts

    def reward_model_options(self, name: str) -> dict:
        m = self.recipe.reward_models[name]
        opts = self._options(f"rm-{name}", 0, m.num_cpus, m.num_gpus)
        opts["max_restarts"] = 3
        opts["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": str(max(1, math.floor(m.num_cpus)))}}
        return opts

    def extra_rollout_options(self, engine: int, timeout_s: float = 1.0) -> dict | None:
        """Options for an engine beyond the planned pool (elastic growth), in a one-bundle placement
        group of its own; None when no node has room for it now."""
        ro = self.recipe.rollout
        bundle = {"CPU": ro.num_cpus, **({"GPU": ro.num_gpus * ro.tensor_parallel_size} if ro.num_gpus else {})}
        pg = placement_group([bundle])
        try:
            ray.get(pg.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(pg)
            return None
        self.pgs[f"extra-{engine}"] = pg
        opts = {**self.rollout_options(0), "num_cpus": ro.num_cpus, "num_gpus": ro.num_gpus * ro.tensor_parallel_size,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)}
        return opts

    def release_extra(self, engine: int) -> None:
        pg = self.pgs.pop(f"extra-{engine}", None)
        if pg is not None:
            remove_placement_group(pg)

    def remove(self) -> None:
        for pg in self.pgs.values():
            try:
                remove_placement_group(pg)
            except Exception:  # the cluster is already going down
                pass
