"""Redis key and channel names of the plane (docs/PLANE.md), in one place so that writers and
readers in different processes cannot drift apart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import redis

# What "Redis is away" looks like to a client (a restart, a network blip): retry, never give up.
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)

TOOL_KEY_PREFIX = "fathom:tool:"
TOOL_DONE_CHANNEL = "fathom:tool:done"
CANCEL_KEY_PREFIX = "fathom:cancel:"
CANCEL_CHANNEL = "fathom:cancel"
EVENTS_CHANNEL_PREFIX = "fathom:events:"
CANCEL_TTL_S = 86_400  # a cancel outlives any job it can reach


def tool_key(call_id: str) -> str:
    """Where the finished result of one tool call lives (written once, SET NX)."""
    return f"{TOOL_KEY_PREFIX}{call_id}"


def cancel_key(job_id: str) -> str:
    """Set before the cancel is published, so a task that starts later still sees it."""
    return f"{CANCEL_KEY_PREFIX}{job_id}"


def events_channel(stream: str) -> str:
    """Wake-up channel of an event stream; the events themselves are store rows."""
    return f"{EVENTS_CHANNEL_PREFIX}{stream}"


async def listen_forever(
    redis_url: str,
    channel: str,
    on_message: Callable[[str], None],
    *,
    on_subscribed: Callable[[bool], Awaitable[None] | None],
    on_down: Callable[[], None] | None = None,
    closed: Callable[[], bool],
    max_backoff_s: float,
    name: str,
) -> None:
    """Stay subscribed to ``channel`` for the life of the process: each message's payload goes to
    ``on_message``; after every (re)subscription ``on_subscribed(reconnected)`` runs, so the caller
    re-reads whatever was published while Redis was away (a pub/sub message is never replayed).
    A Redis restart costs a reconnect with backoff, never the listener."""
    import redis.asyncio as aioredis

    from fathom.core.logging import get_logger

    log = get_logger(__name__)
    backoff = 0.05
    while not closed():
        client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=2, health_check_interval=5)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
            reconnected = backoff > 0.05
            if reconnected:
                log.info(f"{name}.reconnected")
            backoff = 0.05
            maybe = on_subscribed(reconnected)
            if maybe is not None:
                await maybe
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    on_message(data.decode() if isinstance(data, bytes) else str(data))
        except REDIS_DOWN as exc:
            if on_down is not None:
                on_down()
            log.warning(f"{name}.redis_down", error=str(exc), retry_in_s=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
        finally:
            # Bounded: this also runs when the listener is cancelled mid-read, and a close that waits
            # on a half-dead connection must not hold up the owner's shutdown.
            try:
                await asyncio.wait_for(_close_both(pubsub, client), CLOSE_TIMEOUT_S)
            except (TimeoutError, *REDIS_DOWN):  # type: ignore[misc]
                pass


CLOSE_TIMEOUT_S = 2.0


async def _close_both(pubsub: object, client: object) -> None:
    await pubsub.aclose()  # type: ignore[attr-defined]
    await client.aclose()  # type: ignore[attr-defined]


async def stop_listener(task: asyncio.Task[None] | None, timeout_s: float = 5.0) -> None:
    """Cancel a ``listen_forever`` task and wait for it, but never longer than ``timeout_s``: a
    shutdown must finish even if a Redis client hangs in its cancellation path."""
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait({task}, timeout=timeout_s)
