"""vLLM's token-level path through ``VLLMBackend``: token ids in, sampled ids and log-probs out,
prompt scoring, and the errors around them, over real sockets.

vLLM cannot run on this machine (no GPU, no vLLM, no internet), so most tests here talk to
``VLLMDouble``, a test double that is acceptable only for that reason: a small HTTP server
(``JSONServer``: asyncio + h11 on a real socket) that answers ``POST /v1/completions``,
``/tokenize`` and ``/detokenize`` in vLLM's response format, byte for byte for the fields used here:

- ``CompletionResponse`` / ``CompletionResponseChoice`` / ``CompletionLogProbs`` / ``UsageInfo`` in
  their field order (vllm/entrypoints/openai/completion/protocol.py), every field present, nulls
  included, rendered compact as Starlette's ``JSONResponse`` does (``encode_json``);
- ``logprobs``: ``"token_id:N"`` tokens with ``return_tokens_as_token_ids``, text offsets advanced
  by the shown token's length, log-probs floored at -9999.0, ``top_logprobs`` the sampled token then
  the top k (completion/serving.py, ``_create_completion_logprobs``);
- ``prompt_logprobs``: ``[null, {"<id>": {"logprob", "rank", "decoded_token"}}, ...]``, the prompt
  token's own entry first, then the top k by rank (vllm/v1/engine/logprobs.py, ``_make_logprob_dict``);
- stops as vllm/v1/core/sched/utils.py ``check_stop`` and vllm/v1/engine/detokenizer.py do them:
  EOS and ``stop_token_ids`` stay among the ids, a stop string is cut from the text only;
- errors as ``{"error": {"message", "type", "param", "code"}}``.

Behind it is a toy bigram language model, so every number is checkable and an answer read one
position off shows. The last tests run the same client against ``ModelServer`` over the real bundled
model, whose token path answers in vLLM's shapes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fathom.core.config import ModelRole
from fathom.core.errors import ModelError
from fathom.models.base import SamplingParams, supports_tokens
from fathom.models.server import HTTPError, JSONServer, ServerThread, encode_json
from fathom.models.transformers_backend import TransformersBackend
from fathom.models.vllm_backend import VLLMBackend

# ----------------------------------------------------------------- the toy model behind the double

PIECES = [*"abcdefghijklmnopqrstuvwxyz01234", "<|end|>"]  # id -> text; the last id is EOS
EOS = len(PIECES) - 1


def toy_logits(prev: int) -> list[float]:
    """Next-token logits given the previous token: "i" is followed by "j", and "j" ends the text."""
    logits = [((prev * 7 + t * 13) % 17) / 4.0 for t in range(len(PIECES))]
    if prev == 8:
        logits[9] += 20.0
    logits[EOS] += 20.0 if prev == 9 else -10.0
    return logits


def log_softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    norm = top + math.log(sum(math.exp(x - top) for x in logits))
    return [x - norm for x in logits]


def toy_logprobs(prev: int, temperature: float = 1.0) -> list[float]:
    """What the server reports, as with ``--logprobs-mode processed_logprobs`` (after temperature)."""
    scale = temperature if temperature > 0 else 1.0
    return log_softmax([x / scale for x in toy_logits(prev)])


@dataclass
class ToyOutput:
    ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    stop_reason: int | str | None


def toy_generate(prompt: list[int], request: dict[str, Any]) -> ToyOutput:
    """vLLM's stopping rules over the toy model, for one completions request (``top_p`` and the
    penalties are not modelled: the double is about the answer's format, not about sampling)."""
    temperature = float(request.get("temperature", 1.0))
    rng = random.Random(request.get("seed"))
    stops = request.get("stop") or []
    stops = [stops] if isinstance(stops, str) else stops
    stop_ids = request.get("stop_token_ids") or []
    ids: list[int] = []
    logprobs: list[float] = []
    text = ""
    for _ in range(int(request.get("max_tokens", 16))):
        lp = toy_logprobs((prompt + ids)[-1], temperature)
        if temperature > 0:
            token = rng.choices(range(len(PIECES)), weights=[math.exp(v) for v in lp])[0]
        else:
            token = max(range(len(PIECES)), key=lp.__getitem__)
        ids.append(token)
        logprobs.append(lp[token])
        if token == EOS:  # check_stop: EOS ends it, stop_reason None, the id stays
            return ToyOutput(ids, logprobs, text, "stop", None)
        if token in stop_ids:  # check_stop: the stop token's id is the stop_reason
            return ToyOutput(ids, logprobs, text, "stop", token)
        text += PIECES[token]
        for stop in stops:  # detokenizer: the text is cut at the stop string, the ids are not
            at = text.find(stop)
            if at != -1:
                keep = at + len(stop) if request.get("include_stop_str_in_output") else at
                return ToyOutput(ids, logprobs, text[:keep], "stop", stop)
    return ToyOutput(ids, logprobs, text, "length", None)


