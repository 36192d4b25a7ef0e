"""The elastic engine pool on a simulated two-node Ray cluster (`ray.cluster_utils.Cluster`), real
vLLM and DeepSpeed: a run starts with one engine, grows onto a node that joins mid-run (the new
engine gets the current weights before it takes work, and then both serve), shrinks again through
`rlvr scale` while a batch is in flight, and every prompt of every step is scored exactly once."""

from collections import Counter

import pytest
import ray
from ray.cluster_utils import Cluster

from rlvr.cli import main as cli_main

from test_faults_async import _trainer

pytestmark = pytest.mark.integration


def test_pool_grows_onto_a_new_node_and_shrinks_on_request(toy_dir, tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})  # the learner and one engine
    trainer = _trainer(toy_dir, tmp_path, "elastic", "train.steps=4", f"cluster.address={cluster.address}",
                       "rollout.max_engines=2", "rollout.max_seqs_per_engine=16", "train.async_steps=1", "learner.lr=5e-3")
    scored = []
    score = trainer.score

    def counting_score(rows, prompts, comps):
        scored.append(Counter((trainer.step, c.prompt_index) for c in comps))
        return score(rows, prompts, comps)

    trainer.score = counting_score
    try:
        trainer.start()
        m1 = trainer.train_step()
        assert m1["rollout/engines"] == 1  # no room for a second engine yet
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        served_before = list(trainer.scheduler.served)
        m2 = trainer.train_step()
        assert m2["rollout/engines"] == 2 and len(trainer.rollouts) == 2
        served = [b - a for a, b in zip(served_before + [0], trainer.scheduler.served)]
        assert min(served) > 0, served  # both engines served groups of this step
        fps = ray.get([a.weights_fingerprint.remote() for a in trainer.rollouts])
        nodes = ray.get([a.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()) for a in trainer.rollouts])
        assert fps[0] == fps[1] and nodes[0] != nodes[1]
        assert cli_main(["scale", str(trainer.run_dir), "--engines", "1"]) == 0
        m3 = trainer.train_step()  # step 3's batch was in flight on both engines when engine 1 left
        assert m3["rollout/engines"] == 1 and len(trainer.rollouts) == 1
        m4 = trainer.train_step()
    finally:
        trainer.shutdown()
        cluster.shutdown()
    assert [m["policy_version"] for m in (m1, m2, m3, m4)] == [1, 2, 3, 4]
    # Every prompt of every trained batch was scored once: n completions per (batch, prompt), nothing twice.
    total = Counter()
    for c in scored:
        total.update(c)
    per_step = Counter(step for step, _ in total)
    assert all(v == 8 for v in total.values()), [k for k, v in total.items() if v != 8]
    assert sorted(per_step.values()) == [16] * len(per_step)
