"""Stop strings: find the first one in generated text, and stop generation as soon as one appears."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def find_stop(text: str, stops: Sequence[str]) -> tuple[int, str] | None:
    """The earliest position where any stop string starts in ``text``, and which one (longest wins ties)."""
    best: tuple[int, str] | None = None
    for stop in stops:
        if not stop:
            continue
        at = text.find(stop)
        if at >= 0 and (best is None or at < best[0] or (at == best[0] and len(stop) > len(best[1]))):
            best = (at, stop)
    return best


def trim_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """``text`` cut before the first stop string, and that stop string (or None)."""
    found = find_stop(text, stops)
    if found is None:
        return text, None
    return text[: found[0]], found[1]


def make_stop_criteria(tokenizer: Any, stops: Sequence[str], prompt_len: int) -> Any:
    """A transformers ``StoppingCriteria`` that ends each row once its generated text holds a stop string.

    Only the tail of each row is decoded per step: a stop string of ``n`` characters lies inside the
    last ``n + 2`` tokens (every token decodes to at least one character, give or take a partial
    UTF-8 byte), so the cost per step does not grow with the generation. Special tokens are skipped,
    as in the final text (and as vLLM does by default).
    """
    import torch
    from transformers import StoppingCriteria

    tail_tokens = max(len(s) for s in stops) + 2

    class StopStringCriteria(StoppingCriteria):
        def __init__(self) -> None:
            # row -> number of generated tokens when its stop string first appeared
            self.stopped_at: dict[int, int] = {}

        def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
            generated = input_ids.shape[1] - prompt_len
            done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            start = max(prompt_len, input_ids.shape[1] - tail_tokens)
            for row in range(input_ids.shape[0]):
                if row in self.stopped_at:
                    done[row] = True
                    continue
                tail = tokenizer.decode(input_ids[row, start:].tolist(), skip_special_tokens=True)
                if find_stop(tail, stops) is not None:
                    self.stopped_at[row] = generated
                    done[row] = True
            return done  # type: ignore[return-value]

    return StopStringCriteria()
