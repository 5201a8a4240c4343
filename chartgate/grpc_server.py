"""A gRPC server with the standard health checking and reflection services, shared by both processes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


def build_server(
    listen: str,
    register: Callable[[grpc.Server], None],
    service_names: Sequence[str],
    *,
    max_workers: int = 16,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """Create a sync gRPC server on `listen` (host:port; port 0 picks a free one).

    Returns the unstarted server, the bound port and the health servicer (all services SERVING).
    A sync server with a thread pool is the measured choice (DESIGN.md, "Performance budget").
    """
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
    register(server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (*service_names, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port, health_servicer
