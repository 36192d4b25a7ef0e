"""Between generation and learning: which groups a step trains on, and the learner's batch.

The pure parts (flags, the batch) are functions; `StepChoices` is the part of Trainer that draws more
groups when dynamic sampling or drops leave the step short.
"""
from __future__ import annotations

import time

from rlvr.data import render_prompt
from rlvr.loop.groups import Group


def reset_failures(g: Group) -> int:
    """Trajectories of the group whose environment failed at reset (no prompt, nothing sampled). Such a
    group is not trained: a member without a prompt has no place in the learner's group-shaped batch, and
    would sit in its siblings' baseline as a phantom reward 0 (docs/environments.md)."""
    return sum(bool(c.trajectory and c.trajectory.get("reset_failed")) for c in g.comps)


def learner_prompt_ids(groups: list[Group]) -> list[list[int]]:
    """Each completion's own prompt ids (an environment's reset may differ per trajectory; an agent's run
    starts from its own first call), the group's where a completion carries none."""
    return [c.prompt_ids or g.prompt_ids for g in groups for c in g.comps]


def group_flags(groups: list[Group], *, version: int, async_steps: int, dynamic_sampling: bool,
                n: int) -> tuple[list[bool], list[bool], list[bool]]:
    """(informative, stale, unusable) per group: informative unless dynamic sampling finds its rewards all
    equal; stale when older than async_steps versions; unusable when stale or an environment failed at reset."""
    import torch

    from rlvr.learners.advantages import dynamic_sampling_filter

    stale = [version - g.version > async_steps for g in groups]
    unusable = [old or reset_failures(g) > 0 for old, g in zip(stale, groups)]
    if not dynamic_sampling:
        return [True] * len(groups), stale, unusable
    kept = set(dynamic_sampling_filter(torch.tensor([g.rewards for g in groups]), n).tolist())
    return [i in kept for i in range(len(groups))], stale, unusable


def learner_batch(chosen: list[Group], recipe, pad_id: int) -> dict:
    """The learner's batch of the chosen groups; an agent run's extra branches follow the group-shaped rows,
    sharing their trajectory's reward. DAPO's overlong filter masks truncated responses out of the loss."""
    import torch

    from rlvr.learners.advantages import overlong_filter
    from rlvr.learners.batch import build_batch

    rewards = [x for g in chosen for x in g.rewards]
    comps = [c for g in chosen for c in g.comps]
    branches = [(i, b) for i, c in enumerate(comps) for b in c.branches]
    rows = comps + [b for _, b in branches]
    batch = build_batch(learner_prompt_ids(chosen) + [b.prompt_ids for _, b in branches], [c.token_ids for c in rows],
                        [c.logprobs for c in rows], rewards + [rewards[i] for i, _ in branches],
                        group_size=recipe.rollout.n, pad_id=pad_id, temperature=recipe.rollout.temperature,
                        loss_masks=[c.loss_mask for c in rows], extra_of=[i for i, _ in branches])
    if recipe.algorithm.overlong_filter:
        batch["response_mask"] = overlong_filter(batch["response_mask"], torch.tensor([c.finish_reason == "length" for c in rows]))
        batch["total_tokens"] = float(batch["response_mask"].sum())
    return batch


class StepChoices:
    """The step's groups: the next ones to finish, refilled from the stream when too few are usable."""

    def next_groups(self) -> tuple[list[Group], dict]:
        """Partial rollouts (in-flight updates with async_steps) take the first groups to finish; otherwise the
        oldest batch in flight, while the next async_steps batches start generating. Times: generation, verify."""
        r = self.recipe
        t0 = time.time()
        if r.train.inflight_updates and r.train.async_steps:
            groups, t_gen, t_ver = self._first_finished_groups(r.train.prompts_per_step)
        else:
            if not self.in_flight:
                self.enqueue()
            rows, prompts, batch, _ = self.in_flight.popleft()
            while len(self.in_flight) < r.train.async_steps and self.step + 1 + len(self.in_flight) < r.train.steps:
                self.enqueue()
            groups, t_gen, t_ver = self._fresh_groups(rows, prompts, batch)
        return groups, {"generation": t_gen, "verify": t_ver, "generation_wait": time.time() - t0 - t_ver}

    def refill(self, groups: list[Group], times: dict) -> tuple[list[Group], tuple, int]:
        """DAPO dynamic sampling (and stale / failed-reset drops): draw more groups from the stream, a bounded
        number of rounds, until `prompts_per_step` are usable. Returns the groups, their flags, the rounds."""
        r, a = self.recipe, self.recipe.algorithm
        target = r.train.prompts_per_step
        flag = lambda gs: group_flags(gs, version=self.version, async_steps=r.train.async_steps,  # noqa: E731
                                      dynamic_sampling=a.dynamic_sampling, n=r.rollout.n)
        flags = flag(groups)
        usable = lambda f: sum(inf and not bad for inf, bad in zip(f[0], f[2]))  # noqa: E731
        rounds = 0
        while (usable(flags) < target and rounds < (a.dynamic_sampling_max_retries if a.dynamic_sampling else 1)
               and (a.dynamic_sampling or any(flags[2]))):
            rounds += 1
            more_rows = self.stream.take(min(target, 2 * (target - usable(flags))))
            more_prompts = [render_prompt(self.prep.tokenizer, x) for x in more_rows]
            more, tg, tv = self._fresh_groups(more_rows, more_prompts, self.submit(more_prompts, rows=more_rows))
            groups = groups + more
            times["generation"] += tg
            times["verify"] += tv
            flags = flag(groups)
        return groups, flags, rounds

    def choose(self, groups: list[Group], flags: tuple) -> list[Group]:
        """The groups to train on (informative and usable first, in order); a failed reset is said once."""
        from rlvr.learners.batch import pick_groups

        informative, _, unusable = flags
        chosen = [groups[i] for i in pick_groups(informative, unusable, self.recipe.train.prompts_per_step)]
        failed = [(g, c) for g in groups for c in g.comps if c.trajectory and c.trajectory.get("reset_failed")]
        if failed and not getattr(self, "_reset_warned", False):  # once: env/reset_errors counts every step
            self._reset_warned = True
            g, c = failed[0]
            self.progress.print(f"[yellow]environment {g.row.get('env')!r} failed at reset ({c.trajectory.get('error', '')[:200]}); "
                                "its group is not trained (counted in env/reset_errors)[/yellow]")
        if not chosen:
            raise RuntimeError(f"no samples to train on at step {self.step + 1} (all older than train.async_steps, "
                               "or their environments failed at reset: see env/reset_errors)")
        return chosen
