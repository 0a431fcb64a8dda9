"""Figures for the notebooks: training curves, validation per alpha stage, reconstructions, method comparisons."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from ..engine.distributed import is_main
from ..engine.tasks import psnr


def save(fig, path: str | Path | None) -> Path | None:
    """Save ``fig`` as PNG (creating the folder) and return the path; ``None`` saves nothing, nor does any rank
    but 0 when several processes run."""
    if path is None or not is_main():
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def finish(fig, title: str, path):
    """Title, tight layout and save (see :func:`save`); return the figure."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save(fig, path)
    return fig


def plot_training_curves(history: list[dict], metric: str, title: str = "", path=None):
    """Train and validation loss, and the validation metric, per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title=f"{title} loss".strip())
    ax_loss.legend()
    ax_metric.plot(epochs, [h[f"val_{metric}"] for h in history], color="C1")
    ax_metric.set(xlabel="epoch", ylabel=f"validation {metric}", title=f"{title} validation {metric}".strip())
    fig.tight_layout()
    save(fig, path)
    return fig


def plot_pruning_curves(runs: dict[str, list[dict]], metric: str, baseline: float | None = None,
                        title: str = "", path=None):
    """Validation metric per epoch of each pruning run, with alpha below (report 8's figure 2 style)."""
    fig, (ax, ax_alpha) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, (label, history) in enumerate(runs.items()):
        rows = [h for h in history if h.get("phase") != "bn_recalibrated"]
        epochs = [h["epoch"] for h in rows]
        ax.plot(epochs, [h[f"val_{metric}"] for h in rows], marker="o", ms=3, color=f"C{i}", label=label)
        ax_alpha.plot(epochs, [h["alpha"] for h in rows], color=f"C{i}", drawstyle="steps-post")
        for stage in sorted({h["stage"] for h in rows}):
            first = next(h for h in rows if h["stage"] == stage)
            ax.axvline(first["epoch"] - 0.5, color="0.9", lw=0.8, zorder=0)
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label="baseline")
    ax.set(ylabel=f"validation {metric}", title=title)
    ax.legend(fontsize=8)
    ax_alpha.set(xlabel="epoch after the baseline", ylabel="alpha", ylim=(-0.05, 1.05))
    fig.tight_layout()
    save(fig, path)
    return fig


def plot_reconstructions(rows: dict[str, torch.Tensor], path=None, title: str = "", reference: str = "original"):
    """A grid: one row per label, one column per image (tensors N x 3 x H x W in [0, 1]); each row but the
    ``reference`` one is labelled with its PSNR against it over the row's images."""
    labels = list(rows)

    def label_of(name: str) -> str:
        if name == reference or reference not in rows:
            return name
        mse = F.mse_loss(rows[name].float().clamp(0, 1), rows[reference].float().clamp(0, 1)).item()
        return f"{name}\n{psnr(mse):.1f} dB"

    count = len(next(iter(rows.values())))
    fig, axes = plt.subplots(len(labels), count, figsize=(2.2 * count, 2.3 * len(labels)), squeeze=False)
    for r, label in enumerate(labels):
        for c in range(count):
            ax = axes[r][c]
            ax.imshow(rows[label][c].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label_of(label), fontsize=9)
    return finish(fig, title, path)


