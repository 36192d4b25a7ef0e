"""Multi-turn rows on a rollout actor (a part of RolloutActor): environments and agents."""

from __future__ import annotations

import asyncio
import time

from rlvr.engines.async_llm import sampling_params
from rlvr.engines.completion import Completion, GroupResult


class MultiTurn:
    """Multi-turn rows on a rollout actor: a row's trajectories in an environment, or a user's agent through
    the actor's OpenAI-compatible endpoint. A part of RolloutActor: `self` is the actor."""

    async def run_env(self, row: dict, *, env: str, env_options: dict, plugins: list[str], limits: dict, n: int,
                      temperature: float, top_p: float = 1.0, max_tokens: int = 16, greedy: bool = False,
                      prompt_index: int = 0, agent_threads: int = 512, track_versions: bool = True, **_) -> GroupResult:
        """n multi-turn trajectories of one row in its environment, concurrently (environments/trajectory.py).
        Environment steps and tools run in this actor's event loop, never inside the engine. Turns stream
        per-token deltas only with `track_versions` (a weight update may land mid-turn), as `generate` does:
        otherwise each turn's tokens come back at once, one engine output per call instead of one per token."""
        from rlvr.environments import get_environment, load_environment_plugins
        from rlvr.environments.agent import AgentEnvironment
        from rlvr.environments.trajectory import Limits, run_trajectory

        llm = await self._engine()
        if tuple(plugins) != getattr(self, "_env_plugins", None):
            load_environment_plugins(plugins)
            self._env_plugins = tuple(plugins)
        lim = Limits(**{"max_tokens_per_turn": max_tokens, "max_total_tokens": llm.model_config.max_model_len, **limits})
        # A turn's prompt must leave the engine room for a token: past its context the engine would refuse it.
        lim.max_total_tokens = min(lim.max_total_tokens, llm.model_config.max_model_len)

        async def turn(ids: list[int], budget: int):
            params = sampling_params(n=1, temperature=temperature, top_p=top_p, max_tokens=budget, greedy=greedy,
                                     stream=track_versions)
            out_ids, lps, finish, spans = await self._sample(ids, params)
            return out_ids[0], lps[0], finish[0], [tuple(x) for x in spans[0]]

        t0 = time.time()
        if isinstance(get_environment(env, **env_options), AgentEnvironment):
            comps, prompt_ids = await self._run_agents(row, env, env_options, turn, lim, 1 if greedy else n, prompt_index,
                                                       agent_threads)
            return GroupResult(comps, prompt_ids, self.engine_index, t0, time.time())
        trajs = await asyncio.gather(*(run_trajectory(get_environment(env, **env_options), row, self.tokenizer, turn, lim)
                                       for _ in range(1 if greedy else n)))
        comps = []
        for t in trajs:
            extra = {"messages": t.messages, "turns": t.turns, "reason": t.reason, "step_rewards": t.step_rewards,
                     "info": t.info, "error": t.error, "reset_failed": t.reset_failed}
            comps.append(Completion(prompt_index, t.token_ids, t.logprobs, t.final_text, t.reason,
                                    t.version_spans[0][0] if t.version_spans else self.policy_version,
                                    list(t.version_spans), t.loss_mask, extra, prompt_ids=list(t.prompt_ids)))
        # Each trajectory trains under its own reset's prompt; the group's is the first that reset.
        prompt_ids = next((list(t.prompt_ids) for t in trajs if t.prompt_ids), [])
        return GroupResult(comps, prompt_ids, self.engine_index, t0, time.time())

    async def agent_endpoint(self):
        """This actor's OpenAI-compatible endpoint (environments/endpoint.py), started on first use on the
        node's cluster address."""
        if getattr(self, "_agent_endpoint", None) is None:
            from rlvr.environments.endpoint import AgentEndpoint

            try:
                import ray

                host = ray.util.get_node_ip_address()
            except Exception:
                host = "127.0.0.1"
            await self._engine()
            self._agent_endpoint = await AgentEndpoint(self.tokenizer, host=host).start()
        return self._agent_endpoint

    async def agent_endpoint_url(self) -> str:
        return (await self.agent_endpoint()).base_url

    async def agent_endpoint_stats(self) -> dict:
        """Open trajectory keys and refused requests (tests, the agent benchmark)."""
        ep = getattr(self, "_agent_endpoint", None)
        return {"sessions": len(ep.sessions) if ep else 0, "refused": ep.refused if ep else 0}

    async def _run_agents(self, row: dict, env: str, env_options: dict, turn, lim, k: int, prompt_index: int,
                          threads: int = 512):
        """k runs of a registered agent against this actor's endpoint; each run's trajectory holding its last
        call is the completion, any other trajectory of the run is one of its branches. EngineDead from any
        run ends the others and propagates (the group is rerun elsewhere)."""
        from rlvr.environments import get_environment
        from rlvr.environments.agent import CallIds, agent_pool, run_agent
        from rlvr.environments.trajectory import render_opening

        ep = await self.agent_endpoint()
        settings = dict(generate=turn, max_tokens=lim.max_tokens_per_turn, max_total_tokens=lim.max_total_tokens,
                        max_turns=lim.max_turns)
        tasks = [asyncio.ensure_future(run_agent(get_environment(env, **env_options), row, ep, settings, lim.timeout_s,
                                                 agent_pool(threads))) for _ in range(k)]
        try:
            runs = await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        try:  # the row's own prompt: the fallback of a run that never called the model
            fallback = render_opening(self.tokenizer, [dict(m) for m in row["messages"]], [])
        except Exception:
            fallback = [self.tokenizer.eos_token_id]

        def completion(seg, run, traj):
            if seg is None:
                return Completion(prompt_index, [], [], run.answer, run.reason, self.policy_version, [], [], traj,
                                  prompt_ids=fallback)
            return Completion(prompt_index, seg.token_ids, seg.logprobs, run.answer, run.reason,
                              seg.version_spans[0][0] if seg.version_spans else self.policy_version,
                              list(seg.version_spans), seg.loss_mask, traj, prompt_ids=seg.prompt_ids)

        comps = []
        for run in runs:
            last = run.calls[-1] if run.calls else None
            messages = [*last.messages, {"role": "assistant", "content": last.text}] if last and last.messages else []
            traj = {"messages": messages, "turns": len(run.calls),
                    "calls": CallIds.of(run), "reason": run.reason,
                    "step_rewards": [] if run.reward is None else [float(run.reward)], "agent_reward": run.reward,
                    "info": run.info, "error": run.error, "endpoint_seconds": run.endpoint_seconds,
                    "endpoint_cpu_seconds": run.endpoint_cpu_seconds,
                    "engine_seconds": [c.seconds for c in run.calls]}
            c = completion(run.primary, run, traj)
            c.branches = [completion(b, run, traj) for b in run.branches]
            comps.append(c)
        return comps, fallback
