"""``SynthesisService``: a job's stored trajectory -> a cited report.

The servicer holds one callable, ``synthesize(job_id) -> (Report, report_id)``, that the process
(``fathom.serve.synthesis``) builds around ``fathom.research.worker.synthesize_job`` with the
synthesizer model it loaded once and owns. The request's deadline (or the call's) bounds the work.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from fathom.core.errors import DeadlineExceeded, InvalidArgument
from fathom.rpc import convert
from fathom.rpc.gen import synthesis_pb2, synthesis_pb2_grpc
from fathom.rpc.status import maps_errors

SERVICE_NAME = synthesis_pb2.DESCRIPTOR.services_by_name["SynthesisService"].full_name
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Synthesize = Callable[[str], Awaitable[tuple[Any, str]]]


def check_job_id(job_id: str) -> str:
    if not JOB_ID.match(job_id):
        raise InvalidArgument("job_id must be 1 to 64 characters of [A-Za-z0-9_-]", reason="BAD_JOB_ID",
                              field="job_id")
    return job_id


def _deadline(request_s: float, context: Any) -> float | None:
    if request_s < 0:
        raise InvalidArgument("deadline_s must be >= 0", reason="BAD_DEADLINE", field="deadline_s")
    remaining = context.time_remaining()
    limits = [x for x in (request_s or None, remaining) if x is not None]
    return min(limits) if limits else None


class SynthesisServicer(synthesis_pb2_grpc.SynthesisServiceServicer):
    def __init__(self, synthesize: Synthesize) -> None:
        self.synthesize = synthesize

    @maps_errors
    async def Synthesize(
        self, request: synthesis_pb2.SynthesizeRequest, context: Any
    ) -> synthesis_pb2.Report:
        job_id = check_job_id(request.job_id)
        limit = _deadline(request.deadline_s, context)
        try:
            report, report_id = await asyncio.wait_for(self.synthesize(job_id), timeout=limit)
        except TimeoutError:
            raise DeadlineExceeded(f"synthesis of job {job_id} took longer than {limit:.1f} s",
                                   reason="SYNTHESIS_DEADLINE", job_id=job_id) from None
        return convert.report_to_proto(report, job_id, report_id)


def register(server: grpc.aio.Server, servicer: SynthesisServicer) -> None:
    synthesis_pb2_grpc.add_SynthesisServiceServicer_to_server(servicer, server)