def plot_comparison(rows: list[dict], baseline: float | None = None, title: str = "", path=None):
    """Validation accuracy of each method against parameters left, MACs and training wall time (one point a
    budget; rows as :func:`pruning_utils.studies.comparison.compare` returns them)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for i, method in enumerate(methods):
        own = sorted((r for r in rows if r["method"] == method), key=lambda r: r["params"])
        for ax, key in zip(axes, ("params", "macs", "train_seconds")):
            ax.plot([r[key] for r in own], [r["val_acc"] for r in own], marker="os^vD<>"[i % 7], color=f"C{i}",
                    label=method)
    for ax, key, label in zip(axes, ("params", "macs", "train_seconds"), ("parameters left (non-zero)",
                              "MACs per image (dense kernels)", "training wall time after the baseline (s)")):
        values = [r[key] for r in rows]
        if max(values) > 10 * min(values):  # a log axis over a narrower range labels its minor ticks on top of each other
            ax.set_xscale("log")
        ax.set_xlabel(label)
        if baseline is not None:
            ax.axhline(baseline, color="k", ls="--", lw=1, label="baseline" if ax is axes[0] else None)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[0].legend(fontsize=8)
    return finish(fig, title, path)


def plot_unit_widths(rows: list[dict], title: str = "", path=None):
    """The share of channels each unit keeps, per method, one panel per budget (rows as
    :func:`pruning_utils.studies.comparison.unit_widths` returns them)."""
    fractions = list(dict.fromkeys(r["fraction"] for r in rows))
    fig, axes = plt.subplots(len(fractions), 1, figsize=(12, 3.2 * len(fractions)), squeeze=False)
    for ax, fraction in zip(axes[:, 0], fractions):
        own = [r for r in rows if r["fraction"] == fraction]
        units, methods = list(dict.fromkeys(r["unit"] for r in own)), list(dict.fromkeys(r["method"] for r in own))
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            kept = {r["unit"]: r["kept"] / r["channels"] for r in own if r["method"] == method}
            ax.bar([u + (i - (len(methods) - 1) / 2) * width for u in range(len(units))],
                   [kept[unit] for unit in units], width, color=f"C{i}", label=method)
        ax.set_xticks(range(len(units)), units, rotation=45, ha="right", fontsize=7)
        ax.set(ylabel="channels kept (share)", ylim=(0, 1.05), title=f"{fraction:g} of the parameters")
        ax.legend(fontsize=8)
    return finish(fig, title, path)


def plot_ablations(summary: list[dict], rows: list[dict], baseline: float | None = None, title: str = "",
                   path=None, curves=("reference", "seeds_recipe", "combined")):
    """Left: validation accuracy of each arm (bar: mean over seeds; dots: the seeds; cross: with BatchNorm
    re-estimated), coloured by factor. Right: validation accuracy per epoch of the ``curves`` arms (first seed)."""
    factors = list(dict.fromkeys(s["factor"] for s in summary))
    fig, (ax, ax_curve) = plt.subplots(1, 2, figsize=(15, 5), gridspec_kw={"width_ratios": [2, 1]})
    for i, entry in enumerate(summary):
        color = f"C{factors.index(entry['factor']) % 10}"
        ax.bar(i, entry["mean"], color=color, alpha=0.6,
               label=entry["factor"] if entry["factor"] not in [s["factor"] for s in summary[:i]] else None)
        ax.plot([i] * len(entry["values"]), entry["values"], "o", color="k", ms=3)
        if "bn_mean" in entry:
            ax.plot(i, entry["bn_mean"], "x", color="k", ms=6)
    low = min(min(s["values"]) for s in summary)
    top = max([max(s["values"]) for s in summary] + [baseline or 0])
    ax.set_ylim(low - 0.2 * (top - low + 1), top + 0.1 * (top - low + 1))
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label="baseline")
    ax.set_xticks(range(len(summary)), [s["arm"] for s in summary], rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="validation accuracy (%)", title="mean over seeds (dots: seeds, x: BatchNorm re-estimated)")
    ax.legend(fontsize=7, ncol=2)
    for i, arm in enumerate(a for a in curves if any(r["arm"] == a and "curve" in r for r in rows)):
        first = min((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
        ax_curve.plot([c["epoch"] for c in first["curve"]], [c["val_acc"] for c in first["curve"]], marker="o", ms=3,
                      color=f"C{i}", label=arm)
    if baseline is not None:
        ax_curve.axhline(baseline, color="k", ls="--", lw=1, label="baseline")
    ax_curve.set(xlabel="epoch after the baseline", ylabel="validation accuracy (%)", title="first seed")
    ax_curve.legend(fontsize=8)
    return finish(fig, title, path)
