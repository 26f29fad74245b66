"""Registry tables. The registry is the source of truth for job state (not Celery's backend)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_KINDS = ("init", "pretrain")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
FINAL_STATUSES = ("succeeded", "failed", "canceled")
FILE_FORMATS = ("dense", "factored", "config", "samples", "metrics", "diffusers", "curve", "losses")
# A checkpoint's evaluation (held-out loss, FD, sample grid) runs after it is registered and downloadable:
# pending (queued for an evaluator) -> running (an evaluator holds its lease) -> ready | failed | canceled.
METRICS_STATUSES = ("pending", "running", "ready", "failed", "canceled")
METRICS_UNFINISHED = ("pending", "running")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Learngene(Base):
    __tablename__ = "learngenes"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    bytes: Mapped[int] = mapped_column(Integer)
    hidden_size: Mapped[int] = mapped_column(Integer)
    head_dim: Mapped[int] = mapped_column(Integer)
    depth: Mapped[int] = mapped_column(Integer)
    rank: Mapped[int] = mapped_column(Integer)
    patch_size: Mapped[int] = mapped_column(Integer)
    image_size: Mapped[int] = mapped_column(Integer)
    in_channels: Mapped[int] = mapped_column(Integer)
    num_classes: Mapped[int] = mapped_column(Integer)
    source_dataset: Mapped[str] = mapped_column(String(256))
    steps: Mapped[int] = mapped_column(Integer)
    widths: Mapped[list[Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)  # the full config.json sidecar
    owner: Mapped[str] = mapped_column(String(128), default="anonymous")
    public: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")  # seen by every user
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")  # PUT /v1/learngenes/{id}/tags
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # builtin | upload
    name: Mapped[str] = mapped_column(String(256))
    sha256: Mapped[str | None] = mapped_column(String(64))
    bytes: Mapped[int | None] = mapped_column(Integer)
    num_images: Mapped[int] = mapped_column(Integer)
    image_size: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    num_classes: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str] = mapped_column(String(128), default="anonymous")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("owner", "idempotency_key", name="uq_jobs_owner_idempotency_key"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("job"))
    owner: Mapped[str] = mapped_column(String(128), default="anonymous")
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    request_hash: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    kind: Mapped[str] = mapped_column(String(16), default="init", server_default="init", index=True)
    learngene_id: Mapped[str | None] = mapped_column(ForeignKey("learngenes.id"), index=True)  # init jobs
    dataset: Mapped[str] = mapped_column(String(256), index=True)
    method: Mapped[str] = mapped_column(String(32), index=True)  # "pretrain" for pre-training jobs
    result_learngene_id: Mapped[str | None] = mapped_column(String(128))  # what a pretrain job registered
    resume_sha: Mapped[str | None] = mapped_column(String(64))  # blob of a pre-training run's latest state

    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    phase: Mapped[str | None] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer, default=0)
    total: Mapped[int] = mapped_column(Integer, default=0)
    loss: Mapped[float | None] = mapped_column(Float)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)

    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease: Mapped[str | None] = mapped_column(String(64))  # token of the attempt that owns the job
    worker_id: Mapped[str | None] = mapped_column(String(256))
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    progress_at: Mapped[datetime | None] = mapped_column()  # when `step` last moved (hung-job detection)

    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    # seconds per phase as the worker measured them: load_s, assemble_s, sigma_s, finetune_s, save_s, evaluate_s
    timings: Mapped[dict[str, Any] | None] = mapped_column()

    checkpoint: Mapped[Checkpoint | None] = relationship(back_populates="job", uselist=False)


class Checkpoint(Base):
    """One descendant; its files (dense, factored, samples, ...) are rows of CheckpointFile."""

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("ckpt"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    learngene_id: Mapped[str] = mapped_column(ForeignKey("learngenes.id"), index=True)
    method: Mapped[str] = mapped_column(String(32))
    dataset: Mapped[str] = mapped_column(String(256))
    depth: Mapped[int] = mapped_column(Integer)
    hidden_size: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(128), default="anonymous")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    # The evaluation that fills `metrics` after registration (learngene_store/evaluations.py), leased like a job.
    metrics_status: Mapped[str] = mapped_column(String(16), default="pending", server_default="ready", index=True)
    metrics_error: Mapped[str | None] = mapped_column(Text)  # why the evaluation failed or was canceled
    metrics_at: Mapped[datetime | None] = mapped_column()  # when the evaluation ended (ready, failed, canceled)
    eval_lease: Mapped[str | None] = mapped_column(String(64))  # token of the evaluator that owns it
    eval_worker_id: Mapped[str | None] = mapped_column(String(256))
    eval_heartbeat_at: Mapped[datetime | None] = mapped_column()  # also: when a pending evaluation was queued
    eval_dispatched_at: Mapped[datetime | None] = mapped_column()
    eval_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    eval_cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")

    job: Mapped[Job] = relationship(back_populates="checkpoint")
    files: Mapped[list[CheckpointFile]] = relationship(
        back_populates="checkpoint", cascade="all, delete-orphan", lazy="selectin"
    )

    def file(self, fmt: str) -> CheckpointFile | None:
        return next((f for f in self.files if f.format == fmt), None)


class CheckpointFile(Base):
    __tablename__ = "checkpoint_files"

    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.id"), primary_key=True)
    format: Mapped[str] = mapped_column(String(16), primary_key=True)
    filename: Mapped[str] = mapped_column(String(256))
    media_type: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    bytes: Mapped[int] = mapped_column(Integer)

    checkpoint: Mapped[Checkpoint] = relationship(back_populates="files")


class JobEvent(Base):
    """One progress or status event of a job, numbered 1, 2, ... per job (the SSE event id).

    Each is written in the transaction of the job-row UPDATE it reports, after that UPDATE has locked
    the row, so a job's events commit in the order of their numbers: a reader resuming after number n
    never misses an event that commits later with a smaller number.
    """

    __tablename__ = "job_events"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # status | progress
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LearngeneFile(Base):
    """A picture or log beside a learngene set: its training curve, sample grids per width."""

    __tablename__ = "learngene_files"

    learngene_id: Mapped[str] = mapped_column(ForeignKey("learngenes.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # curve.png, samples_w64.png, ...
    media_type: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    bytes: Mapped[int] = mapped_column(Integer)
class User(Base):
    """An account; only the sha256 of its API key is stored."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # the owner of what it creates
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column()


class Alias(Base):
    """A name pointing at a learngene (`default`: what a job without `learngene` is built from)."""

    __tablename__ = "aliases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    learngene_id: Mapped[str] = mapped_column(ForeignKey("learngenes.id"))
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookSecret(Base):
    """A user's webhook signing secret (Standard Webhooks: `whsec_` + base64 of the HMAC key)."""

    __tablename__ = "webhook_secrets"

    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One webhook message of a job's event (its id is the `webhook-id` header, the same on every retry);
    the body is frozen at the first attempt, so retries send the same bytes."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("msg"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    owner: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(16))  # start | completed
    job_status: Mapped[str] = mapped_column(String(16))  # the status change that made it
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str | None] = mapped_column(Text)  # the JSON body, set at the first attempt
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    claim: Mapped[str | None] = mapped_column(String(32))  # token of the sender working on it
    claimed_until: Mapped[datetime | None] = mapped_column()
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    tries: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery", cascade="all, delete-orphan", lazy="selectin", order_by="WebhookAttempt.attempt")


class WebhookAttempt(Base):
    """One try of a delivery: what the receiver answered (or the error) and when the next try is due."""

    __tablename__ = "webhook_attempts"

    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1, 2, ...
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column()  # None: delivered, or given up

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="tries")
