"""Queues and lanes in one place. Celery queue names are ``<queue>.<lane>``.

A worker serving both lanes lists every live queue before its train twin and the Redis transport
reads queues in that fixed order (``queue_order_strategy="priority"``): live work is always taken
first, training takes what is left and is never starved while live is idle.
"""

from __future__ import annotations

from fathom.rpc.gen import common_pb2

LANES: tuple[str, ...] = ("live", "train")
QUEUES: tuple[str, ...] = ("research", "search", "fetch", "synthesis", "reward")
LANE_CHOICES: tuple[str, ...] = (*LANES, "both")

_TO_PROTO: dict[str, int] = {"live": common_pb2.LANE_LIVE, "train": common_pb2.LANE_TRAIN}
_FROM_PROTO: dict[int, str] = {common_pb2.LANE_UNSPECIFIED: "live", common_pb2.LANE_LIVE: "live",
               common_pb2.LANE_TRAIN: "train"}


def check_lane(lane: str) -> str:
    if lane not in LANES:
        raise ValueError(f"unknown lane {lane!r}: expected one of {', '.join(LANES)}")
    return lane


def queue_name(queue: str, lane: str) -> str:
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}: expected one of {', '.join(QUEUES)}")
    return f"{queue}.{check_lane(lane)}"


def lane_from_proto(value: int) -> str:
    try:
        return _FROM_PROTO[value]
    except KeyError:
        raise ValueError(f"unknown lane enum value {value}") from None


def lane_to_proto(lane: str) -> int:
    return _TO_PROTO[check_lane(lane)]


def worker_queues(queues: list[str], lane: str) -> list[str]:
    """Celery queue names a worker consumes, live before train for every queue."""
    if lane not in LANE_CHOICES:
        raise ValueError(f"unknown lane {lane!r}: expected one of {', '.join(LANE_CHOICES)}")
    lanes = LANES if lane == "both" else (lane,)
    names = [queue_name(q, ln) for ln in lanes for q in queues]
    return names
