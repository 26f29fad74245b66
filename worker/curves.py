"""A job's training loss per step (sigma stage, fine-tuning): kept while it trains, then written as
curve.json (the numbers) and curve.png (the picture), two more files of its checkpoint. A pre-training
job's curve is drawn the same way from its train_log.jsonl, as a picture of the learngene set."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

TRAINING_PHASES = ("sigma", "finetune")  # phases whose progress carries a training loss
ProgressFn = Callable[[str, int, int, float | None], None]


class LossLog:
    """Collects (step, loss) per training phase from the progress callback it wraps."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, list]] = {}

    def wrap(self, progress: ProgressFn) -> ProgressFn:
        """A progress callback that records the loss, then calls `progress`."""

        def step(phase: str, step: int, total: int, loss: float | None) -> None:
            if phase in TRAINING_PHASES and loss is not None:
                self.add(phase, step, total, loss)
            progress(phase, step, total, loss)

        return step

    def add(self, phase: str, step: int, total: int, loss: float) -> None:
        """Record one step's loss."""
        log = self.phases.setdefault(phase, {"step": [], "loss": [], "total": total})
        log["step"].append(int(step))
        log["loss"].append(round(float(loss), 6))

    @classmethod
    def from_train_log(cls, path: Path, phase: str = "pretrain") -> LossLog:
        """The losses of a pre-training run's train_log.jsonl (one JSON record per step, resumed runs included)."""
        out = cls()
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        total = max((r["step"] for r in records), default=0)
        for r in records:
            if r.get("loss") is not None:
                out.add(phase, r["step"], total, r["loss"])
        return out

    def write(self, out_dir: Path) -> dict[str, Path]:
        """curve.json and curve.png in `out_dir` ({} when nothing trained)."""
        if not self.phases:
            return {}
        out_dir.mkdir(parents=True, exist_ok=True)
        data = out_dir / "curve.json"
        data.write_text(json.dumps({"phases": self.phases}, separators=(",", ":")) + "\n")
        return {"losses": data, "curve": self._plot(out_dir / "curve.png")}

    def _plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
        offset = 0
        for phase, log in self.phases.items():
            steps = [offset + s for s in log["step"]]
            ax.plot(steps, log["loss"], lw=0.8, alpha=0.35)
            ax.plot(steps, _smooth(log["loss"]), lw=1.6, label=f"{phase} ({len(steps)} steps)",
                    color=ax.lines[-1].get_color())
            offset = steps[-1] if steps else offset
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        losses = [v for log in self.phases.values() for v in log["loss"] if v > 0]
        if losses and max(losses) > 10 * min(losses):  # log scale only where the loss spans a decade
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path


def _smooth(values: list[float], window: int | None = None) -> list[float]:
    """A trailing mean over about a twentieth of the run (at least one step)."""
    window = window or max(1, len(values) // 20)
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out
