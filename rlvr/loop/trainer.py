"""The driver loop: generate -> verify -> learn -> sync, with evaluation, metrics and checkpoints.

Everything that can fail on bad input (recipe, plugins, data, verifier names, tokenizer) is
done in `prepare`, before Ray starts. `Trainer` then owns the actors and runs the loop.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict, deque
from pathlib import Path

import yaml

from rlvr.config import Recipe
from rlvr.data import PromptStream
from rlvr.loop.checkpoints import Checkpoints
from rlvr.loop.engines import EnginePool
from rlvr.loop.evaluate import Evaluation
from rlvr.loop.pipeline import Pipeline
from rlvr.loop.prepare import Prepared, model_dir, prepare  # noqa: F401  (prepare: re-exported, the loop's entry point)
from rlvr.loop.step import StepChoices, learner_batch
from rlvr.loop.step_metrics import collapse_run, samples_table, step_metrics
from rlvr.loop.sync import WeightSync
from rlvr.verifiers import VerifierPool


def learner_algorithm(recipe: Recipe) -> dict:
    """The `algorithm:` section as the learners get it: tis_cap resolved (learners/config.effective_tis_cap)."""
    from rlvr.learners.config import effective_tis_cap

    a = recipe.algorithm
    return {**a.model_dump(), "tis_cap": effective_tis_cap(a.tis_cap, recipe.train.async_steps)}


class Trainer(StepChoices, Pipeline, EnginePool, WeightSync, Evaluation, Checkpoints):
    """The driver: owns the actors and runs generate -> verify -> learn -> sync. Its parts live beside it
    (step.py, pipeline.py, engines.py, sync.py, evaluate.py, checkpoints.py); the state is set up here."""

    def __init__(self, prep: Prepared, *, progress=None, resume: tuple[Path, dict] | None = None):
        from rlvr import checkpoint
        from rlvr.metrics import MetricsSink, Progress

        self.prep, self.recipe = prep, prep.recipe
        r = self.recipe
        self.run_dir = r.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_lock = checkpoint.hold_run_lock(self.run_dir)  # `rlvr scale` and a second `rlvr train` see it
        if resume:  # the killed run logged steps past its checkpoint: they are redone, so drop them
            for name in ("metrics.jsonl", "eval.jsonl", "eval_samples.jsonl"):
                checkpoint.truncate_jsonl(self.run_dir / name, int(resume[1]["step"]))
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(r.model_dump(mode="json"), sort_keys=False))
        self.progress = progress or Progress(r.train.steps, enabled=r.logging.progress)
        self.sink = MetricsSink(self.run_dir, r.model_dump(mode="json"), name=r.name, use_wandb=r.logging.wandb,
                                project=r.logging.wandb_project, resume=bool(resume))
        self.stream = PromptStream(prep.train_rows, r.train.prompts_per_step, seed=r.data.seed)
        self.trained_stream_state = self.stream.state_dict()
        self.pool = VerifierPool(r.verifiers)
        self.version = 0
        self.step = 0
        self.gen_calls = 0
        self.in_flight: deque = deque()
        self.collapse_run = 0
        self.accuracy_before = float("nan")
        self.resumed_from: dict = {}
        self.timings: dict[str, float] = defaultdict(float, (resume[1].get("timings", {}) if resume else {}))
        self.faults: dict[str, float] = defaultdict(float, {"rollout_restarts": 0})
        self.placement = None
        self.last_eval_env: dict = {}  # env/* metrics of the last evaluation (multi-turn rows)
        self.said_refused = False  # the first refused prompt is announced, later ones only counted
        self.engines_wanted: int | None = None  # set by `rlvr scale`; overrides rollout.max_engines growth

    def start(self) -> None:
        import ray

        from rlvr.cluster.placement import Placement, start_ray
        from rlvr.learners.actor import LearnerActor

        r = self.recipe
        t0 = time.time()
        self.progress.print("starting Ray, vLLM engine(s) and DeepSpeed learner(s)...")
        start_ray(r)
        self.placement = Placement(r)
        samples = r.train.prompts_per_step * r.rollout.n
        self.micro_batches = max(1, math.ceil(samples / r.learner.ranks / r.algorithm.num_minibatches / r.learner.micro_batch_size))
        Learner = ray.remote(LearnerActor)
        self.learners = [Learner.options(**self.placement.learner_options(i)).remote(
            model_dir(r), rank=i, world_size=r.learner.ranks, learner=r.learner.model_dump(), algorithm=learner_algorithm(r),
            total_steps=r.train.steps, micro_batches=self.micro_batches, seed=r.seed, dtype=r.dtype)
            for i in range(r.learner.ranks)]
        self.rollouts = [self._new_engine(i, self.placement.rollout_options(i)) for i in range(r.rollout.engines)]
        from rlvr.engines.model_verifiers import start_model_verifiers
        from rlvr.verifiers.scorer import Scorer

        # Judges' engines and reward models (their own bundles) load while the rest starts.
        models = start_model_verifiers(r.judges, r.reward_models, placement=self.placement, seed=r.seed)
        host, port = ray.get(self.learners[0].address.remote())
        answers = ray.get([a.ready.remote() for a in self.rollouts] + [l.setup.remote(host, port) for l in self.learners])
        self.instances = answers[:len(self.rollouts)]  # each engine actor's process (a restart must change it)
        if models is not None:
            self.pool = Scorer(self.pool, models, r.verifiers)  # the pool's interface, judges and RMs beside it
            models.wait_ready()
        self.init_weight_sync()
        self.specs = ray.get(self.learners[0].weight_specs.remote())
        # LoRA: syncs carry only the adapter (with its config); the engines loaded the same frozen base.
        self.adapter = ray.get(self.learners[0].adapter_config.remote())
        self.trainable_parameters = ray.get(self.learners[0].trainable_parameters.remote())
        from rlvr.engines.scheduler import RolloutScheduler

        ro = r.rollout
        self.scheduler = RolloutScheduler(self.rollouts, max_seqs_per_engine=ro.max_seqs_per_engine,
                                          health_interval_s=ro.health_interval_s, engine_timeout_s=ro.engine_timeout_s,
                                          on_engine_dead=self.recover_engine)
        self.timings["startup"] = time.time() - t0
        self.progress.print(f"cluster up in {self.timings['startup']:.0f}s: {r.rollout.engines} vLLM engine(s), "
                            f"{r.learner.ranks} learner rank(s) (ZeRO-{r.learner.zero_stage}); run dir {self.run_dir}")
        from rlvr.learners.config import off_policy_note

        self.progress.print(off_policy_note(r.algorithm.tis_cap, r.train.async_steps, r.rollout.temperature))

    def shutdown(self) -> None:
        import ray

        self.pool.close()
        self.sink.close()
        self.progress.close()
        if ray.is_initialized():
            ray.shutdown()
        self.run_lock.close()  # releases the flock: the run is no longer running


    def train_step(self) -> dict:
        """One RL step: the next groups, refilled and chosen, the learner's batch, a DeepSpeed step, the weight sync,
        then the step's metrics."""
        import ray

        from rlvr.learners.batch import shard_by_groups

        r = self.recipe
        self.rescale()
        t_step = time.time()
        reruns0, refused0 = self.scheduler.reruns, self.scheduler.refused
        groups, times = self.next_groups()
        groups, flags, extra_rounds = self.refill(groups, times)
        chosen = self.choose(groups, flags)
        batch = learner_batch(chosen, r, pad_id=self.prep.tokenizer.pad_token_id or 0)
        self.last_trained = (chosen, batch)  # the groups and the learner's batch (token-exactness tests read them)
        t0 = time.time()
        shards = shard_by_groups(batch, len(self.learners), balance_tokens=r.learner.packing)
        outs = ray.get([l.train_step.remote(shard) for l, shard in zip(self.learners, shards)])
        times["training"] = time.time() - t0
        t0 = time.time()
        trained_version = self.version
        sync = self.sync_weights()
        times["weight_sync"] = time.time() - t0
        self.step += 1
        self.trained_stream_state = self.in_flight[0][3] if self.in_flight else self.stream.state_dict()
        times["step"] = time.time() - t_step
        m = step_metrics(step=self.step, version=self.version, trained_version=trained_version, groups=groups,
                         chosen=chosen, stale=flags[1], extra_rounds=extra_rounds, learner_outs=outs, sync=sync,
                         times=times, reruns=self.scheduler.reruns - reruns0, refused=self.scheduler.refused - refused0,
                         trainable_parameters=self.trainable_parameters)
        self.log_step(m, groups, chosen, times)
        return m

    def log_step(self, m: dict, groups: list, chosen: list, times: dict) -> None:
        """Add the pool's, faults' and environments' metrics, warn of a collapse, write the step (and samples)."""
        from rlvr.environments.trajectory import env_metrics

        r = self.recipe
        m.update(self.pool.stats())
        m.update({f"fault/{k}": v for k, v in self.faults.items()})
        m["rollout/engines"] = len(self.rollouts)
        m["engines/restarts"] = self.faults["rollout_restarts"]
        m.update(env_metrics([c.trajectory for g in groups for c in g.comps if c.trajectory]))
        for k in ("generation", "verify", "training", "weight_sync"):
            self.timings[k] += times[k]
        # Collapse guard: when every group agrees, advantages are all zero and learning has stopped.
        self.collapse_run = collapse_run(self.collapse_run, m["reward/groups_all_equal"], r.rollout.n)
        if r.train.collapse_patience and self.collapse_run == r.train.collapse_patience:
            self.progress.print(f"[yellow]warning: for {self.collapse_run} steps every group's rewards were equal "
                                "(collapsed or saturated policy): no learning signal. Consider a lower learner.lr, "
                                "a higher rollout.temperature, or harder prompts.[/yellow]")
        m["collapse/steps_all_equal"] = self.collapse_run
        self.sink.log_step(m)
        if r.logging.sample_table_every and self.step % r.logging.sample_table_every == 0:
            self.sink.log_samples_table(self.step, samples_table(chosen))

    def run(self, resume: tuple[Path, dict] | None = None) -> dict:
        r = self.recipe
        t_run = time.time()
        self.start()
        if resume:
            self.restore(*resume)
        t_train0 = time.time()
        acc0 = self.evaluate() if not resume else self.resumed_from.get("accuracy_before", float("nan"))
        self.accuracy_before = acc0
        env0 = dict(self.last_eval_env)
        self.progress.print(f"step {self.step}: held-out greedy accuracy {acc0:.1%}" if not resume
                            else f"resumed at step {self.step} (policy version {self.version})")
        acc, evaluated_at = acc0, (None if resume else self.step)
        while self.step < r.train.steps:
            m = self.train_step()
            if r.train.eval_every and self.step % r.train.eval_every == 0 and self.step < r.train.steps:
                acc, evaluated_at = self.evaluate(), self.step
            self.progress.update(self.step, f"reward {m['reward/mean']:.3f}  acc {acc:.1%}  gen {m['time/generation']:.1f}s  "
                                            f"train {m['time/training']:.1f}s  sync {m['time/weight_sync']:.2f}s")
            if r.train.save_every and self.step % r.train.save_every == 0:
                self.save_checkpoint()
            if r.train.max_minutes and time.time() - t_train0 > r.train.max_minutes * 60:
                self.progress.print(f"train.max_minutes={r.train.max_minutes} reached at step {self.step}")
                break
        self.drain()
        if evaluated_at != self.step:  # stopped by max_minutes right after an evaluation: these weights are scored
            acc = self.evaluate()
        self.save_final()
        summary = {"run_dir": str(self.run_dir), "steps": self.step, "finished": True, "accuracy_before": acc0,
                   "accuracy_after": acc, "accuracy_gain_points": 100 * (acc - acc0), "wall_seconds": time.time() - t_run,
                   "rl_seconds": time.time() - t_train0, "timings": dict(self.timings), "faults": dict(self.faults)}
        if self.last_eval_env:  # multi-turn rows: tool use in the first and the last evaluation
            summary["env_before"], summary["env_after"] = env0, dict(self.last_eval_env)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


def train(recipe: Recipe, *, progress=None) -> dict:
    """Run a recipe from its first step (`rlvr train --resume` continues one: see cli.cmd_train)."""
    prep = prepare(recipe)
    trainer = Trainer(prep, progress=progress)
    try:
        return trainer.run()
    finally:
        trainer.shutdown()
