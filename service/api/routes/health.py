"""Liveness, readiness (database, broker, blob store) and Prometheus metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from dispatch.broker import check_broker
from learngene_store.models import JOB_STATUSES, Job
from service.deps import CeleryDep, SessionDep, StoreDep
from service.errors import problem_response
from service.metrics import JOBS_BY_STATUS, REGISTRY

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "a dependency is down"}})
def readyz(request: Request, session: SessionDep, celery: CeleryDep, store: StoreDep) -> Response:
    """Ready when the database, the broker and the blob store all answer."""
    checks: dict[str, str] = {}
    failures: list[str] = []
    for name, probe in (("database", lambda: session.execute(text("SELECT 1"))),
                        ("broker", lambda: check_broker(celery)),
                        ("store", store.check)):
        t0 = time.perf_counter()
        try:
            probe()
            checks[name] = f"ok ({(time.perf_counter() - t0) * 1000:.0f} ms)"
        except Exception as e:
            checks[name] = f"failed: {type(e).__name__}: {e}"
            failures.append(f"{name} ({type(e).__name__}: {e})")
    if failures:
        return problem_response(request, 503, "not ready: " + "; ".join(failures), type_="not-ready",
                                checks=checks)
    from fastapi.responses import JSONResponse

    return JSONResponse({"status": "ready", "checks": checks})


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}})
def metrics(session: SessionDep) -> Response:
    """Prometheus metrics; with the database down the job gauges keep their last values."""
    try:
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    except SQLAlchemyError:
        session.rollback()
    else:
        for status in JOB_STATUSES:
            JOBS_BY_STATUS.labels(status).set(counts.get(status, 0))
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
