"""The label-distribution plot of a partition, drawn as Flower Datasets draws them.

Top: one stacked bar per client, its height the client's size and its segments the classes (Flower's
``plot_label_distributions(plot_type="bar", size_unit="absolute")``, colour map RdYlGn); with more than
``STACK_CLASSES`` classes the bars are plain sizes (hundreds of thin segments read as noise). Bottom:
clients x classes heat map of each client's label shares (Flower's ``plot_type="heatmap",
size_unit="percent"``). At most ``MAX_CLIENTS`` clients are drawn (the first ones; the title says so).
Rendered with matplotlib's object API on the Agg canvas: no display, no global pyplot state.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

MAX_CLIENTS = 100
STACK_CLASSES = 30


def label_distribution_png(counts: np.ndarray, title: str, class_names: tuple[str, ...] | None = None) -> bytes:
    """PNG bytes of the plot of [K, C] class counts."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    counts = np.asarray(counts)
    total_clients, num_classes = counts.shape
    shown = counts[:MAX_CLIENTS]
    k = len(shown)
    sizes = shown.sum(1)
    width = 12.0  # fixed: the figure (and its memory) must not grow with the number of clients
    fig = Figure(figsize=(width, 7.0))  # fixed margins: constrained layout would double the drawing time
    top, bottom = fig.subplots(2, 1, height_ratios=(1, 1.2))
    right = 1.0 - 1.3 / width
    fig.subplots_adjust(left=0.7 / width, right=right, top=0.94, bottom=0.08, hspace=0.22)
    x = np.arange(k)
    if num_classes <= STACK_CLASSES:
        colours = colormaps["RdYlGn"](np.linspace(0, 1, num_classes))
        base = np.zeros(k)
        for c in range(num_classes):
            label = class_names[c] if class_names else str(c)
            top.bar(x, shown[:, c], bottom=base, color=colours[c], width=0.85, label=label)
            base += shown[:, c]
        if num_classes <= 12:
            top.legend(title="Labels", fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        top.bar(x, sizes, color="#4c72b0", width=0.85)
    top.set_ylabel("Count")
    top.set_xlim(-0.5, k - 0.5)
    top.set_xticks(x if k <= 40 else x[:: max(1, k // 20)])
    more = f" (first {k} of {total_clients} clients)" if total_clients > k else ""
    top.set_title(f"{title}{more}", fontsize=10)
    share = shown / np.maximum(sizes[:, None], 1)
    top_share = float(share.max()) * 100 if share.size else 100.0  # many classes: scale to what is there
    image = bottom.imshow(share.T * 100, aspect="auto", cmap="Greens", vmin=0, vmax=max(top_share, 1e-9),
                          interpolation="nearest")
    bottom.set_xlabel("Client ID")
    bottom.set_ylabel("Class")
    bottom.set_xticks(top.get_xticks())
    if num_classes <= 20:
        bottom.set_yticks(np.arange(num_classes), class_names[:num_classes] if class_names else None)
    box = bottom.get_position()
    fig.colorbar(image, cax=fig.add_axes((right + 0.15 / width, box.y0, 0.2 / width, box.height)),
                 label="% of client's samples")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_label_distribution(path: Path, counts: np.ndarray, title: str,
                             class_names: tuple[str, ...] | None = None) -> Path:
    """Write the plot to ``path`` atomically; returns ``path``."""
    from livar_bench.store import write_bytes

    write_bytes(Path(path), label_distribution_png(counts, title, class_names))
    return Path(path)