def _top(lp: list[float], first: int, k: int) -> list[tuple[int, float, int]]:
    """(id, logprob, rank): ``first`` (with its true rank), then the top k; a repeat keeps its place."""
    order = sorted(range(len(lp)), key=lambda t: -lp[t])
    rank = {t: i + 1 for i, t in enumerate(order)}
    chosen = {first: (lp[first], rank[first])}
    for t in order[:k]:
        chosen[t] = (lp[t], rank[t])
    return [(t, v, r) for t, (v, r) in chosen.items()]


def completion_answer(request: dict[str, Any], model: str) -> dict[str, Any]:
    prompt = request.get("prompt")
    if not (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
        raise HTTPError(400, "this double only takes token-id prompts", "prompt")
    out = toy_generate(prompt, request)
    k = request.get("logprobs")
    logprobs = None
    if k is not None:
        as_ids = bool(request.get("return_tokens_as_token_ids"))

        def shown(t: int) -> str:
            return f"token_id:{t}" if as_ids else PIECES[t]

        offsets, at, tops = [], 0, []
        for step, token in enumerate(out.ids):
            offsets.append(at)
            at += len(shown(token))
            lp = toy_logprobs((prompt + out.ids[:step])[-1], float(request.get("temperature", 1.0)))
            tops.append({shown(t): max(v, -9999.0) for t, v, _ in _top(lp, token, k)})
        logprobs = {
            "text_offset": offsets,
            "token_logprobs": [max(v, -9999.0) for v in out.logprobs],
            "tokens": [shown(t) for t in out.ids],
            "top_logprobs": tops,
        }
    prompt_logprobs: list[dict[str, Any] | None] | None = None
    if request.get("prompt_logprobs") is not None:
        prompt_logprobs = [None]
        for position in range(1, len(prompt)):
            lp = toy_logprobs(prompt[position - 1])  # the raw model's, whatever the temperature
            top = _top(lp, prompt[position], request["prompt_logprobs"])
            prompt_logprobs.append({
                str(t): {"logprob": max(v, -9999.0), "rank": r, "decoded_token": PIECES[t]} for t, v, r in top
            })
    return_ids = bool(request.get("return_token_ids"))
    choice = {
        "index": 0,
        "text": out.text,
        "logprobs": logprobs,
        "finish_reason": out.finish_reason,
        "stop_reason": out.stop_reason,
        "token_ids": out.ids if return_ids else None,
        "prompt_logprobs": prompt_logprobs,
        "prompt_token_ids": prompt if return_ids else None,
    }
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {"prompt_tokens": len(prompt), "total_tokens": len(prompt) + len(out.ids),
                  "completion_tokens": len(out.ids), "prompt_tokens_details": None},
        "kv_transfer_params": None,
    }


Fault = Callable[[dict[str, Any]], tuple[int, dict[str, Any] | bytes]]


