"""The driver loop: generate -> verify -> learn -> sync, with evaluation, metrics and checkpoints.

Everything that can fail on bad input (recipe, plugins, data, verifier names, tokenizer) is
done in `prepare`, before Ray starts. `Trainer` then owns the actors and runs the loop.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rlvr.config import Recipe, RecipeError
from rlvr.environments.base import EnvironmentConfigError
from rlvr.data import DataError, PromptStream, encode_prompts, filter_by_length, load_eval, load_sources, render_prompt
from rlvr.verifiers import PluginError, VerifierPool, VerifyRequest, check_verifier_names, load_plugins


@dataclass
class Prepared:
    recipe: Recipe
    tokenizer: object
    train_rows: list[dict]
    eval_rows: list[dict]
    report: str


def prepare(recipe: Recipe) -> Prepared:
    """Load and check everything the run needs; raises RecipeError with one line."""
    from transformers import AutoTokenizer

    from rlvr.cluster.placement import PreflightError, check_layout

    try:
        load_plugins(recipe.verifiers.plugins)
        train_rows = load_sources(recipe.data.train, seed=recipe.data.seed, strict=recipe.data.strict)
        eval_rows = load_eval(recipe.data) if recipe.data.eval else []
        from rlvr.verifiers.registry import _REGISTRY
        from rlvr.verifiers.scorer import check_model_verifiers, model_name_map

        check_model_verifiers(recipe.judges, recipe.reward_models, set(_REGISTRY))
        check_verifier_names([r["verifier"] for r in train_rows] + [r["verifier"] for r in eval_rows],
                             also_known=model_name_map(recipe.judges, recipe.reward_models))
        check_environments(recipe, [r["env"] for r in [*train_rows, *eval_rows] if r.get("env")])
        check_layout(recipe)  # colocation and transport rules no cluster could satisfy
    except (DataError, PluginError, PreflightError, EnvironmentConfigError) as e:
        raise RecipeError(str(e)) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(recipe.model.path)
    except Exception as e:
        raise RecipeError(f"model.path: cannot load a tokenizer from {recipe.model.path} ({e})") from None
    if recipe.data.max_prompt_tokens:
        train_rows, _ = filter_by_length(train_rows, tokenizer, recipe.data.max_prompt_tokens)
    if not train_rows:
        raise RecipeError("data.train: no usable rows after loading and filtering")
    report = str(getattr(train_rows, "report", ""))
    return Prepared(recipe, tokenizer, list(train_rows), list(eval_rows), report)


def check_environments(recipe: Recipe, names: list[str]) -> None:
    """Environment plugins load, every named environment exists, and each builds with the recipe's options."""
    from rlvr.environments import get_environment, load_environment_plugins

    e = recipe.environments
    load_environment_plugins(e.plugins)
    for name in sorted(set(names) | set(e.options)):
        get_environment(name, **e.options.get(name, {}))  # unknown names and bad options fail here, in one line


def _transcript(c) -> str:
    """A completion as the samples table shows it: the text, or a whole trajectory with its roles."""
    if not c.trajectory:
        return c.text
    return "\n".join(f"[{m['role']}] {m['content']}" for m in c.trajectory["messages"])


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


