"""One settings object for the whole system (pydantic-settings, env prefix ``FATHOM_``).

Nested groups use ``__`` in environment names, e.g. ``FATHOM_POLICY__BACKEND=openai``,
``FATHOM_POLICY__BASE_URL=http://vllm-policy:8000/v1``, ``FATHOM_SEARCH__BACKEND=serper``.
Secrets (API keys) are read from the environment only and never logged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BUNDLED_MODEL = "bundled:smollm2-135m-instruct"


def _default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("fathom"))


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("fathom"))


class ModelRole(BaseModel):
    """How to reach one model role (policy, synthesizer, extractor, judge)."""

    # "replay": serves recorded completions (fathom.models.replay) at `latency_s`, so the plane can be
    # load- and fault-tested without a GPU; `model` is then the recordings file.
    backend: Literal["transformers", "openai", "replay"] = "transformers"
    # For `transformers`: a hub id, a local path, or BUNDLED_MODEL.
    # For `openai`: the model name the server expects.
    model: str = BUNDLED_MODEL
    base_url: str | None = None  # OpenAI-compatible endpoint, e.g. http://vllm:8000/v1
    api_key: SecretStr | None = None  # usually from FATHOM_<ROLE>__API_KEY or OPENAI_API_KEY
    # "completions" sends raw prompt text (Fathom models speak ChatML text); "chat" sends messages
    # (refused for the policy, whose prompt is ChatML already: see models/factory.py).
    api: Literal["completions", "chat"] = "completions"
    context_tokens: int = 40_960
    max_new_tokens: int = 1024
    temperature: float = 0.6
    top_p: float = 1.0
    repetition_penalty: float = 1.05
    timeout_s: float = 120.0
    max_retries: int = 3
    concurrency: int = 8
    device: str = "cpu"  # transformers only: "cpu", "cuda", "auto"
    dtype: str = "auto"  # transformers only
    latency_s: float = Field(default=0.0, ge=0.0)  # replay only: time per completion


# Each role has its own defaults in its own class: a role configured partly from the environment
# (FATHOM_EXTRACTOR__BACKEND=openai) keeps the role's other defaults instead of the generic ones.
class PolicyRole(ModelRole):
    max_new_tokens: int = 8_192  # per turn, as in RAPO stage 1
    concurrency: int = 64  # requests in flight to the policy server: vLLM batches many trajectories


class SynthesizerRole(ModelRole):
    context_tokens: int = 131_072  # YaRN factor 4 over Qwen3-4B's native 32,768 positions
    max_new_tokens: int = 10_000
    temperature: float = 0.4
    repetition_penalty: float = 1.0


class ExtractorRole(ModelRole):
    max_new_tokens: int = 1024  # GPT-4.1-mini at temperature 0 in the original
    temperature: float = 0.0
    repetition_penalty: float = 1.0


def is_weak_model(role: ModelRole) -> bool:
    """The bundled 135M model: it cannot follow the tool or extractor protocols unaided."""
    return role.backend == "transformers" and role.model == BUNDLED_MODEL


# The original's 1,024-token extractor budget is GPT-4.1-mini's; the bundled 135M model on a CPU
# spends minutes on it and writes its parts in far fewer tokens or not at all.
WEAK_EXTRACTOR_TOKENS = 192


def extractor_budget(role: ModelRole) -> int:
    """New tokens the extractor may write per answer: the configured budget, except for the bundled
    model when no budget was set for it. The one rule: the extractor applies it to its own role, so
    every entry point that builds one (research runtime, ``fathom fetch``, benches) gets the same."""
    if is_weak_model(role) and "max_new_tokens" not in role.model_fields_set:
        return WEAK_EXTRACTOR_TOKENS
    return role.max_new_tokens


class JudgeRole(ModelRole):
    max_new_tokens: int = 512
    temperature: float = 0.0
    repetition_penalty: float = 1.0


class SearchSettings(BaseModel):
    backend: Literal["local", "serper", "searxng"] = "local"
    index_dir: Path | None = None  # local; default: the prepared sample corpus index in cache_dir
    serper_url: str = "https://google.serper.dev/search"
    searxng_url: str | None = None
    timeout_s: float = 15.0
    cache_ttl_s: float | None = None  # None: cached for the life of the process
    cache_size: int = 10_000
    snippet_chars: int = 240
    # local only: pseudo-relevance feedback from the top N hits (0 = off). 1 raises multi-hop
    # recall (bridge entities) and roughly doubles the cost of a query.
    feedback_docs: int = 0
    # local only: fuse BM25 with all-MiniLM-L6-v2 vectors (needs the vectors cached beside the
    # index, in <corpus>/dense; encoding the query costs a few ms on CPU).
    dense: bool = False


class FetchSettings(BaseModel):
    # "live": fetch and snapshot; "replay": answer only from snapshots; "record" == live.
    mode: Literal["live", "replay"] = "live"
    deadline_s: float = 20.0  # per fetch, really cancels the request
    browser_deadline_s: float = 30.0
    max_html_bytes: int = 2_000_000  # raw body cap for HTML/text (original: 200 kB read)
    max_pdf_bytes: int = 32 * 1024 * 1024
    max_pdf_pages: int = 40
    max_pdf_chars: int = 40_000
    max_text_chars: int = 400_000
    max_redirects: int = 5
    user_agent: str = "FathomBot/0.1 (+https://github.com/fathom-research/fathom)"
    browser: Literal["auto", "never", "always"] = "auto"
    browser_executable: str = "/usr/bin/chromium"
    browser_contexts: int = 6  # pooled pages per browser process (6 measured best on 2 cores)
    browser_recycle_after: int = 200  # pages before the browser process is recycled
    browser_domains: list[str] = Field(default_factory=list)  # always render these hosts
    js_min_text_chars: int = 200  # less main text than this from HTML => try the browser
    allow_origins: list[str] = Field(default_factory=list)  # explicit allowlist (scheme://host:port)
    allow_private: bool = False  # only for allowlisted origins; never set in production
    respect_robots: bool = True
    per_domain_concurrency: int = 4
    per_domain_rps: float = 8.0
    # Requests in flight to one allowlisted origin (the local web): no politeness applies there,
    # and more than this only makes the connection pool slower (see httpx_fetcher).
    own_origin_concurrency: int = 8
    snapshot_dir: Path | None = None  # default: data_dir / "snapshots"
    # Where the snapshot index lives. None: a SQLite file beside the blobs (one machine; every process
    # sharing snapshot_dir shares it). A database URL (the job store's, on PostgreSQL): the
    # `page_snapshots` table, for workers on many machines over one shared blob volume.
    snapshot_index_url: str | None = None


class ExtractSettings(BaseModel):
    page_chars: int = Field(default=15_000, ge=1)  # the extractor reads the first 15k chars (original)
    prompt_version: str = "v2"
    attempts: int = Field(default=3, ge=1)
    # Temperature of attempts 2 and later; None: the role's own (0 for the extractor, as in the
    # original). A local model at 0 repeats its first answer word for word, so there a retry helps
    # only with some sampling (e.g. 0.3): a deviation to choose, not a default.
    retry_temperature: float | None = Field(default=None, ge=0.0)
    # Fallbacks when no attempt gives the three parts, as in the original: a model compression of
    # the whole page to about 30%, then the start of the whole page cut to this many tokens.
    fallback_tokens: int = Field(default=6_000, ge=1)
    # "free_text": the original's three-part answer, quotes written by the model and then checked
    # against the page. "sentence_choice": quotes are the page's own sentences, ranked by word
    # overlap with the goal and by the model's likelihood scores (verbatim by construction), and
    # Rationale / Summary are built from them, so nothing of the prompt can be echoed; for models
    # too weak to quote. "auto": sentence_choice for the bundled model, free_text for any other.
    quote_protocol: Literal["auto", "free_text", "sentence_choice"] = "auto"
    choice_shortlist: int = Field(default=8, ge=1, le=32)  # sentences the model scores (best overlap)
    choice_quotes: int = Field(default=3, ge=1)  # quotes kept of those
    cache: bool = True


class AgentSettings(BaseModel):
    max_turns: int = 64
    max_context_tokens: int = 40_960
    max_new_tokens_per_turn: int = 8_192
    tool_concurrency: int = 8
    max_tool_calls: int | None = None
    # Off, as in the original: a limit (turns, context budget, tool calls) ends the trajectory and
    # the answer is the last \boxed{} written, if any. On: the loop adds a user turn asking for the
    # answer and generates one more turn, keeping FINAL_ANSWER_TOKENS of the budget free for it.
    force_final_answer: bool = False
    # Guided mode keeps weak models (the bundled SmolLM2) on protocol with prefill and
    # constrained decoding; a trained policy runs free.
    guided: bool = False
    # guided: the turn budget. The policy searches and reads until an answer is supported by a
    # verified quote; its last turn answers with the best grounded candidate (or says none is).
    guided_max_turns: int = 10
    guided_reads_per_search: int = 2  # guided: results read after each search before a follow-up
    min_searches: int = 1  # guided: searches required before an answer is allowed
    min_reads: int = 1  # guided: page reads required before an answer is allowed


class RewardSettings(BaseModel):
    """The rewards of RAPO (FATHOM.md, "RAPO" and "The steerable step-level reward"). Every constant
    of the paper is a setting; the defaults are the paper's."""

    stage: Literal[1, 2] = 1  # 1: 0.1 * R_format + 0.9 * correct; 2: the steerable step-level reward
    format_weight: float = 0.1
    correct_weight: float = 0.9  # stage 1
    correct_floor: float = 0.5  # stage 2, correct: max(1 - rho, correct_floor)
    c1: float = 0.2  # stage 2, wrong: weight of the search-diversity term
    c2: float = 0.2  # stage 2, wrong: weight of the page-reading term
    cap_search: int = Field(default=8, ge=1)  # C_S
    cap_query: int = Field(default=16, ge=1)  # C_Q
    verifications_allowed: int = Field(default=1, ge=0)  # B_v
    judge: Literal["llm", "exact", "f1"] = "llm"  # how an answer is judged correct
    f1_threshold: float = Field(default=0.8, ge=0.0, le=1.0)  # judge == "f1": correct at or above
    labeller: Literal["llm", "embedding"] = "embedding"  # step labels (stage 2)
    judge_prompt_version: str = "v1"
    cache: bool = True  # verdicts and labels cached on disk (cache_dir)


