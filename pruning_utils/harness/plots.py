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
    """Validation metric of each pruning run at every epoch's end (markers) and at the checks inside the epochs
    where alpha moves (small dots, on a validation subset), the training metric where recorded (dashed); alpha
    below, as it moved step by step (report 8's figure 2 style)."""
    fig, (ax, ax_alpha) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for i, (label, history) in enumerate(runs.items()):
        rows = [h for h in history if h.get("phase") != "bn_recalibrated"]
        ax.plot([h["epoch"] for h in rows], [h[f"val_{metric}"] for h in rows], marker="o", ms=3, color=f"C{i}",
                label=label)
        checks = [c for h in rows for c in h.get("checks", [])]
        ax.plot([c["epoch"] for c in checks], [c[f"val_{metric}"] for c in checks], ".", ms=3, color=f"C{i}")
        if all(f"train_{metric}" in h for h in rows):
            ax.plot([h["epoch"] for h in rows], [h[f"train_{metric}"] for h in rows], ls="--", lw=1, color=f"C{i}",
                    label=f"{label} (train)")
        ax_alpha.plot(*zip(*alpha_path(rows)), color=f"C{i}")
        for stage in sorted({h["stage"] for h in rows}):
            first = next(h for h in rows if h["stage"] == stage)
            ax.axvline(first["epoch"] - 1, color="0.9", lw=0.8, zorder=0)
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label="baseline")
    ax.set(ylabel=f"validation {metric}", title=title)
    ax.legend(fontsize=8)
    ax_alpha.set(xlabel="epochs after the baseline", ylabel="alpha", ylim=(-0.05, 1.05))
    fig.tight_layout()
    save(fig, path)
    return fig


def alpha_path(history: list[dict]) -> list[tuple[float, float]]:
    """(epoch, alpha) points of a pruning history as alpha moved: the checks inside the epochs where it moved and
    every epoch's end; an epoch without checks held its alpha from start to end."""
    points = []
    for h in history:
        inner = [(c["epoch"], c["alpha"]) for c in h.get("checks", [])]
        points += inner or [(h["epoch"] - 1, h["alpha"])]
        points.append((h["epoch"], h["alpha"]))
    return points


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
    budget, labelled with its fraction of the parameters; rows as
    :func:`pruning_utils.studies.comparison.compare` or :func:`~pruning_utils.studies.comparison.seed_summary`
    return them)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for i, method in enumerate(methods):
        own = sorted((r for r in rows if r["method"] == method), key=lambda r: r["params"])
        for ax, key in zip(axes, ("params", "macs", "train_seconds")):
            ax.plot([r[key] for r in own], [r["val_acc"] for r in own], marker="os^vD<>"[i % 7], color=f"C{i}",
                    label=method)
            for r in own:  # which budget each point is
                ax.annotate(f"{r['fraction']:.0%}", (r[key], r["val_acc"]), xytext=(4, -9), textcoords="offset points",
                            fontsize=6, color=f"C{i}")
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


