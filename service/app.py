"""The FastAPI application: `uvicorn service.app:app`."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dispatch.broker import make_celery
from dispatch.reaper import Reaper
from dispatch.webhooks import WebhookSender
from learngene_store.accounts import ensure_local_admin
from learngene_store.blobs import make_blob_store
from learngene_store.catalog import ensure_builtin_datasets, register_default_learngene
from learngene_store.db import migrate, session_factory
from service import errors, metrics
from service.api.main import api_router
from service.api.routes.web import static_files
from service.limits import JSON_LIMIT, MULTIPART_SLACK, BodyLimit
from service.quotas import WriteRate
from service.settings import ApiSettings, get_settings
from service.webhooks import render_job

log = logging.getLogger("service")
UPLOAD_PATHS = ("/v1/datasets", "/v1/learngenes")


def startup(settings: ApiSettings) -> None:
    """Migrations, built-in datasets and the default learngene: idempotent, safe to run concurrently."""
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate(settings)
    store = make_blob_store(settings)
    with session_factory(settings)() as session:
        ensure_builtin_datasets(session)
        if settings.writes_admin_key:
            ensure_local_admin(session, settings.admin_key_file)
        if settings.register_default_learngene:
            lg = register_default_learngene(session, store, settings.resolved_default_learngene,
                                            settings.shipped_versions)
            if lg is not None:
                log.info("default learngene: %s", lg.id)


def create_app(settings: ApiSettings | None = None, *, reaper: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        startup(settings)
        on_reap = lambda outcome, n: metrics.REAPED.labels(outcome).inc(n)  # noqa: E731
        threads = [Reaper(settings, app.state.celery, on_reap), WebhookSender(settings, render_job)] if reaper else []
        for thread in threads:
            thread.start()
        # What start-up built (modules, models, routes, schemas: ~150k objects) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it (one took ~160 ms, a p99 stall).
        gc.collect()
        gc.freeze()
        yield
        for thread in threads:
            thread.stop()

    app = FastAPI(
        title="fine-zoo",
        version="1.0.0",
        summary="Diffusion transformers of any size, initialised from learngenes (FINE, arXiv 2409.19289)",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sessions = None  # service.deps.get_session's sessionmaker, made at the first request
    app.state.store = make_blob_store(settings)
    app.state.celery = make_celery(settings)
    app.state.write_rate = WriteRate(settings.write_rate_per_minute)
    errors.install(app)
    app.include_router(api_router)
    app.mount("/web", static_files(), name="web")
    upload_limit = settings.max_upload_bytes + MULTIPART_SLACK
    app.add_middleware(BodyLimit, limit_for=lambda path: upload_limit if path in UPLOAD_PATHS else JSON_LIMIT)
    app.add_middleware(metrics.MetricsMiddleware)
    return app


app = create_app()