class VLLMDouble(JSONServer):
    """Answers as a vLLM server would, over the toy model. ``fault`` rewrites the next answers
    (status and body) to play a broken or odd server; ``delay_s`` holds every answer back."""

    def __init__(self, model: str = "toy") -> None:
        super().__init__(model)
        self.fault: Fault | None = None
        self.delay_s = 0.0
        self.seen = 0

    async def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any] | bytes]:
        self.seen += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        request = json.loads(body or b"{}")
        if request.get("model", self.name) != self.name:
            raise HTTPError(404, f"The model `{request['model']}` does not exist.", "model")
        if path == "/v1/completions":
            answer = completion_answer(request, self.name)
        elif path == "/tokenize":
            tokens = [PIECES.index(c) for c in request["prompt"]]
            answer = {"count": len(tokens), "max_model_len": 2048, "tokens": tokens, "token_strs": None}
        elif path == "/detokenize":
            answer = {"prompt": "".join(PIECES[t] for t in request["tokens"])}
        else:
            raise HTTPError(404, "Not Found")
        return (200, answer) if self.fault is None else self.fault(answer)


@pytest.fixture
def double() -> Iterator[VLLMDouble]:
    server = VLLMDouble()
    with ServerThread(server):
        yield server


def client(server: JSONServer, **role: Any) -> VLLMBackend:
    role.setdefault("max_retries", 0)
    return VLLMBackend(ModelRole(backend="openai", model=server.name,
                                 base_url=f"http://127.0.0.1:{server.port}/v1", **role), backoff_s=0.01)


# ----------------------------------------------------------------- the format itself


def test_the_double_renders_what_vllm_renders() -> None:
    """One answer, compared with the bytes vLLM's pydantic models and Starlette would send."""
    body = completion_answer({"prompt": [4, 8], "max_tokens": 2, "temperature": 0, "logprobs": 0,
                              "return_tokens_as_token_ids": True, "return_token_ids": True}, "toy")
    body.update(id="cmpl-1", created=7)  # the only values that differ from run to run
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs["token_logprobs"] == pytest.approx([0.0, 0.0], abs=1e-6)  # "j" then EOS: near-certain
    logprobs.update(token_logprobs=[-0.5, -1.25], top_logprobs=[{"token_id:9": -0.5}, {"token_id:31": -1.25}])
    assert encode_json(body) == (
        b'{"id":"cmpl-1","object":"text_completion","created":7,"model":"toy","choices":[{"index":0,'
        b'"text":"j","logprobs":{"text_offset":[0,10],"token_logprobs":[-0.5,-1.25],'
        b'"tokens":["token_id:9","token_id:31"],"top_logprobs":[{"token_id:9":-0.5},{"token_id:31":-1.25}]},'
        b'"finish_reason":"stop","stop_reason":null,"token_ids":[9,31],"prompt_logprobs":null,'
        b'"prompt_token_ids":[4,8]}],"service_tier":null,"system_fingerprint":null,"usage":{"prompt_tokens":2,'
        b'"total_tokens":4,"completion_tokens":2,"prompt_tokens_details":null},"kv_transfer_params":null}'
    )


# ----------------------------------------------------------------- complete_tokens


async def test_complete_tokens_returns_the_sampled_ids_and_their_logprobs(double: VLLMDouble) -> None:
    backend = client(double)
    assert supports_tokens(backend)
    prompt = [1, 2, 3]
    params = SamplingParams(max_new_tokens=6, temperature=0.7, top_p=0.9, seed=11, repetition_penalty=1.0)
    out = await backend.complete_tokens(prompt, params)
    want = toy_generate(prompt, {"max_tokens": 6, "temperature": 0.7, "seed": 11})
    assert want.finish_reason == "length" and len(want.ids) == 6  # the case this test is about
    assert out.token_ids == want.ids
    assert out.logprobs == pytest.approx(want.logprobs, abs=1e-12)
    assert out.text == "".join(PIECES[t] for t in want.ids) and out.finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (3, 6)
    await backend.aclose()


async def test_eos_ends_the_completion_and_stays_among_the_ids(double: VLLMDouble) -> None:
    backend = client(double)
    out = await backend.complete_tokens([4, 8], SamplingParams(max_new_tokens=10, temperature=0.0))
    assert out.token_ids == [9, EOS] and len(out.logprobs or []) == 2  # "j", then EOS with its log-prob
    assert out.text == "j" and out.finish_reason == "stop" and out.stop is None
    await backend.aclose()


