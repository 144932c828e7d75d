"""Model benchmark: load time and generation throughput of the bundled model (prints numbers).

Measures single-prompt greedy decoding and one batch of ``batch`` prompts, in tokens per second of
generated text. Run: ``python -c "from fathom.bench.models import bench_bundled; bench_bundled()"``.
"""

from __future__ import annotations

import asyncio
import time

from fathom.core.config import get_settings
from fathom.models.base import ChatMessage, SamplingParams
from fathom.models.bundled import prepare_bundled
from fathom.models.transformers_backend import TransformersBackend

_QUESTIONS = [
    "Explain why the sky is blue.",
    "Describe how a bicycle works.",
    "What causes ocean tides?",
    "Summarise the water cycle.",
    "Why do leaves change colour in autumn?",
    "How does a refrigerator keep food cold?",
    "What is photosynthesis?",
    "Why is the sea salty?",
]


def bench_bundled(new_tokens: int = 64, batch: int = 8, device: str = "cpu") -> dict[str, float]:
    """Print and return load seconds and tokens/s (single and batched) for the bundled model."""
    started = time.perf_counter()
    path = prepare_bundled(get_settings().models_dir)
    prepare_s = time.perf_counter() - started
    backend = TransformersBackend(str(path), device=device, name="smollm2-135m", batch_window_s=0.0)
    started = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - started
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, repetition_penalty=1.0)
    prompts = [backend.render_chat([ChatMessage("user", q)]) for q in (_QUESTIONS * batch)[:batch]]

    async def run() -> tuple[float, int, float, int]:
        await backend.complete(prompts[0], SamplingParams(max_new_tokens=2, temperature=0))  # warm-up
        t0 = time.perf_counter()
        single = await backend.complete(prompts[0], params)
        single_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        many = await backend.complete_batch(prompts, params)
        batch_s = time.perf_counter() - t0
        await backend.aclose()
        return single_s, single.usage.completion_tokens, batch_s, sum(c.usage.completion_tokens for c in many)

    single_s, single_n, batch_s, batch_n = asyncio.run(run())
    result = {
        "prepare_s": prepare_s,
        "load_s": load_s,
        "single_tokens_per_s": single_n / single_s,
        "batch_tokens_per_s": batch_n / batch_s,
        "batch": float(batch),
    }
    print(f"bundled model: prepare {prepare_s:.2f} s, load {load_s:.2f} s")
    print(
        f"single prompt : {single_n} tokens in {single_s:.2f} s = {result['single_tokens_per_s']:.1f} tok/s"
    )
    print(
        f"batch of {batch}    : {batch_n} tokens in {batch_s:.2f} s"
        f" = {result['batch_tokens_per_s']:.1f} tok/s"
    )
    return result
