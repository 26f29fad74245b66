"""Request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["fine", "scratch", "weight-selection", "tleg"]
METHODS: tuple[str, ...] = ("fine", "scratch", "weight-selection", "tleg")
Status = Literal["queued", "running", "succeeded", "failed", "canceled"]


class JobSpec(BaseModel):
    """What to build. Ranges are checked against the chosen learngene (see POST /v1/jobs)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    depth: int = Field(description="number of transformer blocks, 1..64")
    hidden_size: int = Field(description="width; a multiple of the learngene's head size, at most its width")
    num_heads: int | None = Field(default=None, description="optional; must equal hidden_size / head size")
    dataset: str = Field(description="fashion-mnist, mnist-5k, digits or an uploaded dataset id; "
                                     "optional class filter e.g. fashion-mnist:5-9")
    learngene: str | None = Field(default=None, description="learngene id; default: the newest")
    method: str = Field(default="fine", description="fine | scratch | weight-selection | tleg")
    sigma_steps: int = Field(default=300, description="sigma-stage steps, 0..20000")
    subset_size: int = Field(default=5000, description="training images drawn from the dataset, 8..100000")
    finetune_steps: int = Field(default=0, description="dense fine-tuning steps after the sigma stage, 0..50000")
    seed: int = 0
    train_bias: bool = True
    batch_size: int = Field(default=64, description="1..1024")
    eval_images: int = Field(default=500, description="images for held-out loss and FD, 0..10000 (0: skip)")
    sample_steps: int = Field(default=50, description="sampler steps for evaluation and the sample grid, 1..1000")


class PretrainSpec(BaseModel):
    """A pre-training job: trains an ancestry and registers its learngene set (POST /v1/learngenes)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    dataset: str = Field(description="source dataset (built-in or uploaded id, optional class filter)")
    depth: int = Field(default=8, description="ancestry blocks, 1..64")
    hidden_size: int = Field(default=128, description="ancestry width, a multiple of head_dim, at most 1024")
    head_dim: int = Field(default=32, description="attention head size, 8..256")
    rank: int = Field(default=32, description="learngene rank r, 1..hidden_size")
    patch_size: int = Field(default=4, description="must divide the dataset's image side")
    steps: int = Field(default=4000, description="training steps, 1..200000")
    widths: list[int] = Field(default_factory=list, description="extra trained prefix widths (width-aware)")
    batch_size: int = Field(default=64, description="1..1024")
    lr: float = Field(default=5e-4, description="learning rate, (0, 1]")
    warmup: int = Field(default=200, description="linear warm-up steps, 0..steps")
    ema_decay: float = Field(default=0.999, description="0 <= ema_decay < 1")
    seed: int = 0
    eval_images: int = Field(default=500, description="held-out images per evaluation, 8..10000")
    name: str = Field(default="learngene", description="id prefix: lowercase letters, digits, dashes")


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
    timings: dict[str, float] = Field(default_factory=dict, description="queued_s, running_s, total_s")
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
    links: dict[str, str]


class LearngeneDetail(LearngeneOut):
    meta: dict[str, Any]
    descendants: list[DescendantOut]


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
