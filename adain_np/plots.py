"""Pictures of a training run, drawn with matplotlib's Agg backend (no display needed).

    plot_loss_curve   the logged losses against the iteration
    save_sample_grid  a grid of stylizations: one row per content, one column per style
Both write atomically (cli.atomic_path): a failed save leaves the previous PNG intact.
"""
import os

import matplotlib

matplotlib.use("Agg")  # before pyplot: training runs headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from adain_np.cli import atomic_path  # noqa: E402
from adain_np.images import to_uint8  # noqa: E402


def moving_average(values, window):
    """Mean of the last `window` values at each point (fewer at the start). (n,) -> (n,)"""
    values = np.asarray(values, dtype=np.float64)  # (n,)
    if len(values) == 0:
        return values
    sums = np.cumsum(np.concatenate([[0.0], values]))  # (n + 1,)
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def _save_figure(figure, path):
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(figure)


def plot_loss_curve(iterations, losses, path, title="training losses"):
    """Draw each {name: (n,) values} against iterations (n,) on a log scale, raw and smoothed."""
    iterations = np.asarray(iterations)
    figure, axes = plt.subplots(figsize=(8, 4.5))
    window = max(1, len(iterations) // 50)
    for index, (name, values) in enumerate(losses.items()):
        colour = f"C{index}"
        values = np.asarray(values, dtype=np.float64)
        axes.plot(iterations, values, color=colour, alpha=0.25 if window > 1 else 1.0,
                  linewidth=0.8, label=None if window > 1 else name)
        if window > 1:
            axes.plot(iterations, moving_average(values, window), color=colour,
                      linewidth=1.6, label=f"{name} (mean of {window})")
    if len(iterations) and np.all(np.concatenate([np.asarray(v) for v in losses.values()]) > 0):
        axes.set_yscale("log")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save_figure(figure, path)


def save_sample_grid(contents, styles, stylized, path, title=None):
    """contents (R, 3, H, W), styles (C, 3, H, W), stylized (R, C, 3, H, W), floats in [0, 1].

    The top row shows the styles, the left column the contents, and cell (r, c) the
    content r in style c.
    """
    rows, cols = len(contents), len(styles)
    figure, axes = plt.subplots(rows + 1, cols + 1, figsize=(1.8 * (cols + 1), 1.8 * (rows + 1)),
                                squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for c in range(cols):
        axes[0, c + 1].imshow(to_uint8(styles[c]))
        axes[0, c + 1].set_title(f"style {c + 1}", fontsize=8)
    for r in range(rows):
        axes[r + 1, 0].imshow(to_uint8(contents[r]))
        axes[r + 1, 0].set_title(f"content {r + 1}", fontsize=8)
        for c in range(cols):
            axes[r + 1, c + 1].imshow(to_uint8(stylized[r][c]))
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    _save_figure(figure, os.fspath(path))
