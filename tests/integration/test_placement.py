"""Placement on a simulated three-node Ray cluster: where the learner ranks and engines land.

Each node has 2 CPUs, 2 (fake) GPUs and a custom resource naming it; tiny actors placed with
Placement's options report their node and GPU ids. No vLLM or DeepSpeed: only the layout.
"""

import os
import time

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

from rlvr.cluster.placement import Placement, PreflightError
from rlvr.config import Recipe

pytestmark = pytest.mark.integration

NODES = ("a", "b", "c")


@pytest.fixture(scope="module")
def node_names():
    """NodeID -> name of the simulated node ("a", "b", "c")."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2, "resources": {"rlvr_node_a": 1}})
    try:
        for name in NODES[1:]:
            cluster.add_node(num_cpus=2, num_gpus=2, resources={f"rlvr_node_{name}": 1})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield {n["NodeID"]: next(k.removeprefix("rlvr_node_") for k in n["Resources"] if k.startswith("rlvr_node_"))
               for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()


@ray.remote
class Where:
    def where(self) -> tuple[str, tuple[int, ...], str | None]:
        return ray.get_runtime_context().get_node_id(), tuple(ray.get_gpu_ids()), os.environ.get("OMP_NUM_THREADS")


def recipe(**fields) -> Recipe:
    """A recipe with dotted overrides, e.g. recipe(**{"rollout.engines": 2})."""
    raw = {"model": {"path": "unused"}, "data": {"train": [{"path": "unused.jsonl"}]}}
    for dotted, value in fields.items():
        section, key = dotted.split(".")
        raw.setdefault(section, {})[key] = value
    return Recipe.model_validate(raw)


def place(r: Recipe, names: dict) -> tuple[list, list]:
    """(node name, GPU ids) of each learner rank and each engine, as Placement put them."""
    p = Placement(r, timeout_s=30)
    try:
        actors = [Where.options(**p.learner_options(i)).remote() for i in range(r.learner.ranks)]
        actors += [Where.options(**p.rollout_options(i)).remote() for i in range(r.rollout.engines)]
        found = ray.get([a.where.remote() for a in actors], timeout=120)
        for a in actors:
            ray.kill(a)
    finally:
        p.remove()
        _wait_until_idle()
    assert all(threads is not None for _, _, threads in found[r.learner.ranks:])  # the engines' runtime env applied
    found = [(names[node], gpus) for node, gpus, _ in found]
    return found[:r.learner.ranks], found[r.learner.ranks:]


def _wait_until_idle(timeout_s: float = 30) -> None:
    """Freeing is asynchronous: a test that starts before would see busy nodes (and PACK spill over)."""
    total, deadline = ray.cluster_resources(), time.time() + timeout_s
    while time.time() < deadline:
        free = ray.available_resources()
        if all(free.get(k, 0) >= total.get(k, 0) for k in ("CPU", "GPU")):
            return
        time.sleep(0.1)
    raise AssertionError(f"resources not freed: {ray.available_resources()} of {total}")


def gpu_slots(placed: list) -> list:
    return [(node, gpu) for node, gpus in placed for gpu in gpus]


def test_pack_keeps_each_pool_on_one_node(node_names):
    learners, engines = place(recipe(**{"learner.ranks": 2, "learner.num_gpus": 1, "rollout.engines": 2,
                                        "rollout.num_gpus": 1}), node_names)
    assert len({node for node, _ in learners}) == 1 and len({node for node, _ in engines}) == 1, (learners, engines)
    slots = gpu_slots(learners + engines)
    assert len(slots) == 4 and len(set(slots)) == 4, (learners, engines)  # one GPU each, none given twice


def test_spread_puts_every_rank_and_engine_on_its_own_node(node_names):
    learners, engines = place(recipe(**{"learner.ranks": 2, "learner.num_gpus": 1, "rollout.engines": 3,
                                        "rollout.num_gpus": 1, "cluster.placement": "spread"}), node_names)
    assert sorted(node for node, _ in engines) == list(NODES)
    assert len({node for node, _ in learners}) == 2
    assert len(set(gpu_slots(learners + engines))) == 5


@pytest.mark.parametrize("placement,nodes", [("pack", 1), ("spread", 2)])
def test_colocate_pairs_a_rank_and_its_engine_on_one_gpu(node_names, placement, nodes):
    learners, engines = place(recipe(**{"learner.ranks": 2, "learner.num_gpus": 1, "learner.num_cpus": 0.5,
                                        "rollout.engines": 2, "rollout.num_gpus": 1, "rollout.num_cpus": 0.5,
                                        "cluster.colocate": True, "cluster.weight_sync_backend": "cuda_ipc",
                                        "cluster.placement": placement}), node_names)
    for (l_node, l_gpus), (e_node, e_gpus) in zip(learners, engines):
        assert l_node == e_node and len(l_gpus) == 1 and l_gpus == e_gpus  # the same device
    assert len(set(gpu_slots(learners))) == 2  # the pairs do not share one
    assert len({node for node, _ in learners}) == nodes


@pytest.mark.parametrize("fields,says", [
    ({"rollout.engines": 4, "cluster.placement": "spread"},
     "cluster.placement=spread puts each of the 4 engines on its own node, but only 3 node(s)"),
    ({"rollout.num_gpus": 1, "rollout.tensor_parallel_size": 3},
     "one engine needs (1 CPU, 3 GPU) on a single node, but no node has that much (3 node(s): 3 x (2 CPU, 2 GPU))"),
    ({"learner.ranks": 2, "learner.num_cpus": 1.5, "rollout.engines": 2, "rollout.num_cpus": 1.5},
     "does not fit on the nodes (3 node(s): 3 x (2 CPU, 2 GPU)) although the totals do"),
    ({"rollout.engines": 7}, "the recipe needs 8 CPUs but the cluster has 6"),
    ({"rollout.engines": 2, "cluster.colocate": True}, "rollout.engines=2 and learner.ranks=1: make them equal"),
    ({"learner.num_gpus": 1, "rollout.num_gpus": 1, "cluster.colocate": True, "cluster.weight_sync_backend": "nccl"},
     "set cluster.weight_sync_backend=cuda_ipc"),
])
def test_preflight_names_the_fields_before_anything_is_reserved(node_names, fields, says):
    before = len(placement_group_table())
    with pytest.raises(PreflightError) as err:
        Placement(recipe(**fields))
    assert says in str(err.value)
    assert len(placement_group_table()) == before


def test_a_plan_blocked_by_other_reservations_fails_with_a_message(node_names):
    hog = placement_group([{"GPU": 2}], strategy="STRICT_PACK")  # another job holding node a/b/c's GPUs
    hog2 = placement_group([{"GPU": 2}, {"GPU": 2}], strategy="STRICT_SPREAD")
    ray.get([hog.ready(), hog2.ready()], timeout=30)
    try:
        with pytest.raises(PreflightError, match="not placed within 2s"):
            Placement(recipe(**{"rollout.num_gpus": 1}), timeout_s=2)
        assert all(t["state"] == "REMOVED" for t in placement_group_table().values()
                   if t["placement_group_id"] not in (hog.id.hex(), hog2.id.hex()))
    finally:
        remove_placement_group(hog)
        remove_placement_group(hog2)
