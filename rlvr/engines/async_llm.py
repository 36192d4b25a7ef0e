"""vLLM AsyncLLM start-up and sampling parameters, shared by the policy's and the judges' engines."""

from __future__ import annotations


def sampling_params(*, n: int, temperature: float, top_p: float, max_tokens: int, greedy: bool,
                     ignore_eos: bool = False, stream: bool = False):
    """Sampling settings with the sampled token's log-prob (logprobs=0), which the learner needs.
    `stream`: deltas after every engine step (to tag each token with the policy version that sampled it)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
    if greedy:
        return SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, logprobs=0, ignore_eos=ignore_eos, output_kind=kind)
    return SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, logprobs=0,
                          ignore_eos=ignore_eos, output_kind=kind)


def start_async_llm(args: dict, what: str):
    """vLLM's AsyncLLM for these engine args (call it in the actor's event loop: its output handler runs there)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    try:
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
    except Exception as e:  # vLLM's pydantic errors do not pickle across Ray: keep the message
        raise RuntimeError(f"{what} failed to start: {e}") from None
