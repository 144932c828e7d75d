from __future__ import annotations

import asyncio
import math

import pytest
from fathom.core.errors import ModelError
from fathom.models.base import ChatMessage, ModelBackend, SamplingParams
from fathom.models.transformers_backend import TransformersBackend

pytestmark = pytest.mark.slow

GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0, repetition_penalty=1.0)


def ask(backend: TransformersBackend, question: str) -> str:
    return backend.render_chat([ChatMessage("user", question)])


def test_is_a_model_backend(bundled_backend: TransformersBackend) -> None:
    assert isinstance(bundled_backend, ModelBackend)


def test_render_chat_uses_the_chatml_template(bundled_backend: TransformersBackend) -> None:
    text = bundled_backend.render_chat([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")])
    assert (
        text
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert bundled_backend.count_tokens("<|im_start|>") == 1
    assert 0 < bundled_backend.count_tokens("The capital of France is Paris.") < 12


async def test_greedy_is_deterministic_and_reports_usage(bundled_backend: TransformersBackend) -> None:
    prompt = ask(bundled_backend, "What is the capital of France?")
    first = await bundled_backend.complete(prompt, GREEDY)
    second = await bundled_backend.complete(prompt, GREEDY)
    assert first.text == second.text and first.token_ids == second.token_ids
    assert first.text.strip()
    assert first.usage.prompt_tokens == bundled_backend.count_tokens(prompt)
    assert first.usage.completion_tokens == len(first.token_ids or []) <= GREEDY.max_new_tokens
    assert first.model == "smollm2"


async def test_length_and_end_of_turn_finish_reasons(bundled_backend: TransformersBackend) -> None:
    prompt = ask(bundled_backend, "What is the capital of France?")
    cut = await bundled_backend.complete(prompt, SamplingParams(max_new_tokens=2, temperature=0))
    assert cut.finish_reason == "length" and cut.usage.completion_tokens == 2
    full = await bundled_backend.complete(prompt, SamplingParams(max_new_tokens=24, temperature=0))
    assert full.finish_reason == "stop" and full.stop is None
    assert full.token_ids and full.token_ids[-1] == bundled_backend.tokenizer.eos_token_id
    assert "<|im_end|>" not in full.text


async def test_stop_string_ends_generation_and_is_trimmed(bundled_backend: TransformersBackend) -> None:
    prompt = "Count: 1, 2, 3,"
    free = await bundled_backend.complete(prompt, SamplingParams(max_new_tokens=12, temperature=0))
    assert " 5," in free.text  # the model keeps counting
    params = SamplingParams(max_new_tokens=12, temperature=0, stop=(" 5", "never-appears"))
    stopped = await bundled_backend.complete(prompt, params)
    assert stopped.finish_reason == "stop" and stopped.stop == " 5"
    assert stopped.text == free.text[: free.text.index(" 5")]
    assert len(stopped.token_ids or []) < len(free.token_ids or [])  # it stopped early, not trimmed later


async def test_batch_equals_single(bundled_backend: TransformersBackend) -> None:
    prompts = [ask(bundled_backend, "Name a colour."), "Once upon a time", "1, 2, 3,"]
    singles = [await bundled_backend.complete(p, GREEDY) for p in prompts]
    batched = await bundled_backend.complete_batch(prompts, GREEDY)
    assert [c.text for c in batched] == [c.text for c in singles]
    assert [c.token_ids for c in batched] == [c.token_ids for c in singles]
    assert [c.usage for c in batched] == [c.usage for c in singles]


async def test_concurrent_callers_share_a_batch(bundled_backend: TransformersBackend) -> None:
    prompts = ["The sky is", "Water is", "Fire is", "Grass is"]
    before = bundled_backend.batches_run
    results = await asyncio.gather(*(bundled_backend.complete(p, GREEDY) for p in prompts))
    assert bundled_backend.batches_run - before < len(prompts)
    singles = [await bundled_backend.complete(p, GREEDY) for p in prompts]
    assert [r.text for r in results] == [s.text for s in singles]


async def test_logprobs_align_with_tokens(bundled_backend: TransformersBackend) -> None:
    prompt = ask(bundled_backend, "What is 2 + 2?")
    greedy = await bundled_backend.complete(
        prompt, SamplingParams(max_new_tokens=5, temperature=0, logprobs=True)
    )
    assert greedy.logprobs is not None and greedy.token_ids is not None
    assert len(greedy.logprobs) == len(greedy.token_ids) > 0
    assert all(lp <= 0 and math.isfinite(lp) for lp in greedy.logprobs)
    # A greedy token is the argmax, so its probability is at least 1/vocab and usually far higher.
    assert max(greedy.logprobs) > -1.0

    sampled = await bundled_backend.complete(
        prompt, SamplingParams(max_new_tokens=5, temperature=0.8, top_p=0.95, seed=7, logprobs=True)
    )
    again = await bundled_backend.complete(
        prompt, SamplingParams(max_new_tokens=5, temperature=0.8, top_p=0.95, seed=7, logprobs=True)
    )
    assert sampled.token_ids == again.token_ids  # same seed, same sample
    assert sampled.logprobs is not None and all(lp <= 0 and math.isfinite(lp) for lp in sampled.logprobs)
    plain = await bundled_backend.complete(prompt, SamplingParams(max_new_tokens=5, temperature=0))
    assert plain.logprobs is None


async def test_choices_pick_the_likelier_option(bundled_backend: TransformersBackend) -> None:
    prompt = ask(bundled_backend, "What is the capital of France? Answer with one word.")
    options = (" London", " Paris", " Banana")
    picked = await bundled_backend.complete(
        prompt + "The capital of France is", SamplingParams(choices=options)
    )
    assert picked.text == " Paris" and picked.finish_reason == "stop"
    scored = await bundled_backend.complete(
        prompt, SamplingParams(choices=("Paris", "Berlin"), logprobs=True)
    )
    assert scored.text in ("Paris", "Berlin")
    assert scored.token_ids == bundled_backend.tokenizer(scored.text, add_special_tokens=False).input_ids
    assert scored.logprobs is not None and len(scored.logprobs) == len(scored.token_ids or [])
    assert all(lp <= 0 for lp in scored.logprobs)


async def test_chat_is_render_plus_complete(bundled_backend: TransformersBackend) -> None:
    messages = [ChatMessage("user", "Say hello.")]
    via_chat = await bundled_backend.chat(messages, GREEDY)
    direct = await bundled_backend.complete(bundled_backend.render_chat(messages), GREEDY)
    assert via_chat.text == direct.text


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=0),
        SamplingParams(temperature=-1),
        SamplingParams(top_p=0),
        SamplingParams(choices=()),
    ],
)
async def test_bad_params_raise_model_error(
    bundled_backend: TransformersBackend, params: SamplingParams
) -> None:
    with pytest.raises(ModelError):
        await bundled_backend.complete("hello", params)


async def test_empty_prompt_is_a_clear_error_and_the_backend_keeps_working(
    bundled_backend: TransformersBackend,
) -> None:
    with pytest.raises(ModelError, match="empty prompt"):
        await bundled_backend.complete("", GREEDY)
    assert (await bundled_backend.complete("Hello", GREEDY)).token_ids


async def test_missing_model_is_a_model_error(tmp_path: object) -> None:
    backend = TransformersBackend(str(tmp_path), name="missing")
    with pytest.raises(ModelError, match="cannot load"):
        await backend.complete("hi", GREEDY)
    await backend.aclose()
    with pytest.raises(ModelError, match="closed"):
        await backend.complete("hi", GREEDY)
