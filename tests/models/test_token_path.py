"""The token-level model path on the bundled model: ids in, sampled ids and log-probs out, and
weight updates that the next request sees."""

from __future__ import annotations

import asyncio

import pytest
import torch
from fathom.models.base import SamplingParams, supports_tokens
from fathom.models.transformers_backend import TransformersBackend


def test_complete_tokens_continues_the_given_ids_and_logprobs_match_scoring(
        bundled_backend: TransformersBackend) -> None:
    b = bundled_backend
    assert supports_tokens(b)
    prompt = b.tokenize("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n")
    out = asyncio.run(b.complete_tokens(prompt, SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)))
    assert out.token_ids and out.logprobs and len(out.token_ids) == len(out.logprobs)
    # The recorded log-probs are those of the sampling distribution (temperature 1: the model's).
    scored = asyncio.run(b.score_tokens(prompt + out.token_ids, len(prompt)))
    assert scored == pytest.approx(out.logprobs, abs=2e-4)
    # Same seed, same ids: the prompt is used as given, not re-tokenized from text.
    again = asyncio.run(b.complete_tokens(prompt, SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)))
    assert again.token_ids == out.token_ids
    assert b.detokenize(out.token_ids).startswith(out.text)


def test_complete_tokens_with_choices_scores_after_the_ids(bundled_backend: TransformersBackend) -> None:
    b = bundled_backend
    prompt = b.tokenize("The capital of France is")
    out = asyncio.run(b.complete_tokens(prompt, SamplingParams(choices=(" Paris", " banana"))))
    assert out.text == " Paris" and out.token_ids == b.tokenize(" Paris")
    assert out.logprobs == pytest.approx(asyncio.run(b.score_tokens(prompt + out.token_ids, len(prompt))),
                                         abs=2e-4)


@pytest.mark.slow
def test_load_weights_is_seen_by_the_next_request(bundled_model_path: object) -> None:
    from transformers import AutoModelForCausalLM

    backend = TransformersBackend(str(bundled_model_path), name="smollm2-sync")
    trainer = AutoModelForCausalLM.from_pretrained(str(bundled_model_path), dtype=torch.float32)
    seq = backend.tokenize("Fathom trains its search agent with RAPO.")

    def trainer_logprobs() -> list[float]:
        with torch.no_grad():
            logits = trainer(input_ids=torch.tensor([seq])).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(seq[1:])[:, None]).squeeze(1)
        return [float(x) for x in lp]

    try:
        assert asyncio.run(backend.score_tokens(seq, 1)) == pytest.approx(trainer_logprobs(), abs=1e-4)
        with torch.no_grad():  # an "optimizer step": the trainer's weights move
            for p in trainer.parameters():
                p.add_(torch.randn_like(p) * 0.02, alpha=1.0)
        before = asyncio.run(backend.score_tokens(seq, 1))
        assert before != pytest.approx(trainer_logprobs(), abs=1e-3)  # not synced yet: they differ
        version = backend.load_weights(trainer.state_dict())
        assert version == "smollm2-sync@1" == backend.policy_version
        assert asyncio.run(backend.score_tokens(seq, 1)) == pytest.approx(trainer_logprobs(), abs=1e-4)
        with pytest.raises(Exception, match="lacks"):
            backend.load_weights({"no.such.weight": torch.zeros(1)})
        # A partial update is refused before anything is copied: the served version stays.
        with pytest.raises(Exception, match="missing"):
            backend.load_weights({"model.norm.weight": trainer.state_dict()["model.norm.weight"]})
        assert backend.policy_version == "smollm2-sync@1"
    finally:
        asyncio.run(backend.aclose())