class Trainer:
    def __init__(self, prep: Prepared, *, progress=None, resume: tuple[Path, dict] | None = None):
        from rlvr import checkpoint
        from rlvr.metrics import MetricsSink, Progress

        self.prep, self.recipe = prep, prep.recipe
        r = self.recipe
        self.run_dir = r.run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
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
        self.engines_wanted: int | None = None  # set by `rlvr scale`; overrides rollout.max_engines growth

    # ------------------------------------------------------------------ cluster

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
            r.model.path, rank=i, world_size=r.learner.ranks, learner=r.learner.model_dump(), algorithm=learner_algorithm(r),
            total_steps=r.train.steps, micro_batches=self.micro_batches, seed=r.seed, dtype=r.model.dtype)
            for i in range(r.learner.ranks)]
        self.rollouts = [self._new_engine(i, self.placement.rollout_options(i)) for i in range(r.rollout.engines)]
        from rlvr.verifiers.scorer import Scorer, start_model_verifiers

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
        from rlvr.actors.scheduler import RolloutScheduler

        ro = r.rollout
        self.scheduler = RolloutScheduler(self.rollouts, max_seqs_per_engine=ro.max_seqs_per_engine,
                                          health_interval_s=ro.health_interval_s, engine_timeout_s=ro.engine_timeout_s,
                                          on_engine_dead=self.recover_engine)
        self.timings["startup"] = time.time() - t0
        self.progress.print(f"cluster up in {self.timings['startup']:.0f}s: {r.rollout.engines} vLLM engine(s), "
                            f"{r.learner.ranks} learner rank(s) (ZeRO-{r.learner.zero_stage}); run dir {self.run_dir}")
        from rlvr.learners.algo_config import off_policy_note

        self.progress.print(off_policy_note(r.algorithm.tis_cap, r.train.async_steps, r.rollout.temperature))

    def shutdown(self) -> None:
        import ray

        self.pool.close()
        self.sink.close()
        self.progress.close()
        if ray.is_initialized():
            ray.shutdown()

    # ------------------------------------------------------------------ phases

    def _gen_kwargs(self, greedy: bool) -> dict:
        ro = self.recipe.rollout
        # Per-token versions need streamed deltas only when a sequence can cross a weight update.
        return dict(n=ro.n, temperature=ro.temperature, top_p=ro.top_p, max_tokens=ro.max_tokens, greedy=greedy,
                    track_versions=self.recipe.train.inflight_updates)

    def submit(self, prompts: list[str], *, greedy: bool = False, per_group: list[dict] | None = None,
               rows: list[dict] | None = None):
        """Start generating `prompts` (rendered once to token ids here): one request per group, routed by the
        scheduler. Rows naming an environment run as multi-turn trajectories in the engine's actor instead."""
        import ray

        self.gen_calls += 1
        # Reseeded per batch (seed, call number, engine): a restarted engine does not replay its start-up stream.
        seed = (self.recipe.seed * 1_000_003 + self.gen_calls * 101) % (2**31)
        for i, a in enumerate(self.rollouts):
            a.reseed.remote(seed + 7919 * i)
        if rows is not None and any(row.get("env") for row in rows):
            per_group = [{**(per_group[k] if per_group else {}), **self._env_kwargs(row)} if row.get("env")
                         else (per_group[k] if per_group else {}) for k, row in enumerate(rows)]
        return self.scheduler.submit(encode_prompts(self.prep.tokenizer, prompts), per_group, **self._gen_kwargs(greedy))

    def _env_kwargs(self, row: dict) -> dict:
        e = self.recipe.environments
        limits = {"max_turns": e.max_turns, "timeout_s": e.trajectory_timeout_s}
        if e.max_total_tokens:
            limits["max_total_tokens"] = e.max_total_tokens
        return {"env": row["env"], "row": row, "env_options": e.options.get(row["env"], {}), "plugins": list(e.plugins),
                "limits": limits, "max_tokens": e.max_tokens_per_turn or self.recipe.rollout.max_tokens}

    def collect(self, batch, on_group=None) -> tuple[list, list, float]:
        """Completions in prompt order, each prompt's token ids, and wall seconds. `on_group(k, result)`
        runs as each group finishes (the scorer, while the other groups still generate)."""
        for k, res in self.scheduler.stream(batch):
            if on_group is not None:
                on_group(k, res)
        results = [batch.results[k] for k in range(len(batch.prompt_ids))]
        comps = [c for res in results for c in res.completions]
        return comps, [res.prompt_token_ids for res in results], time.time() - batch.t_submit

    def recover_engine(self, i: int, error: Exception) -> None:
        """Restart engine i (it died, or its EngineCore did, or it stopped answering), rebuild the weight-sync
        group, and push the current weights to it."""
        import ray

        t0 = time.time()
        self.faults["rollout_restarts"] += 1
        self.progress.print(f"[yellow]vLLM engine {i} failed ({type(error).__name__}: {str(error)[:200]}); "
                            "restarting it, then re-syncing weights[/yellow]")
        self._restart_engine(i, error)
        self._reform_weight_sync(skip=i)
        failed, _ = self._broadcast()
        if failed:
            raise RuntimeError(f"vLLM engine(s) {sorted(failed)} failed again while engine {i} was being re-synced")
        self.faults["recovery_seconds"] += time.time() - t0

    def _restart_engine(self, i: int, error: Exception | None = None) -> None:
        """Wait for Ray to restart engine i's actor, killing it first unless it is already dead (a live actor
        with a dead EngineCore, or one that stopped answering). An actor Ray is already restarting is not
        killed again: a second kill could land on the new process after it answered."""
        import ray

        if not isinstance(error, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
            ray.kill(self.rollouts[i], no_restart=False)
        deadline = time.time() + max(600.0, 10 * self.recipe.rollout.engine_timeout_s)
        while time.time() < deadline:  # Ray restarts the actor (max_restarts); ready() loads the model again
            try:
                instance = ray.get(self.rollouts[i].ready.remote(), timeout=60)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
                time.sleep(1)
                continue
            if instance != self.instances[i]:
                self.instances[i] = instance
                return
            time.sleep(0.1)  # the old process answered: the kill has not landed yet
        raise RuntimeError(f"vLLM engine {i} did not come back after a restart")

    def _reform_weight_sync(self, skip: int | None = None) -> None:
        """The old group lost a member: every member leaves it (bounded waits) and a fresh one is formed."""
        import ray

        refs = [a.close_weight_sync.remote() for j, a in enumerate(self.rollouts) if j != skip]
        refs += [l.close_weight_sync.remote() for l in self.learners]
        ray.wait(refs, num_returns=len(refs), timeout=self.recipe.rollout.engine_timeout_s)
        self.init_weight_sync()

    def _stream_scored(self, rows: list[dict], prompts: list[str], batch) -> tuple[list, list[list], float]:
        """Stream a submitted batch, scoring each group the moment it finishes (while the others still
        generate). Returns the groups' results and scores in prompt order, and the verification seconds."""
        scores: dict = {}
        t_ver = 0.0
        pending: dict = {}  # model-scored verifiers (judges, reward models): group -> future

        def score_group(k, res):
            nonlocal t_ver
            t0 = time.time()
            if hasattr(self.pool, "score_async"):  # judged groups score concurrently while the others generate
                fut = self.pool.score_async(VerifyRequest.for_completions(rows, prompts, res.completions))
                fut.add_done_callback(lambda _f, res=res: setattr(res, "t_scored", time.time()))
                pending[k] = (fut, res)
                return
            scores[k] = self.score(rows, prompts, res.completions)  # completions carry prompt_index k
            res.t_scored = time.time()
            t_ver += res.t_scored - t0

        self.collect(batch, score_group)
        if pending:  # verification time is what generation did not hide
            t0 = time.time()
            for k, (fut, res) in pending.items():
                scores[k] = fut.result()
                if not hasattr(res, "t_scored"):  # its done-callback may still be on its way
                    res.t_scored = time.time()
            t_ver += time.time() - t0
        return [batch.results[k] for k in range(len(rows))], [scores[k] for k in range(len(rows))], t_ver

    # ------------------------------------------------------------------ elastic engine pool

    def _new_engine(self, i: int, options: dict):
        import ray

        from rlvr.actors.rollout import RolloutActor

        r = self.recipe
        return ray.remote(RolloutActor).options(**options).remote(
            r.model.path, seed=r.seed, max_model_len=r.rollout.max_model_len, dtype=r.model.dtype,
            kv_cache_gib=r.rollout.kv_cache_gib, tensor_parallel_size=r.rollout.tensor_parallel_size,
            gpu_memory_utilization=r.rollout.gpu_memory_utilization, enforce_eager=r.rollout.enforce_eager, engine_index=i,
            lora_rank=r.learner.lora.rank if r.learner.lora else None)

    def add_engine(self) -> bool:
        """Start one more engine where the cluster has room, give it the current weights, then route to it.
        False when no node has room for one now."""
        import ray

        i = len(self.rollouts)
        options = self.placement.extra_rollout_options(i)
        if options is None:
            return False
        t0 = time.time()
        engine = self._new_engine(i, options)
        self.instances.append(ray.get(engine.ready.remote()))
        self.rollouts.append(engine)
        self._reform_weight_sync()
        failed, _ = self._broadcast()
        if failed:
            raise RuntimeError(f"vLLM engine(s) {sorted(failed)} failed while engine {i} joined")
        self.scheduler.add_engine()
        self.progress.print(f"engine {i} joined the pool in {time.time() - t0:.0f}s ({len(self.rollouts)} engines)")
        return True

    def remove_engine(self) -> None:
        """The last engine leaves: its unfinished groups go back to the queue, the group is re-formed without it."""
        import ray

        i = len(self.rollouts) - 1
        self.scheduler.retire_last_engine()
        engine = self.rollouts.pop()
        self.instances.pop()
        try:
            ray.get(engine.shutdown.remote(), timeout=self.recipe.rollout.engine_timeout_s)
        except Exception:  # it is leaving either way
            pass
        ray.kill(engine, no_restart=True)
        self.placement.release_extra(i)
        self._reform_weight_sync()
        self.scheduler.dispatch()
        self.progress.print(f"engine {i} left the pool ({len(self.rollouts)} engines)")

    def rescale(self) -> None:
        """Apply `rlvr scale` (runs/<name>/scale.json) and grow onto new room up to rollout.max_engines."""
        want = None
        req = self.run_dir / "scale.json"
        if req.is_file():
            try:
                want = int(json.loads(req.read_text())["engines"])
            except (ValueError, KeyError, TypeError):
                self.progress.print(f"[yellow]ignoring {req}: expected {{\"engines\": N}}[/yellow]")
            req.unlink(missing_ok=True)
        if want is not None and want >= 1:
            while len(self.rollouts) > want:
                self.remove_engine()
            while len(self.rollouts) < want and self.add_engine():
                pass
            self.engines_wanted = want
        grow_to = self.recipe.rollout.max_engines
        if grow_to and self.engines_wanted is None:
            while len(self.rollouts) < grow_to and self.add_engine():
                pass

    def _generate_and_score(self, rows: list[dict], prompts: list[str], *, greedy: bool = False):
        """Completions in prompt order (groups contiguous), each prompt's token ids, their scores, and the
        generation (wall, less scoring) and verification seconds."""
        t0 = time.time()
        results, scores, t_ver = self._stream_scored(rows, prompts, self.submit(prompts, greedy=greedy, rows=rows))
        comps = [c for res in results for c in res.completions]
        return comps, [res.prompt_token_ids for res in results], [s for g in scores for s in g], time.time() - t0 - t_ver, t_ver

    def score(self, rows: list[dict], prompts: list[str], comps: list) -> list:
        return self.pool.score(VerifyRequest.for_completions(rows, prompts, comps))

    def init_weight_sync(self) -> None:
        """Form the broadcast group: learner rank 0 + one rank per engine worker (tensor-parallel workers each join)."""
        import ray

        from rlvr.cluster.weight_sync import free_port

        r = self.recipe
        tp = r.rollout.tensor_parallel_size
        if r.cluster.weight_sync_backend == "cuda_ipc":  # an engine maps only its own GPU: one group per colocated pair
            addrs = ray.get([l.address.remote() for l in self.learners])
            ray.get([a.init_weight_sync.remote(h, p, 1, 1 + tp, "cuda_ipc") for a, (h, p) in zip(self.rollouts, addrs)] +
                    [l.init_weight_sync.remote(h, p, 1 + tp, "cuda_ipc") for l, (h, p) in zip(self.learners, addrs)])
            return
        host, port = ray.get(self.learners[0].address.remote())
        if host == "127.0.0.1":
            port = free_port()
        world = 1 + len(self.rollouts) * tp
        handles = [a.init_weight_sync.remote(host, port, 1 + i * tp, world, r.cluster.weight_sync_backend)
                   for i, a in enumerate(self.rollouts)]
        handles += [l.init_weight_sync.remote(host, port, world, r.cluster.weight_sync_backend) for l in self.learners]
        ray.get(handles)

    def sync_weights(self, bump: bool = True) -> dict:
        """Broadcast the learner's weights to every engine; `bump` makes them a new policy version.

        Engines are paused for the load: with `train.inflight_updates` their unfinished sequences stay
        and continue under the new weights; otherwise they finish first. An engine that died while the
        learner trained, or dies or stops answering during the broadcast, is restarted and the broadcast
        is redone over a re-formed group.
        """
        if bump:
            self.version += 1
        self.scheduler.check_health(list(range(len(self.rollouts))))  # died during training: restarted and re-synced here
        for _ in range(3):
            failed, out = self._broadcast()
            if not failed:
                return out
            for i, err in failed.items():
                self.faults["rollout_restarts"] += 1
                self.progress.print(f"[yellow]vLLM engine {i} failed during a weight sync ({type(err).__name__}); restarting it[/yellow]")
                self._restart_engine(i, err)
            self._reform_weight_sync()
        raise RuntimeError("weight sync failed three times in a row")

    def _broadcast(self) -> tuple[dict, dict]:
        """One broadcast: ({engine: error} for engines that failed, {bytes, requests_in_flight})."""
        import ray

        ro, bucket = self.recipe.rollout, self.recipe.train.sync_bucket_mb << 20
        errors = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.RayTaskError)
        recv = {a.receive_weights.remote(self.specs, bucket, self.version, self.recipe.train.inflight_updates,
                                         adapter=self.adapter): i
                for i, a in enumerate(self.rollouts)}
        send = [l.send_weights.remote(bucket) for l in self.learners]
        failed: dict = {}
        done: dict = {}
        pending = list(recv)
        while pending:  # no deadline on a healthy engine finishing its requests (mode wait); a silent one is dead
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=ro.health_interval_s)
            for ref in ready:
                try:
                    done[recv[ref]] = ray.get(ref)
                except errors as e:
                    failed[recv[ref]] = e
            if failed:
                break
            for ref in pending:
                try:
                    ray.get(self.rollouts[recv[ref]].health.remote(), timeout=ro.engine_timeout_s)
                except (ray.exceptions.GetTimeoutError, *errors) as e:
                    failed[recv[ref]] = e
            if failed:
                break
        try:
            sent = ray.get(send, timeout=ro.engine_timeout_s if failed else None)
        except (ray.exceptions.GetTimeoutError, *errors) as e:
            if not failed:
                raise
            sent = None
        if failed:  # the others may be stuck in the broadcast: give them a bounded time to fail or finish
            for l in self.learners:
                l.close_weight_sync.remote()
            ready, stuck = ray.wait(pending, num_returns=len(pending), timeout=ro.engine_timeout_s) if pending else ([], [])
            for ref in stuck:
                failed[recv[ref]] = TimeoutError("stuck in a weight sync whose group lost a member")
            return failed, {}
        return {}, {"bytes": sent[0]["bytes"], "requests_in_flight": sum(d["requests_in_flight"] for d in done.values())}

    def evaluate(self) -> float:
        rows = self.prep.eval_rows
        if not rows:
            return float("nan")
        t0 = time.time()
        prompts = [render_prompt(self.prep.tokenizer, row) for row in rows]
        comps, _, scores, _, _ = self._generate_and_score(rows, prompts, greedy=True)
        samples = [{"prompt": prompts[c.prompt_index], "completion": c.text, "score": s.score, "policy_version": c.policy_version,
                    **({"messages": c.trajectory["messages"], "turns": c.trajectory["turns"], "end": c.trajectory["reason"]}
                       if c.trajectory else {})}
                   for c, s in zip(comps, scores)]
        from rlvr.evaluation import flat_metrics, sample_records, summarize

        # The numbers `rlvr eval` reports: accuracy, pass@1, per verifier and per source.
        summary = summarize(sample_records(rows, comps, scores))
        metrics = {k: v for k, v in flat_metrics(summary).items() if k != "accuracy"}
        from rlvr.environments.trajectory import env_metrics

        self.last_eval_env = env_metrics([c.trajectory for c in comps if c.trajectory], prefix="env/")
        metrics.update(self.last_eval_env)
        self.sink.log_eval(self.step, summary["accuracy"], samples,
                           {**metrics, "policy_version": self.version, "time/eval": time.time() - t0})
        self.timings["eval"] += time.time() - t0
        return summary["accuracy"]

    def _fresh_groups(self, rows: list[dict], prompts: list[str], batch) -> tuple[list["Group"], float, float]:
        """Stream a submitted batch into scored groups; returns the groups and the generation/verify seconds."""
        results, scores, t_ver = self._stream_scored(rows, prompts, batch)
        groups = []
        for k, (row, res) in enumerate(zip(rows, results)):
            g = Group(row, prompts[k], res.prompt_token_ids, res.completions, scores[k], engine=res.engine_index,
                      t_finished=res.t_end, t_scored=res.t_scored)
            g.rewards = self._rewards(g)
            groups.append(g)
        # The engines' time on this batch: its first group's start to its last group's end (actor clocks).
        engine_s = max(res.t_end for res in results) - min(res.t_start for res in results) if results else 0.0
        return groups, engine_s, t_ver

    def _first_finished_groups(self, target: int) -> tuple[list["Group"], float, float]:
        """Partial rollouts (in-flight updates with async_steps k): k + 1 batches stay in flight and a step
        takes the first `target` groups to finish, from any of them; the slow ones keep generating, across
        the weight update, and a later step takes them (unless older than k versions)."""
        r = self.recipe
        while len(self.in_flight) < r.train.async_steps + 1 and self.step + len(self.in_flight) < r.train.steps:
            self.enqueue()
        entries = {id(e[2]): e for e in self.in_flight}
        groups, results, t_ver = [], [], 0.0
        for batch, k, res in self.scheduler.stream_many([e[2] for e in self.in_flight]):
            rows, prompts = entries[id(batch)][:2]
            t0 = time.time()
            scores = self.score(rows, prompts, res.completions)
            res.t_scored = time.time()
            t_ver += res.t_scored - t0
            g = Group(rows[k], prompts[k], res.prompt_token_ids, res.completions, scores, engine=res.engine_index,
                      t_finished=res.t_end, t_scored=res.t_scored)
            g.rewards = self._rewards(g)
            groups.append(g)
            results.append(res)
            if len(groups) >= target:
                break
        self.in_flight = deque(e for e in self.in_flight if not e[2].done)
        engine_s = max(res.t_end for res in results) - min(res.t_start for res in results) if results else 0.0
        return groups, engine_s, t_ver

    def _rewards(self, g: "Group") -> list[float]:
        """Verifier scores (for trajectories combined with the environment's rewards as the recipe says),
        plus DAPO's soft overlong penalty when configured."""
        from rlvr.environments.trajectory import trajectory_reward

        a, ro = self.recipe.algorithm, self.recipe.rollout
        mode = self.recipe.environments.reward
        rewards = [trajectory_reward(mode, s.score, c.trajectory) if c.trajectory else s.score
                   for s, c in zip(g.scores, g.comps)]
        if a.overlong_buffer:
            from rlvr.learners.advantages import response_overlong_penalty

            # Generated tokens only, each turn against the per-turn budget it had (docs/algorithms.md).
            e = self.recipe.environments
            budget = (e.max_tokens_per_turn or ro.max_tokens) if g.row.get("env") else ro.max_tokens
            pen = response_overlong_penalty([c.token_ids for c in g.comps], [c.loss_mask for c in g.comps], budget,
                                            a.overlong_buffer, a.overlong_penalty_factor)
            rewards = [r + float(p) for r, p in zip(rewards, pen)]
        return rewards

    def train_step(self) -> dict:
        """One RL step: take the oldest batch in flight (async) or generate one, score, pick groups, learn, sync."""
        import ray

        import torch

        from rlvr.learners.advantages import dynamic_sampling_filter, overlong_filter
        from rlvr.learners.batch import build_batch, pick_groups, shard_by_groups

        r, a = self.recipe, self.recipe.algorithm
        self.rescale()
        t_step = time.time()
        reruns0 = self.scheduler.reruns
        target = r.train.prompts_per_step
        if r.train.inflight_updates and r.train.async_steps:
            groups, t_gen, t_ver = self._first_finished_groups(target)
        else:
            if not self.in_flight:
                self.enqueue()
            rows, prompts, batch, _ = self.in_flight.popleft()
            # async_steps k: the next k batches generate while this one is scored and learnt
            while len(self.in_flight) < r.train.async_steps and self.step + 1 + len(self.in_flight) < r.train.steps:
                self.enqueue()
            groups, t_gen, t_ver = self._fresh_groups(rows, prompts, batch)
        t_wait = time.time() - t_step - t_ver
        extra_rounds = 0

        def flags(gs):
            """(informative, stale, unusable) per group: informative unless dynamic sampling finds its rewards
            all equal; unusable when stale or when an environment failed at reset in it (reset_failures)."""
            stale = [self.version - g.version > r.train.async_steps for g in gs]
            unusable = [old or reset_failures(g) > 0 for old, g in zip(stale, gs)]
            if not a.dynamic_sampling:
                return [True] * len(gs), stale, unusable
            kept = set(dynamic_sampling_filter(torch.tensor([g.rewards for g in gs]), r.rollout.n).tolist())
            return [i in kept for i in range(len(gs))], stale, unusable

        # DAPO dynamic sampling (and stale / failed-reset drops): refill from the stream, a bounded number of rounds.
        informative, stale_flags, unusable = flags(groups)
        usable = sum(inf and not bad for inf, bad in zip(informative, unusable))
        while (usable < target and extra_rounds < (a.dynamic_sampling_max_retries if a.dynamic_sampling else 1)
               and (a.dynamic_sampling or any(unusable))):
            extra_rounds += 1
            more_rows = self.stream.take(min(target, 2 * (target - usable)))
            more_prompts = [render_prompt(self.prep.tokenizer, x) for x in more_rows]
            more_batch = self.submit(more_prompts, rows=more_rows)
            more, tg, tv = self._fresh_groups(more_rows, more_prompts, more_batch)
            groups += more
            t_gen, t_ver = t_gen + tg, t_ver + tv
            informative, stale_flags, unusable = flags(groups)
            usable = sum(inf and not bad for inf, bad in zip(informative, unusable))
        chosen = [groups[i] for i in pick_groups(informative, unusable, target)]
        failed_resets = [(g, c) for g in groups for c in g.comps if c.trajectory and c.trajectory.get("reset_failed")]
        if failed_resets and not getattr(self, "_reset_warned", False):  # once: env/reset_errors counts every step
            self._reset_warned = True
            g, c = failed_resets[0]
            self.progress.print(f"[yellow]environment {g.row.get('env')!r} failed at reset ({c.trajectory.get('error', '')[:200]}); "
                                "its group is not trained (counted in env/reset_errors)[/yellow]")
        if not chosen:
            raise RuntimeError(f"no samples to train on at step {self.step + 1} (all older than train.async_steps, "
                               "or their environments failed at reset: see env/reset_errors)")
        rewards = [x for g in chosen for x in g.rewards]
        comps = [c for g in chosen for c in g.comps]
        prompt_ids = learner_prompt_ids(chosen)
        # An agent run that branched: its other trajectories follow the group-shaped rows, sharing its reward.
        branches = [(i, b) for i, c in enumerate(comps) for b in c.branches]
        rows = comps + [b for _, b in branches]
        batch = build_batch(prompt_ids + [b.prompt_ids for _, b in branches], [c.token_ids for c in rows],
                            [c.logprobs for c in rows], rewards + [rewards[i] for i, _ in branches],
                            group_size=r.rollout.n, pad_id=self.prep.tokenizer.pad_token_id or 0,
                            temperature=r.rollout.temperature, loss_masks=[c.loss_mask for c in rows],
                            extra_of=[i for i, _ in branches])
        if a.overlong_filter:
            batch["response_mask"] = overlong_filter(batch["response_mask"], torch.tensor([c.finish_reason == "length" for c in rows]))
            batch["total_tokens"] = float(batch["response_mask"].sum())
        self.last_trained = (chosen, batch)  # the groups and the learner's batch (token-exactness tests read them)
        t0 = time.time()
        shards = shard_by_groups(batch, len(self.learners), balance_tokens=r.learner.packing)
        outs = ray.get([l.train_step.remote(shard) for l, shard in zip(self.learners, shards)])
        t_train = time.time() - t0
        t0 = time.time()
        trained_version = self.version
        sync = self.sync_weights()
        t_sync = time.time() - t0
        self.step += 1
        self.trained_stream_state = self.in_flight[0][3] if self.in_flight else self.stream.state_dict()

        m = {"step": self.step, "policy_version": self.version}
        scores = [s.score for g in chosen for s in g.scores]
        m["reward/mean"] = _mean(rewards)
        m["reward/verifier_mean"] = _mean(scores)
        by_verifier = defaultdict(list)
        for g in chosen:
            for name in g.row["verifier"]:
                by_verifier[name].extend(s.score for s in g.scores)
        for name, xs in by_verifier.items():
            m[f"reward/{name}"] = _mean(xs)
        for k in outs[0]:
            m[k] = _mean(o[k] for o in outs)
        if "learner/tokens" in outs[0]:  # ranks wait for the slowest: the most tokens over the mean
            from rlvr.learners.packing import imbalance

            m["learner/rank_imbalance"] = imbalance([o["learner/tokens"] for o in outs])
        all_equal = [len({s.score for s in g.scores}) == 1 for g in groups]
        groups_equal = _mean(all_equal)
        m["reward/groups_all_equal"] = groups_equal
        # The data order at a glance: resumed and uninterrupted runs must agree step by step.
        m["data/prompts_crc32"] = zlib.crc32("\n".join(g.prompt for g in chosen).encode())
        m["dynamic_sampling/extra_rounds"] = extra_rounds
        m["dynamic_sampling/informative_fraction"] = _mean(len(set(g.rewards)) > 1 for g in chosen)  # whether or not filtering is on
        m["dynamic_sampling/groups_dropped"] = len(groups) - len(chosen)
        tokens = sum(len(c.token_ids) for c in comps)
        m["response_length/mean"] = tokens / max(1, len(comps))
        m["response_length/truncated"] = _mean(c.finish_reason == "length" for c in comps)
        lags = [self.version - 1 - g.version for g in chosen]  # versions behind the policy that was trained
        m.update({"staleness/mean": _mean(lags), "staleness/max": max(lags),
                  "staleness/dropped_samples": sum(len(g.comps) for g, old in zip(groups, stale_flags) if old),
                  # tokens sampled by a policy older than the one trained (in-flight updates mix versions in a sequence)
                  "staleness/token_fraction": sum(c.tokens_older_than(trained_version) for c in comps) / max(1, sum(len(c.token_ids) for c in comps)),
                  "inflight/sequences_updated": sum(c.last_version != c.policy_version for c in comps),
                  "inflight/requests_at_sync": sync["requests_in_flight"],
                  "sync/bytes": sync.get("bytes", 0), "learner/trainable_parameters": self.trainable_parameters,
                  "rollout/groups_rerun": self.scheduler.reruns - reruns0})
        # Streaming: how long before the batch's last group finished its first group was already scored.
        m["rollout/first_scored_before_last_finished_s"] = max(g.t_finished for g in groups) - min(g.t_scored for g in groups)
        generated = sum(len(c.token_ids) for g in groups for c in g.comps)  # dropped groups were generated too
        m.update({"time/generation": t_gen, "time/generation_wait": t_wait, "time/verify": t_ver, "time/training": t_train,
                  "time/weight_sync": t_sync, "time/step": time.time() - t_step,
                  "throughput/rollout_tokens_per_s": generated / max(t_gen, 1e-9),
                  # as the driver sees it (Ray round trip, log-prob extraction): meaningful when async_steps is 0
                  "throughput/rollout_tokens_per_s_wall": generated / max(t_wait, 1e-9)})
        m.update(self.pool.stats())
        m.update({f"fault/{k}": v for k, v in self.faults.items()})
        m["rollout/engines"] = len(self.rollouts)
        from rlvr.environments.trajectory import env_metrics

        m.update(env_metrics([c.trajectory for g in groups for c in g.comps if c.trajectory]))
        for k, v in (("generation", t_gen), ("verify", t_ver), ("training", t_train), ("weight_sync", t_sync)):
            self.timings[k] += v
        # Collapse guard: when every group agrees, advantages are all zero and learning has stopped.
        # (With n=1 every "group" agrees with itself: there is nothing to detect.)
        self.collapse_run = self.collapse_run + 1 if groups_equal == 1.0 and r.rollout.n > 1 else 0
        if r.train.collapse_patience and self.collapse_run == r.train.collapse_patience:
            self.progress.print(f"[yellow]warning: for {self.collapse_run} steps every group's rewards were equal "
                                "(collapsed or saturated policy): no learning signal. Consider a lower learner.lr, "
                                "a higher rollout.temperature, or harder prompts.[/yellow]")
        m["collapse/steps_all_equal"] = self.collapse_run
        self.sink.log_step(m)
        if r.logging.sample_table_every and self.step % r.logging.sample_table_every == 0:
            self.sink.log_samples_table(self.step, [{"prompt": g.prompt, "completion": _transcript(c), "reward": s.score,
                                                     "details": json.dumps(s.details, default=str)[:500]}
                                                    for g in chosen for c, s in zip(g.comps, g.scores)][:16])
        return m

    def enqueue(self) -> None:
        """Draw the next batch and start generating it; it remembers the stream position before it was drawn."""
        state = self.stream.state_dict()
        rows = self.stream.next_batch()
        prompts = [render_prompt(self.prep.tokenizer, row) for row in rows]
        self.in_flight.append((rows, prompts, self.submit(prompts, rows=rows), state))

    # ------------------------------------------------------------------ the run

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
        acc = acc0
        while self.step < r.train.steps:
            m = self.train_step()
            if r.train.eval_every and self.step % r.train.eval_every == 0 and self.step < r.train.steps:
                acc = self.evaluate()
            self.progress.update(self.step, f"reward {m['reward/mean']:.3f}  acc {acc:.1%}  gen {m['time/generation']:.1f}s  "
                                            f"train {m['time/training']:.1f}s  sync {m['time/weight_sync']:.2f}s")
            if r.train.save_every and self.step % r.train.save_every == 0:
                self.save_checkpoint()
            if r.train.max_minutes and time.time() - t_train0 > r.train.max_minutes * 60:
                self.progress.print(f"train.max_minutes={r.train.max_minutes} reached at step {self.step}")
                break
        self.drain()
        acc = self.evaluate()
        self.save_final()
        summary = {"run_dir": str(self.run_dir), "steps": self.step, "finished": True, "accuracy_before": acc0,
                   "accuracy_after": acc, "accuracy_gain_points": 100 * (acc - acc0), "wall_seconds": time.time() - t_run,
                   "rl_seconds": time.time() - t_train0, "timings": dict(self.timings), "faults": dict(self.faults)}
        if self.last_eval_env:  # multi-turn rows: tool use in the first and the last evaluation
            summary["env_before"], summary["env_after"] = env0, dict(self.last_eval_env)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def drain(self) -> None:
        """Wait out generations still in flight (async), so no engine is busy when weights are saved or evaluated."""
        import ray

        self.in_flight.clear()
        self.scheduler.drain()

    def save_final(self) -> None:
        import ray

        t0 = time.time()
        path = str((self.run_dir / "final").resolve())
        ray.get([l.save_pretrained.remote(path) for l in self.learners])
        self.timings["save"] += time.time() - t0

    def save_checkpoint(self) -> Path:
        """DeepSpeed state of every rank, then the controller's state sealed in rlvr_state.json (see checkpoint.py)."""
        import ray

        from rlvr import checkpoint

        t0 = time.time()
        root = (self.run_dir / "checkpoints").resolve()
        d = checkpoint.step_dir(root, self.step)
        ray.get([l.save_checkpoint.remote(str(d), {"step": self.step}) for l in self.learners])
        checkpoint.write_manifest(d, {"step": self.step, "policy_version": self.version, "stream": self.trained_stream_state,
                                      "gen_calls": self.gen_calls, "accuracy_before": self.accuracy_before,
                                      "timings": dict(self.timings)})
        checkpoint.prune(root, self.recipe.train.keep_checkpoints)
        self.timings["checkpoint"] += time.time() - t0
        return d

    def restore(self, d: Path, state: dict) -> None:
        """Load a sealed checkpoint into the learners, the stream and the counters, and push its weights to the engines."""
        import ray

        ray.get([l.load_checkpoint.remote(str(d)) for l in self.learners])
        self.step, self.version, self.gen_calls = int(state["step"]), int(state["policy_version"]), int(state["gen_calls"])
        self.stream.load_state_dict(state["stream"])
        self.trained_stream_state = state["stream"]
        self.resumed_from = state
        self.sync_weights(bump=False)