class WebSettings(BaseModel):
    """The local web that serves the sample corpus (local search backend). Its origin is written into
    search hits, snapshots, trajectories and reports, so it is a stable, configured address: a job's
    URLs stay valid after the job ends (``fathom serve web`` keeps it up as its own process)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)  # 0: a free port (tests only: URLs then die with it)
    js_share: float = 0.15

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"


class PlaneSettings(BaseModel):
    """The distributed plane: broker, shared Redis, gRPC addresses, leases, limits, security.

    Secrets (auth tokens) come from the environment or a mounted file, never from code."""

    broker_url: str = "redis://127.0.0.1:6379/0"  # Celery broker (redis:// or amqp://)
    # Tool results, cancellation and event wake-ups; default: broker_url when it is redis://.
    redis_url: str | None = None
    lease_s: float = Field(default=30.0, gt=0)  # a running job's claim; renewed every lease_s / 3
    sweep_interval_s: float = Field(default=5.0, gt=0)
    # A queued job whose message has not been picked up for this long is queued again (a broker that
    # lost its messages); a duplicate message is harmless: claims are compare-and-set.
    requeue_after_s: float = Field(default=120.0, gt=0)
    visibility_timeout_s: float = Field(default=3600.0, gt=0)  # Redis transport redelivery
    tool_result_ttl_s: float = Field(default=86_400.0, gt=0)
    job_deadline_s: float = Field(default=3_600.0, gt=0)  # default whole-job deadline
    max_question_chars: int = Field(default=4_000, ge=1)
    max_batch_items: int = Field(default=10_000, ge=1)
    client_running_quota: int = Field(default=256, ge=1)  # running+queued jobs per client
    gateway_address: str = "127.0.0.1:50051"
    policy_address: str = "127.0.0.1:50052"
    synthesis_address: str = "127.0.0.1:50053"
    reward_address: str = "127.0.0.1:50054"
    tools_address: str = "127.0.0.1:50055"
    # Bearer tokens accepted by every gRPC method but health: "client:token" pairs, comma-separated,
    # from FATHOM_PLANE__AUTH_TOKENS or one pair per line in auth_tokens_file. Empty: auth off
    # (loopback development only; servers log a warning).
    auth_tokens: SecretStr | None = None
    auth_tokens_file: Path | None = None
    client_token: SecretStr | None = None  # what our own clients send (FATHOM_PLANE__CLIENT_TOKEN)
    tls_cert: Path | None = None  # server certificate chain (PEM); with tls_key turns TLS on
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: mutual TLS, client certificates must chain to it
    tls_ca: Path | None = None  # client side: CA that signed the servers' certificates
    tls_client_cert: Path | None = None  # client side, mutual TLS
    tls_client_key: Path | None = None
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_concurrent_rpcs: int = Field(default=256, ge=1)
    grace_s: float = Field(default=10.0, ge=0)  # graceful shutdown: drain this long, then stop
    metrics_port: int | None = None  # Prometheus /metrics; None: off, 0: a free port
    # How a research worker runs the policy and the synthesizer: over gRPC (PolicyService,
    # SynthesisService at the addresses above) or in its own process (tools still go over the queues).
    policy_via: Literal["grpc", "local"] = "grpc"
    # Trajectories one policy process runs at once (each waits on the model server or its tools
    # most of the time); the model requests among them are bounded by policy.concurrency.
    policy_trajectories: int = Field(default=256, ge=1)
    # Threads a plane process gives blocking work (store queries, Redis, the Celery producer) from its
    # event loop; asyncio's default (cores + 4) queues dozens of concurrent jobs' writes behind 6.
    io_threads: int = Field(default=64, ge=1)
    synthesis_via: Literal["grpc", "local"] = "grpc"
    # Weight sync: the one directory a policy service loads trainer weights from (LoadWeights), a
    # volume the trainer also mounts (a PVC in the cluster). A path a client names outside it is
    # refused; None: LoadWeights is refused (FAILED_PRECONDITION).
    weights_dir: Path | None = None

    @property
    def resolved_redis_url(self) -> str:
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return "redis://127.0.0.1:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FATHOM_", env_nested_delimiter="__", env_file=None, extra="ignore"
    )

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None  # default: sqlite file in data_dir
    log_level: str = "INFO"
    log_json: bool = False

    policy: PolicyRole = Field(default_factory=PolicyRole)
    synthesizer: SynthesizerRole = Field(default_factory=SynthesizerRole)
    extractor: ExtractorRole = Field(default_factory=ExtractorRole)
    judge: JudgeRole = Field(default_factory=JudgeRole)

    search: SearchSettings = Field(default_factory=SearchSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    extract: ExtractSettings = Field(default_factory=ExtractSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    reward: RewardSettings = Field(default_factory=RewardSettings)
    plane: PlaneSettings = Field(default_factory=PlaneSettings)

    serper_api_key: SecretStr | None = None  # FATHOM_SERPER_API_KEY (or SERPER_API_KEY)

    @field_validator("policy", "synthesizer", "extractor", "judge", mode="before")
    @classmethod
    def _role_from_generic(cls, value: Any) -> Any:
        """A plain ``ModelRole`` given in code becomes the role's class: what it sets wins, and the
        role's own defaults fill the rest."""
        if isinstance(value, ModelRole):
            return value.model_dump(exclude_unset=True)
        return value

    @property
    def extractor_budget(self) -> int:
        """The extractor's effective answer budget (see ``extractor_budget``)."""
        return extractor_budget(self.extractor)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "fathom.db"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def snapshot_dir(self) -> Path:
        return self.fetch.snapshot_dir or (self.data_dir / "snapshots")

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @property
    def sample_index_dir(self) -> Path:
        return self.cache_dir / "corpus" / "sample"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
