"""Judge actor: a Ray actor owning one vLLM `AsyncLLM` that answers rubric prompts (text in, text out).

The same pattern as the rollout actor (the engine is built inside Ray's event loop, methods are
coroutines so many requests share the engine's batch), without weight sync: a judge's weights
never change. `rlvr verify` and `rlvr eval` use the class directly, without Ray.
"""

from __future__ import annotations

import itertools


class JudgeActor:
    def __init__(self, model_path: str, *, seed: int = 0, dtype: str = "float32", max_model_len: int | None = None,
                 kv_cache_gib: float = 1.0, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.3,
                 enforce_eager: bool = True, engine_index: int = 0, name: str = "judge"):
        from rlvr.engines.async_llm import engine_args

        self.name, self.engine_index = name, engine_index
        self._args = engine_args(model_path, seed=seed, engine_index=engine_index, dtype=dtype, max_model_len=max_model_len,
                                 kv_cache_gib=kv_cache_gib, tensor_parallel_size=tensor_parallel_size,
                                 enforce_eager=enforce_eager, gpu_memory_utilization=gpu_memory_utilization)
        self.llm = None
        self._ids = itertools.count()

    async def _engine(self):
        if self.llm is None:
            from rlvr.engines.async_llm import start_async_llm

            self.llm = start_async_llm(self._args, f"judge '{self.name}' engine {self.engine_index}")
            self.tokenizer = self.llm.get_tokenizer()
        return self.llm

    async def ready(self) -> int:
        await self._engine()
        return self.engine_index

    def encode(self, messages: list[dict]) -> list[int]:
        """The rubric rendered with the judge's own chat template (plain text joined if it has none)."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return tok.encode(text, add_special_tokens=False)

    async def judge(self, messages: list[dict], sampling: dict) -> dict:
        """One rubric prompt: {text, prompt_tokens, completion_tokens}."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        llm = await self._engine()
        ids = self.encode(messages)
        params = SamplingParams(n=1, temperature=sampling.get("temperature", 0.0), top_p=sampling.get("top_p", 1.0),
                                max_tokens=sampling.get("max_tokens", 16), output_kind=RequestOutputKind.FINAL_ONLY)
        final = None
        async for out in llm.generate(TokensPrompt(prompt_token_ids=ids), params,
                                      request_id=f"judge-{self.name}-{self.engine_index}-{next(self._ids)}"):
            final = out
        c = final.outputs[0]
        return {"text": c.text, "prompt_tokens": len(ids), "completion_tokens": len(c.token_ids)}

    async def shutdown(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
