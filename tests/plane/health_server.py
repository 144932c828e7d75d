"""A tiny real gRPC server with only the standard health service: a stand-in process for the
supervisor's own tests (what it supervises is any OS process; the plane's servers are tested in
test_stack.py). Run as ``python -m tests.plane.health_server PORT``; SIGTERM stops it."""

from __future__ import annotations

import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> None:
    port = int(sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print("health server ready", flush=True)
    done.wait()
    server.stop(0.5).wait()


if __name__ == "__main__":
    main()