async def test_a_stop_string_is_cut_from_the_text_not_from_the_ids(double: VLLMDouble) -> None:
    backend = client(double)
    params = SamplingParams(max_new_tokens=10, temperature=0.0, stop=("ij",))
    out = await backend.complete_tokens([5, 1], params)
    want = toy_generate([5, 1], {"max_tokens": 10, "temperature": 0, "stop": ["ij"]})
    assert want.stop_reason == "ij" and want.ids == [2, 8, 9]  # "c", then the stop string in two tokens
    assert out.token_ids == want.ids and out.logprobs == pytest.approx(want.logprobs)
    assert out.text == want.text == "c" and out.stop == "ij"
    assert out.finish_reason == "stop"
    await backend.aclose()


async def test_a_stop_token_id_reads_as_a_stop_without_a_string(double: VLLMDouble) -> None:
    """vLLM's ``stop_reason`` is the token id when ``stop_token_ids`` ended the output."""
    def with_stop_token(answer: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer["choices"][0].update(finish_reason="stop", stop_reason=answer["choices"][0]["token_ids"][-1])
        return 200, answer

    double.fault = with_stop_token
    backend = client(double)
    out = await backend.complete_tokens([5, 3], SamplingParams(max_new_tokens=3, temperature=0.0))
    assert out.finish_reason == "stop" and out.stop is None and len(out.token_ids or []) == 3
    await backend.aclose()


# ----------------------------------------------------------------- score_tokens


async def test_score_tokens_reads_prompt_logprobs_position_by_position(double: VLLMDouble) -> None:
    backend = client(double)
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    want = [toy_logprobs(prev)[token] for prev, token in itertools.pairwise(ids)]
    assert await backend.score_tokens(ids, 1) == pytest.approx(want, abs=1e-12)
    assert await backend.score_tokens(ids, 5) == pytest.approx(want[4:], abs=1e-12)
    for bad in (0, len(ids)):
        with pytest.raises(ModelError, match="from_position"):
            await backend.score_tokens(ids, bad)
    with pytest.raises(ModelError, match="empty"):
        await backend.score_tokens([], 1)
    await backend.aclose()


async def test_sampled_logprobs_agree_with_scoring_at_temperature_one(double: VLLMDouble) -> None:
    """The weight-sync check's premise: score(prompt + sampled) gives back the sampling log-probs."""
    backend = client(double)
    prompt = [7, 0, 2]
    out = await backend.complete_tokens(prompt, SamplingParams(max_new_tokens=8, temperature=1.0, seed=5))
    assert out.token_ids and out.logprobs
    scored = await backend.score_tokens(prompt + out.token_ids, len(prompt))
    assert scored == pytest.approx(out.logprobs, abs=1e-12)
    await backend.aclose()


async def test_tokenize_and_detokenize_go_to_the_server(double: VLLMDouble) -> None:
    backend = client(double)  # "toy" is in no local tokenizer cache: the server's endpoints answer
    assert backend.tokenize("fathom") == [5, 0, 19, 7, 14, 12]
    assert backend.detokenize([5, 0, 19, 7, 14, 12, EOS]) == "fathom<|end|>"
    await backend.aclose()


def test_weights_are_not_pushed_through_the_seam() -> None:
    backend = VLLMBackend(ModelRole(backend="openai", model="toy", base_url="http://127.0.0.1:9/v1"))
    assert not callable(getattr(backend, "load_weights", None))  # what capability probes see
    with pytest.raises(AttributeError, match=r"trl vllm-serve.*update_named_param.*docs/TRAINING.md"):
        backend.load_weights({})


# ----------------------------------------------------------------- a server that fails


def _error(status: int, message: str) -> Fault:
    kind = "BadRequestError" if status == 400 else "InternalServerError"
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return lambda _answer: (status, body)


async def test_a_server_error_is_retried_then_raised_with_its_message(double: VLLMDouble) -> None:
    double.fault = _error(500, "EngineCore encountered an issue")
    backend = client(double, max_retries=1)
    with pytest.raises(ModelError, match=r"after 2 attempts: HTTP 500: EngineCore encountered an issue"):
        await backend.complete_tokens([1, 2], SamplingParams(max_new_tokens=2))
    assert double.seen == 2
    await backend.aclose()


async def test_a_bad_request_is_raised_at_once(double: VLLMDouble) -> None:
    double.fault = _error(400, "This model's maximum context length is 2048 tokens.")
    backend = client(double, max_retries=3)
    with pytest.raises(ModelError, match=r"HTTP 400 .*maximum context length"):
        await backend.score_tokens([1, 2, 3], 1)
    assert double.seen == 1
    await backend.aclose()


async def test_a_server_that_does_not_answer_in_time(double: VLLMDouble) -> None:
    double.delay_s = 1.0
    backend = client(double, timeout_s=0.2)
    with pytest.raises(ModelError, match="ReadTimeout"):
        await backend.complete_tokens([1, 2], SamplingParams(max_new_tokens=2))
    await backend.aclose()


def _rewrite(change: Callable[[dict[str, Any]], Any]) -> Fault:
    def fault(answer: dict[str, Any]) -> tuple[int, dict[str, Any] | bytes]:
        result = change(answer)
        return 200, result if isinstance(result, bytes) else answer

    return fault


def _choice(answer: dict[str, Any]) -> dict[str, Any]:
    choice: dict[str, Any] = answer["choices"][0]
    return choice


MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "not json": (lambda a: b"<html>502 Bad Gateway</html>", "invalid JSON"),
    "no choices": (lambda a: a.pop("choices"), "exactly one choice"),
    "two choices": (lambda a: a["choices"].append(dict(_choice(a), index=1)), "exactly one choice"),
    "no logprobs": (lambda a: _choice(a).update(logprobs=None), "no logprobs"),
    "text tokens": (lambda a: _choice(a)["logprobs"].update(tokens=["x"] * len(_choice(a)["token_ids"])),
                    "not a 'token_id:N' string"),
    "null logprob": (lambda a: _choice(a)["logprobs"]["token_logprobs"].__setitem__(0, None), "not a finite"),
    "aborted": (lambda a: _choice(a).update(finish_reason="abort"), "finish_reason 'abort'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_answer_is_a_clear_error(double: VLLMDouble, case: str) -> None:
    change, message = MALFORMED[case]
    double.fault = _rewrite(change)
    backend = client(double)
    with pytest.raises(ModelError, match=message):
        await backend.complete_tokens([5, 3], SamplingParams(max_new_tokens=3, temperature=0.0))
    await backend.aclose()


# ----------------------------------------------------------------- never silently misaligned


def _drop_last_logprob(a: dict[str, Any]) -> None:
    _choice(a)["logprobs"]["token_logprobs"].pop()


def _other_token_ids(a: dict[str, Any]) -> None:
    ids = _choice(a)["token_ids"]
    ids[-1] = (ids[-1] + 1) % len(PIECES)


def _bos_prepended(a: dict[str, Any]) -> None:
    _choice(a)["prompt_token_ids"] = [EOS, *_choice(a)["prompt_token_ids"]]


def _recounted(a: dict[str, Any]) -> None:
    a["usage"]["prompt_tokens"] += 1


MISALIGNED_SAMPLES = {
    "one log-prob fewer than tokens": (_drop_last_logprob, "3 sampled tokens but 2 log-probs"),
    "token_ids unlike the log-probs' ids": (_other_token_ids, "disagree"),
    "the server ran other prompt ids": (_bos_prepended, "other prompt ids"),
    "the prompt counted otherwise": (_recounted, "counted 3 prompt tokens for the 2 sent"),
}


@pytest.mark.parametrize("case", list(MISALIGNED_SAMPLES))
async def test_sampled_ids_and_logprobs_that_do_not_line_up_are_refused(double: VLLMDouble,
                                                                         case: str) -> None:
    change, message = MISALIGNED_SAMPLES[case]
    double.fault = _rewrite(change)
    backend = client(double)
    with pytest.raises(ModelError, match=message):
        await backend.complete_tokens([5, 3], SamplingParams(max_new_tokens=3, temperature=0.0))
    await backend.aclose()


def _prompt_entry_dropped(a: dict[str, Any]) -> None:
    _choice(a)["prompt_logprobs"].pop(0)  # the leading null gone: every position would shift by one


def _other_token_scored(a: dict[str, Any]) -> None:
    _choice(a)["prompt_logprobs"][2] = {"30": {"logprob": -1.0, "rank": 1, "decoded_token": "4"}}


MISALIGNED_SCORES = {
    "one entry fewer than prompt tokens": (_prompt_entry_dropped, "3 prompt log-prob entries for 4"),
    "a position without its token": (_other_token_scored, "position 2 has no log-prob for its token id 3"),
    "no prompt_logprobs at all": (lambda a: _choice(a).update(prompt_logprobs=None), "no prompt_logprobs"),
    "the server scored other ids": (_bos_prepended, "other prompt ids"),
}


@pytest.mark.parametrize("case", list(MISALIGNED_SCORES))
async def test_prompt_logprobs_that_do_not_line_up_are_refused(double: VLLMDouble, case: str) -> None:
    change, message = MISALIGNED_SCORES[case]
    double.fault = _rewrite(change)
    backend = client(double)
    with pytest.raises(ModelError, match=message):
        await backend.score_tokens([1, 2, 3, 4], 1)
    await backend.aclose()


# ----------------------------------------------------------------- the same client, a real model


@pytest.mark.slow
async def test_over_http_the_real_model_gives_the_in_process_ids_and_logprobs(
    model_server: ServerThread, bundled_backend: TransformersBackend
) -> None:
    """``ModelServer`` over the bundled model serves the token path in vLLM's shapes: the HTTP
    client gets what the in-process backend gives, and scoring agrees with sampling."""
    backend = VLLMBackend(ModelRole(backend="openai", model="smollm2", base_url=model_server.base_url))
    prompt = bundled_backend.tokenize("<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n")
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=3, repetition_penalty=1.0)
    over_http = await backend.complete_tokens(prompt, params)
    local = await bundled_backend.complete_tokens(prompt, params)
    assert over_http.token_ids == local.token_ids and over_http.text == local.text
    assert over_http.logprobs == pytest.approx(local.logprobs, abs=1e-6)
    assert over_http.usage.prompt_tokens == len(prompt)
    sequence = prompt + (over_http.token_ids or [])
    scored = await backend.score_tokens(sequence, len(prompt))
    assert scored == pytest.approx(await bundled_backend.score_tokens(sequence, len(prompt)), abs=1e-6)
    assert scored == pytest.approx(over_http.logprobs, abs=2e-4)  # temperature 1: sampling = scoring
    assert backend.detokenize(sequence) == bundled_backend.detokenize(sequence)
    await backend.aclose()


@pytest.mark.slow
def test_model_server_token_answers_have_vllms_fields_in_vllms_order(model_server: ServerThread) -> None:
    body = {"model": "smollm2", "prompt": [1, 2, 3], "max_tokens": 2, "temperature": 0, "logprobs": 1,
            "return_tokens_as_token_ids": True, "return_token_ids": True, "prompt_logprobs": 1}
    response = httpx.post(f"{model_server.base_url}/completions", json=body, timeout=120)
    assert b'"object":"text_completion"' in response.content  # compact, as vLLM renders it
    data = response.json()
    choice = data["choices"][0]
    assert list(choice) == ["index", "text", "logprobs", "finish_reason", "stop_reason", "token_ids",
                            "prompt_logprobs", "prompt_token_ids"]
    assert list(data["usage"]) == ["prompt_tokens", "total_tokens", "completion_tokens",
                                   "prompt_tokens_details"]
    assert choice["prompt_token_ids"] == [1, 2, 3] and len(choice["token_ids"]) == 2
    assert choice["logprobs"]["tokens"] == [f"token_id:{t}" for t in choice["token_ids"]]
    assert choice["logprobs"]["text_offset"] == [0, len(choice["logprobs"]["tokens"][0])]
    assert choice["prompt_logprobs"][0] is None and list(choice["prompt_logprobs"][1]) == ["2"]
    assert set(choice["prompt_logprobs"][2]["3"]) == {"logprob", "rank", "decoded_token"}
    refused = httpx.post(f"{model_server.base_url}/completions", timeout=30,
                         json={"prompt": "text", "prompt_logprobs": 1})
    assert refused.status_code == 400 and "token ids" in refused.json()["error"]["message"]
