"""The soup run's plots, drawn on bare matplotlib Figures (no pyplot: no global state, no display).

- In-distribution vs. shift accuracy of every ingredient, with the soups, ensembles and the
  zero-shot model marked, and the WiSE-FT curves drawn through (Figure 1 of the model-soups paper).
- The WiSE-FT α curve: accuracy on every set against α, per target.
"""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy

from soup.outputs.comparison import SHIFT_AVG, TEST, TRIAL

MARKERS = {"zeroshot": ("*", "black"), "best": ("D", "tab:gray"), "uniform": ("s", "tab:blue"),
           "greedy": ("P", "tab:red"), "model_stock": ("X", "tab:green"), "learned": ("p", "tab:purple"),
           "learned_layerwise": ("h", "tab:pink"), "ensemble": ("^", "tab:orange"),
           "greedy_ensemble": ("v", "tab:brown"), "baseline:zeroshot": ("*", "tab:olive"),
           "baseline:tip_adapter": ("d", "tab:cyan")}

MARKER_GAP = 10  # points between markers that coincide


def id_vs_shift(table: list[dict], curves: list[dict]) -> Figure | None:
    """Test top-1 (x) against the mean shift top-1 (y); None without a shift set."""
    cell = {(r["method"], r["set"]): r["top1"] for r in table}
    if not any(s == SHIFT_AVG for _, s in cell):
        return None
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    trials = [m for m, s in cell if s == TEST and m.startswith(TRIAL)]
    ax.scatter([100 * cell[(m, TEST)] for m in trials], [100 * cell[(m, SHIFT_AVG)] for m in trials],
               c="lightgray", edgecolors="gray", label="ingredients", zorder=2)
    for target in sorted({c["target"] for c in curves}):
        points = _curve_points(curves, target)
        ax.plot([p[0] for p in points], [p[1] for p in points], "--", lw=1, label=f"WiSE-FT → {target}", zorder=1)
    shown = [m for m in MARKERS if (m, TEST) in cell]
    points = {m: (100 * cell[(m, TEST)], 100 * cell[(m, SHIFT_AVG)]) for m in shown}
    for method in shown:
        marker, color = MARKERS[method]
        ax.scatter(*points[method], marker=marker, c=color, s=90, label=method, zorder=3,
                   transform=offset_copy(ax.transData, fig=fig, x=_spread(method, points), units="points"))
    if points:  # offset markers do not count for autoscaling: their data points do
        ax.update_datalim(list(points.values()))
        ax.autoscale_view()
    ax.set_xlabel("in-distribution (test) top-1, %  (markers at the same place are set side by side)")
    ax.set_ylabel("distribution shift (mean over shift sets) top-1, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _spread(method: str, points: dict[str, tuple[float, float]]) -> float:
    """Horizontal offset (points) of a marker among those at the same place (e.g. greedy = best when
    the greedy soup kept one model), so that none hides another; 0 for a marker alone."""
    same = [m for m, p in points.items() if p == points[method]]
    return MARKER_GAP * (same.index(method) - (len(same) - 1) / 2)


def wiseft_curve(curves: list[dict]) -> Figure:
    """Top-1 on every evaluation set against α, one panel per WiSE-FT target."""
    targets = sorted({c["target"] for c in curves})
    fig = Figure(figsize=(5 * len(targets), 4), layout="constrained")
    for i, target in enumerate(targets, start=1):
        ax = fig.add_subplot(1, len(targets), i)
        rows = [c for c in curves if c["target"] == target]
        for set_name in dict.fromkeys(r["set"] for r in rows):
            points = sorted((r["alpha"], 100 * r["top1"]) for r in rows if r["set"] == set_name)
            selection = set_name == "heldout"  # α is chosen on it: a selection score, drawn dashed
            ax.plot([p[0] for p in points], [p[1] for p in points], "o--" if selection else "o-", ms=3,
                    label=f"{set_name} (selection)" if selection else set_name)
        ax.set_title(f"WiSE-FT: zero-shot → {target}")
        ax.set_xlabel("α (0: zero-shot, 1: fine-tuned)")
        ax.set_ylabel("top-1, %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def _curve_points(curves: list[dict], target: str) -> list[tuple[float, float]]:
    """(test, mean shift) top-1 per α for one target."""
    rows = [c for c in curves if c["target"] == target]
    points = []
    for alpha in sorted({r["alpha"] for r in rows}):
        at = [r for r in rows if r["alpha"] == alpha]
        test = [100 * r["top1"] for r in at if r["set"] == TEST]
        shift = [100 * r["top1"] for r in at if r["set"].startswith("shift/")]
        if test and shift:
            points.append((test[0], sum(shift) / len(shift)))
    return points
