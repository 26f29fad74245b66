"""Prometheus metrics: request counts and latencies per route, job submissions, jobs by status."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
REQUESTS = Counter("fine_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=REGISTRY)
LATENCY = Histogram("fine_http_request_seconds", "HTTP request latency", ["method", "route"], registry=REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
JOBS_SUBMITTED = Counter("fine_jobs_submitted_total", "Jobs accepted by POST /v1/jobs", registry=REGISTRY)
JOBS_BY_STATUS = Gauge("fine_jobs", "Jobs in the registry by status", ["status"], registry=REGISTRY)
REAPED = Counter("fine_jobs_reaped_total", "Jobs whose worker went silent", ["outcome"], registry=REGISTRY)


async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    start = time.perf_counter()
    status = 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        LATENCY.labels(request.method, path).observe(time.perf_counter() - start)
        REQUESTS.labels(request.method, path, str(status)).inc()