def learner_algorithm(recipe: Recipe) -> dict:
    """The `algorithm:` section as the learners get it: tis_cap resolved (learners/algo_config.effective_tis_cap)."""
    from rlvr.learners.algo_config import effective_tis_cap

    a = recipe.algorithm
    return {**a.model_dump(), "tis_cap": effective_tis_cap(a.tis_cap, recipe.train.async_steps)}


def reset_failures(g: "Group") -> int:
    """Trajectories of the group whose environment failed at reset (no prompt, nothing sampled). Such a
    group is not trained: a member without a prompt has no place in the learner's group-shaped batch, and
    would sit in its siblings' baseline as a phantom reward 0 (docs/environments.md)."""
    return sum(bool(c.trajectory and c.trajectory.get("reset_failed")) for c in g.comps)


def learner_prompt_ids(groups: list["Group"]) -> list[list[int]]:
    """Each completion's own prompt ids (an environment's reset may differ per trajectory; an agent's run
    starts from its own first call), the group's where a completion carries none."""
    return [c.prompt_ids or g.prompt_ids for g in groups for c in g.comps]


@dataclass
class Group:
    """One prompt's n completions with their scores, and the policy version that sampled them."""

    row: dict
    prompt: str
    prompt_ids: list[int]
    comps: list
    scores: list
    engine: int = 0
    t_finished: float = 0.0  # when its engine finished it
    t_scored: float = 0.0  # when its scores came back
    rewards: list[float] = field(default_factory=list)  # scores plus the overlong penalty, set once scored

    @property
    def version(self) -> int:
        return min(c.policy_version for c in self.comps)


def resume_point(recipe: Recipe) -> tuple[Path, dict] | None:
    """The checkpoint to resume `recipe`'s run from, or None when the run already finished (CheckpointError otherwise)."""
    from rlvr.checkpoint import latest

    summary = recipe.run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("finished"):
        return None
    return latest(recipe.run_dir / "checkpoints")


def train(recipe: Recipe, *, progress=None) -> dict:
    """Run a recipe from its first step (`rlvr train --resume` continues one: see cli.cmd_train)."""
    prep = prepare(recipe)
    trainer = Trainer(prep, progress=progress)
    try:
        return trainer.run()
    finally:
        trainer.shutdown()
