"""ChatML rendering, for when no tokenizer chat template is at hand (remote models not in the local cache).

Fathom's models are Qwen3 fine-tunes and speak ChatML, so this is the right fallback for them.
"""

from __future__ import annotations

from fathom.models.base import ChatMessage


def render_chatml(messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
    parts = [f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages]
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)
