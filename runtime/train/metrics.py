"""Run metrics: RUN/metrics.jsonl (one JSON object per line), optional TensorBoard, PNG plots."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsLog:
    def __init__(self, run: Path, resume_step: int | None = None):
        self.path = run / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # drop what was logged after the checkpoint we resume from: it will be recomputed
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        elif resume_step is None and self.path.exists():
            self.path.unlink()  # a fresh run in a used directory starts a fresh log
        self.tb = None
        try:  # TensorBoard when it is installed; nothing otherwise
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tensorboard"))
        except Exception:  # noqa: BLE001 - optional dependency
            self.tb = None

    def write(self, record: dict) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for key in ("loss", "val_loss", "bits_per_byte", "val_bits_per_byte", "lr", "tokens_per_s", "peak_memory_mb"):
                if key in record:
                    self.tb.add_scalar(key, record[key], step)
            for level, st in record.get("levels", {}).items():
                self.tb.add_scalar(f"update_norm/{level}", st["norm"], step)

    def close(self):
        if self.tb is not None:
            self.tb.close()


def read(run: Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot(run: Path) -> list[Path]:
    """Write RUN/loss.png (training and validation loss) and RUN/update_norms.png (per level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read(run)
    if not records:
        raise FileNotFoundError(f"{run} has no metrics.jsonl (or it is empty)")
    out = []
    fig, ax = plt.subplots(figsize=(7, 4))
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
        ax.plot(*zip(*train), label="training", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", lw=1.5)
    ax.set_xlabel("outer step")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title(f"{Path(run).name}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.append(Path(run) / "loss.png")
    fig.savefig(out[-1], dpi=120)
    plt.close(fig)
    levels = sorted({name for r in records for name in r.get("levels", {})})
    if levels:
        fig, ax = plt.subplots(figsize=(7, 4))
        plotted = False
        for name in levels:
            pts = [(r["step"], r["levels"][name]["norm"]) for r in records
                   if name in r.get("levels", {}) and r["levels"][name]["norm"] > 0]
            if pts:
                ax.plot(*zip(*pts), label=name, lw=1)
                plotted = True
        ax.set_xlabel("outer step")
        # what each level records as its norm: CMS and outer levels their last update's, in-context
        # memories the RMS of their state (they update every token)
        ax.set_ylabel("last update's norm; a memory's state RMS")
        ax.set_title(f"{Path(run).name}: per-level update norms and memory states")
        ax.grid(alpha=0.3)
        if plotted:
            ax.set_yscale("log")
            ax.legend(fontsize=6, ncol=2)
        else:   # a run too short for any level to have stepped
            ax.text(0.5, 0.5, "no level has updated yet", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        out.append(Path(run) / "update_norms.png")
        fig.savefig(out[-1], dpi=120)
        plt.close(fig)
    return out
