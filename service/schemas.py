"""Response bodies (the request specs are fine/spec.py's JobSpec and PretrainSpec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Status = Literal["queued", "running", "succeeded", "failed", "canceled"]
MetricsStatus = Literal["pending", "running", "ready", "failed", "canceled"]


class Progress(BaseModel):
    phase: str | None
    step: int
    total: int
    loss: float | None


class JobOut(BaseModel):
    id: str
    kind: Literal["init", "pretrain"]
    status: Status
    spec: dict[str, Any]
    learngene: str | None
    result_learngene: str | None = None
    dataset: str
    method: str
    progress: Progress
    attempts: int
    cancel_requested: bool
    error: str | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    checkpoint_id: str | None
    metrics_status: MetricsStatus | None = Field(
        default=None, description="the checkpoint's evaluation (held-out loss, FD, sample grid), which runs after "
        "the job succeeded and the checkpoint is downloadable: pending | running -> ready | failed | canceled; "
        "null without a checkpoint")
    timings: dict[str, float] = Field(default_factory=dict, description=(
        "seconds: queued_s, running_s, total_s (to the final status); per phase as the worker measured them: "
        "load_s, assemble_s, sigma_s, finetune_s, save_s, evaluate_s; from POST: checkpoint_s (downloadable), "
        "metrics_s (evaluation ended)"))
    warnings: list[str] = []
    links: dict[str, str]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class FileOut(BaseModel):
    format: str
    filename: str
    media_type: str
    sha256: str
    bytes: int
    url: str


class CheckpointOut(BaseModel):
    id: str
    job_id: str
    learngene: str
    method: str
    dataset: str
    depth: int
    hidden_size: int
    config: dict[str, Any]
    metrics: dict[str, Any]
    metrics_status: MetricsStatus = Field(description="pending | running (evaluation under way: the model files are "
                                          "downloadable already) -> ready | failed | canceled")
    metrics_error: str | None = Field(default=None, description="why the evaluation failed or was canceled")
    metrics_at: datetime | None = Field(default=None, description="when the evaluation ended")
    files: list[FileOut]
    created_at: datetime


class DescendantOut(BaseModel):
    checkpoint_id: str
    job_id: str
    depth: int
    hidden_size: int
    dataset: str
    method: str
    created_at: datetime


class LearngeneOut(BaseModel):
    id: str
    sha256: str
    bytes: int
    hidden_size: int
    head_dim: int
    depth: int
    rank: int
    patch_size: int
    image_size: int
    in_channels: int
    num_classes: int
    source_dataset: str
    steps: int
    widths: list[int]
    created_at: datetime
    descendants_count: int
    owner: str
    public: bool
    aliases: list[str] = Field(default_factory=list, description="alias names pointing here, e.g. default")
    tags: list[str] = Field(default_factory=list, description="labels its owner put on it (PUT .../tags)")
    links: dict[str, str]


class PictureOut(BaseModel):
    name: str  # curve.png, samples_w64.png, ...
    media_type: str
    sha256: str
    bytes: int
    url: str


class LearngeneDetail(LearngeneOut):
    meta: dict[str, Any]
    descendants: list[DescendantOut]
    pictures: list[PictureOut] = Field(default_factory=list, description="training curve, sample grid per width")


class DatasetOut(BaseModel):
    id: str
    kind: Literal["builtin", "upload"]
    name: str
    num_images: int
    image_size: int
    channels: int
    num_classes: int
    description: str
    sha256: str | None
    bytes: int | None
    created_at: datetime


TAG_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,31}$"
MAX_TAGS = 16


class TagsIn(BaseModel):
    """The whole tag list of a learngene set (it replaces the old one)."""

    model_config = ConfigDict(extra="forbid")

    tags: list[Annotated[str, StringConstraints(pattern=TAG_PATTERN)]] = Field(
        max_length=MAX_TAGS, description=f"at most {MAX_TAGS} tags: 1-32 lowercase letters, digits, '.', '_' or '-'")


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learngene: str = Field(min_length=1, max_length=128, description="id of a public learngene set")


class AliasOut(BaseModel):
    name: str
    learngene: str
    updated_by: str
    updated_at: datetime


class WebhookAttemptOut(BaseModel):
    attempt: int = Field(description="1, 2, ...")
    started_at: datetime
    duration_ms: float | None
    status_code: int | None = Field(description="the receiver's HTTP status (2xx: delivered)")
    error: str | None = Field(description="why there is no status: timeout, connection error, refused URL, ...")
    next_attempt_at: datetime | None = Field(description="when the next try is due (null: delivered or given up)")


class WebhookDeliveryOut(BaseModel):
    id: str = Field(description="the `webhook-id` header: the same on every retry of this delivery")
    job_id: str
    event: Literal["start", "completed"]
    job_status: Status = Field(description="the status change that made this delivery")
    url: str
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    history: list[WebhookAttemptOut] = Field(description="every attempt, oldest first")


class WebhookDeliveries(BaseModel):
    items: list[WebhookDeliveryOut]


class WebhookSecretOut(BaseModel):
    key: str = Field(description="`whsec_` + base64 of the HMAC-SHA256 key that signs your webhooks (Standard Webhooks)")