def plot_seeds(rows: list[dict], title: str = "", path=None):
    """Test accuracy of each method, one panel per budget: the seeds' values (dots) and their mean with one
    standard deviation (bar; rows as :func:`pruning_utils.studies.comparison.seed_summary` returns them)."""
    fractions = list(dict.fromkeys(r["fraction"] for r in rows))
    fig, axes = plt.subplots(1, len(fractions), figsize=(5.5 * len(fractions), 3.8), squeeze=False)
    for ax, fraction in zip(axes[0], fractions):
        own = [r for r in rows if r["fraction"] == fraction]
        for i, row in enumerate(own):
            ax.errorbar(i, row["test_acc"], yerr=row["test_std"] or 0, fmt="s", color=f"C{i}", capsize=4, ms=7)
            ax.plot([i] * len(row["test_values"]), row["test_values"], ".", color="k", alpha=0.6)
        ax.set_xticks(range(len(own)), [f"{r['method']}\nlr {r['lr']:g}, {r['seeds']} seeds" for r in own],
                      rotation=20, ha="right", fontsize=8)
        ax.set(ylabel="test accuracy (%)", title=f"{fraction:g} of the parameters")
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
                   path=None, curves=("reference", "seeds_recipe", "combined"), span: float = 12.0):
    """Left: validation accuracy of each arm (bar: mean over seeds; dots: the seeds; cross: with BatchNorm
    re-estimated), coloured by factor; the axis shows the ``span`` points under the best value (an arm below it is
    written at the bottom). Right: validation accuracy per epoch of the ``curves`` arms (first seed)."""
    factors = list(dict.fromkeys(s["factor"] for s in summary))
    colours = plt.get_cmap("tab20")
    fig, (ax, ax_curve) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [2, 1]})
    top = max([max(s["values"]) for s in summary] + [baseline or 0])
    floor = max(min(min(s["values"]) for s in summary), top - span) - 0.5  # far-off arms would hide small effects
    for i, entry in enumerate(summary):
        ax.bar(i, entry["mean"] - floor, bottom=floor, color=colours(factors.index(entry["factor"]) % 20), alpha=0.8,
               label=entry["factor"] if entry["factor"] not in [s["factor"] for s in summary[:i]] else None)
        ax.plot([i] * len(entry["values"]), entry["values"], "o", color="k", ms=3)
        if "bn_mean" in entry:
            ax.plot(i, entry["bn_mean"], "x", color="k", ms=6)
        if entry["mean"] < floor:  # off the axis: its value written at the bottom
            ax.annotate(f"{entry['mean']:.1f}", (i, floor), xytext=(0, 3), textcoords="offset points", ha="center",
                        fontsize=7, rotation=90)
    ax.set_ylim(floor, top + 0.05 * (top - floor))
    if baseline is not None:
        ax.axhline(baseline, color="k", ls="--", lw=1, label="baseline")
    ax.set_xticks(range(len(summary)), [s["arm"] for s in summary], rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="validation accuracy (%)", title="mean over seeds (dots: seeds, x: BatchNorm re-estimated)")
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    for i, arm in enumerate(a for a in curves if any(r["arm"] == a and "curve" in r for r in rows)):
        first = min((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
        ax_curve.plot([c["epoch"] for c in first["curve"]], [c["val_acc"] for c in first["curve"]], marker="o", ms=3,
                      color=f"C{i}", label=arm)
    if baseline is not None:
        ax_curve.axhline(baseline, color="k", ls="--", lw=1, label="baseline")
    ax_curve.set(xlabel="epoch after the baseline", ylabel="validation accuracy (%)", title="first seed")
    ax_curve.legend(fontsize=8)
    return finish(fig, title, path)


def plot_time_per_image(rows: list[dict], models, variants, devices, title: str = "", path=None):
    """Time per image against batch size, one panel per (device, model), a line per variant (median with the
    interquartile range as error bar; rows as :func:`pruning_utils.studies.bench.run` returns them)."""
    fig, axes = plt.subplots(len(devices), len(models), figsize=(5 * len(models), 3.6 * len(devices)), squeeze=False)
    for ax_row, device in zip(axes, devices):
        for ax, kind in zip(ax_row, models):
            for variant in variants:
                own = [r for r in rows if r["model"] == kind and r["variant"] == variant]
                ax.errorbar([r["batch_size"] for r in own], [1e3 * r[f"{device}_s_per_image"] for r in own],
                            yerr=[5e2 * r[f"{device}_iqr_s_per_image"] for r in own], marker="o", capsize=3,
                            label=variant)
            ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel=f"ms per image ({device}, median)",
                   title=f"{kind} on {device}")
            ax.legend(fontsize=8)
    return finish(fig, title, path)


def plot_speedup_vs_macs(gains: list[dict], title: str = "", path=None):
    """Measured speed-up against MAC reduction (rows as :func:`pruning_utils.studies.bench.all_speedups` returns
    them): colour the model, marker the variant, marker size the batch size; filled CPU, hollow CUDA (named in the
    legend only where CUDA points exist)."""
    models = list(dict.fromkeys(g["model"] for g in gains))
    markers = {v: "os^Dv"[i % 5] for i, v in enumerate(dict.fromkeys(g["variant"] for g in gains))}
    batches = sorted({g["batch_size"] for g in gains})
    size = {b: 25 + 60 * i / max(1, len(batches) - 1) for i, b in enumerate(batches)}
    fig, ax = plt.subplots(figsize=(6, 4.8))
    for g in gains:
        colour = f"C{models.index(g['model'])}"
        ax.scatter(g["mac_ratio"], g["speedup"], marker=markers[g["variant"]], s=size[g["batch_size"]],
                   edgecolors=colour, facecolors="none" if g["device"] == "cuda" else colour, alpha=0.8)
    top = 1.1 * max([g["mac_ratio"] for g in gains] + [g["speedup"] for g in gains])
    ax.plot([0, top], [0, top], "k--", lw=1, label="ideal: speed-up = MAC reduction")
    ax.plot([0, top], [0, 0.85 * top], "k:", lw=1, label="85% of ideal")
    for i, model in enumerate(models):
        ax.scatter([], [], color=f"C{i}", label=model)
    for variant, marker in markers.items():
        ax.scatter([], [], marker=marker, color="grey", label=variant)
    for batch in batches:
        ax.scatter([], [], marker="o", s=size[batch], color="lightgrey", edgecolors="grey", label=f"batch {batch}")
    if any(g["device"] == "cuda" for g in gains):
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="grey", label="hollow: CUDA")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="MAC reduction (original / variant)", ylabel="measured speed-up")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    return finish(fig, title, path)
