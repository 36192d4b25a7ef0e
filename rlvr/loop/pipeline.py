"""The pipeline (a part of Trainer): batches in flight, stream-and-score, partial rollouts, drain."""

from __future__ import annotations

import time
from collections import deque

from rlvr.data import encode_prompts, render_prompt
from rlvr.loop.groups import Group
from rlvr.verifiers import VerifyRequest


class Pipeline:
    """Batches in flight: submit prompts to the scheduler, stream finished groups into the scorer while
    others still generate, partial rollouts across weight updates, and draining at the end."""

    def _gen_kwargs(self, greedy: bool) -> dict:
        ro = self.recipe.rollout
        # Per-token versions need streamed deltas only when a sequence can cross a weight update.
        # Also without in-flight updates when batches run ahead (async_steps): a sync pauses only the running
        # requests, and the queued ones are sampled after it, under the new weights.
        t = self.recipe.train
        return dict(n=ro.n, temperature=ro.temperature, top_p=ro.top_p, max_tokens=ro.max_tokens, greedy=greedy,
                    track_versions=t.inflight_updates or t.async_steps > 0)


    def submit(self, prompts: list[str], *, greedy: bool = False, per_group: list[dict] | None = None,
               rows: list[dict] | None = None):
        """Start generating `prompts` (rendered once to token ids here): one request per group, routed by the
        scheduler. Rows naming an environment run as multi-turn trajectories in the engine's actor instead."""
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
                "limits": limits, "max_tokens": e.max_tokens_per_turn or self.recipe.rollout.max_tokens,
                "agent_threads": e.agent_threads or self.recipe.train.prompts_per_step * self.recipe.rollout.n}


    def collect(self, batch, on_group=None) -> tuple[list, list, float]:
        """Completions in prompt order, each prompt's token ids, and wall seconds. `on_group(k, result)`
        runs as each group finishes (the scorer, while the other groups still generate)."""
        for k, res in self.scheduler.stream(batch):
            self._refused(res)  # announced once; the callers skip it
            if on_group is not None:
                on_group(k, res)
        results = [batch.results[k] for k in range(len(batch.prompt_ids))]
        comps = [c for res in results for c in res.completions]
        return comps, [res.prompt_token_ids for res in results], time.time() - batch.t_submit


    def _stream_scored(self, rows: list[dict], prompts: list[str], batch) -> tuple[list, list[list], float]:
        """Stream a submitted batch, scoring each group the moment it finishes (while the others still
        generate). Returns the groups' results and scores in prompt order, and the verification seconds."""
        scores: dict = {}
        t_ver = 0.0
        pending: dict = {}  # model-scored verifiers (judges, reward models): group -> future

        def score_group(k, res):
            nonlocal t_ver
            if res.refused:  # nothing was generated: nothing to score (the callers skip it)
                scores[k] = []
                res.t_scored = time.time()
                return
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


    def _generate_and_score(self, rows: list[dict], prompts: list[str], *, greedy: bool = False):
        """Completions in prompt order (groups contiguous), each prompt's token ids, their scores, and the
        generation (wall, less scoring) and verification seconds."""
        t0 = time.time()
        results, scores, t_ver = self._stream_scored(rows, prompts, self.submit(prompts, greedy=greedy, rows=rows))
        comps = [c for res in results for c in res.completions]
        return comps, [res.prompt_token_ids for res in results], [s for g in scores for s in g], time.time() - t0 - t_ver, t_ver


    def score(self, rows: list[dict], prompts: list[str], comps: list) -> list:
        return self.pool.score(VerifyRequest.for_completions(rows, prompts, comps))


    def _fresh_groups(self, rows: list[dict], prompts: list[str], batch) -> tuple[list["Group"], float, float]:
        """Stream a submitted batch into scored groups; returns the groups and the generation/verify seconds."""
        results, scores, t_ver = self._stream_scored(rows, prompts, batch)
        groups = []
        for k, (row, res) in enumerate(zip(rows, results)):
            if self._refused(res):
                continue
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
            if self._refused(res):
                continue
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


    def enqueue(self) -> None:
        """Draw the next batch and start generating it; it remembers the stream position before it was drawn."""
        state = self.stream.state_dict()
        rows = self.stream.next_batch()
        prompts = [render_prompt(self.prep.tokenizer, row) for row in rows]
        self.in_flight.append((rows, prompts, self.submit(prompts, rows=rows), state))


    def drain(self) -> None:
        """Wait out generations still in flight (async), so no engine is busy when weights are saved or evaluated."""
        self.in_flight.clear()
        self.scheduler.drain()


    def _refused(self, res) -> bool:
        """A group whose prompt the engine refused (e.g. longer than the context): skipped, counted in
        rollout/refused_prompts, and said once in the console. The engine is not restarted for it."""
        if not res.refused:
            return False
        if not self.said_refused:
            self.said_refused = True
            self.progress.print(f"[yellow]an engine refused a prompt ({res.refused[:200]}); such rows are skipped "
                                "and counted in rollout/refused_prompts[/yellow]")
        return True
