"""GET /v1/jobs/{id}/events: the job's progress as Server-Sent Events, resumable with Last-Event-ID.

Events come from the registry's job_events log (numbered per job, written with each job-row change),
so any API process can serve any job's stream and a reconnect resumes exactly after the last number
it saw. Event types: `status` (queued, running, succeeded, failed, canceled: data has the status and
what explains it), `progress` (phase, step, total, loss), `cancel` (a cancel was requested),
`evaluation` (after `succeeded`, the checkpoint's metrics_status: running, then ready, failed or
canceled, or pending again when its evaluator was lost), and a last `end` (the final job body) once
the job is finished, its evaluation too, and every event was sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from learngene_store import events as job_events
from learngene_store.db import session_factory
from learngene_store.models import FINAL_STATUSES, METRICS_UNFINISHED, Job
from service.access import owns
from service.deps import CurrentUser, JobId, SessionDep, SettingsDep
from service.errors import Problem
from service.jobs_view import job_out
from service.settings import ApiSettings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
POLL_S = 0.25  # how often an open stream reads the registry
KEEPALIVE_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
RETRY_MS = 1000  # what EventSource waits before it reconnects


def sse(event: str, data: dict[str, Any], id_: int | None = None) -> str:
    """One Server-Sent Event, serialised."""
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    if after is not None:
        return after
    if not last_event_id:
        return 0
    try:
        return max(0, int(last_event_id.strip()))
    except ValueError:
        raise Problem(400, f"Last-Event-ID must be an event number from this stream, got {last_event_id!r}",
                      type_="invalid-event-id") from None


def _read(settings: ApiSettings, job_id: str, seen: int) -> tuple[list[str], int, str | None]:
    """New events after `seen` (serialised), the last number, and the end event when the job is done."""
    with session_factory(settings)() as session:
        job = session.get(Job, job_id)
        # read before the events: those commit with it (an evaluation's with the job row's update too)
        final = job is not None and job.status in FINAL_STATUSES and not (
            job.checkpoint is not None and job.checkpoint.metrics_status in METRICS_UNFINISHED)
        rows = job_events.after(session, job_id, seen)
        out = [sse(r.kind, {**r.data, "at": r.created_at.isoformat()}, r.seq) for r in rows]
        last = rows[-1].seq if rows else seen
        more = len(rows) == 500
        end = sse("end", job_out(job).model_dump(mode="json")) if final and not more and job else None
    return out, last, end


async def _stream(request: Request, settings: ApiSettings, job_id: str, seen: int) -> AsyncIterator[str]:
    yield f"retry: {RETRY_MS}\n\n"
    quiet_since = time.monotonic()
    while True:
        chunks, seen, end = await run_in_threadpool(_read, settings, job_id, seen)
        for chunk in chunks:
            yield chunk
        if end is not None:
            yield end
            return
        if chunks:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 404: {}})
def job_events_stream(job_id: JobId, request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUser,
                      last_event_id: Annotated[str | None, Header(max_length=32)] = None,
                      after: Annotated[int | None, Query(ge=0, description="resume after this event number "
                                                         "(what Last-Event-ID does, for clients that cannot set it)")] = None,
                      ) -> StreamingResponse:
    """Server-Sent Events of one job: `status`, `progress`, `cancel`, `evaluation`, then `end` with the final
    job, once its checkpoint's evaluation has ended too.

    Every event but `end` carries an `id` (its number in the job's log); reconnect with `Last-Event-ID`
    (or `?after=`) to resume without missing any."""
    job = session.get(Job, job_id)
    if job is None or not owns(user, job.owner):
        raise Problem(404, f"no job {job_id!r}; list jobs with GET /v1/jobs", type_="job-not-found")
    seen = _resume_point(last_event_id, after)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_stream(request, settings, job_id, seen), media_type="text/event-stream",
                             headers=headers)
