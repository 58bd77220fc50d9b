"""``effreason eval compare``: a table of runs and an accuracy-vs-tokens plot with the Pareto frontier."""

from __future__ import annotations

import json
from pathlib import Path

from effreason.evaluation import metrics, report, store

#: Written into every plot's metadata (``Creator``); tables end with ``_TABLE_NOTE``: a later run knows its own files.
MARK = "effreason eval compare"
_TABLE_NOTE = "`*` = on the Pareto frontier"
_METADATA_FORMATS = (".png", ".pdf", ".svg")


def refuse_foreign_output(path: str | Path | None) -> None:
    """Raise ``OutputExistsError`` if ``path`` exists and is not a table or plot this command wrote."""
    from effreason.outputs import OutputExistsError

    if path is None or not Path(path).exists():
        return
    path = Path(path)
    data = path.read_bytes() if path.is_file() else b""  # a table or a plot: small
    if MARK.encode() not in data and _TABLE_NOTE.encode() not in data:
        raise OutputExistsError(f"{path} exists and was not written by `{MARK}`: choose another path "
                                "(nothing was changed)")


def load_results(run: str | Path) -> dict:
    """results.json of a run directory (or the file itself)."""
    path = Path(run)
    path = path / store.RESULTS_FILE if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results.json (did `effreason eval --output {run}` finish?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not a readable results.json ({e})") from None


def run_labels(runs: list[str]) -> list[str]:
    """Short unique labels: the directory name, or more of the path where names repeat."""
    paths = [Path(r).resolve() for r in runs]
    depth = 1
    while depth < 6:
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
        depth += 1
    return [str(p) for p in paths]


def comparison_rows(runs: dict[str, dict], baseline: str | None = None,
                    weights: tuple[float, float, float] = metrics.AES_WEIGHTS) -> list[dict]:
    """One row per run: accuracy, tokens, EFF, frontier membership, and figures against ``baseline``."""
    points = [metrics.Point(label, r["tokens_mean"], r["accuracy"]) for label, r in runs.items()
              if r.get("tokens_mean") is not None]
    frontier = {p.label for p in metrics.pareto_frontier(points)}
    rows = []
    for label, r in runs.items():
        row = {"run": label, "benchmark": r.get("benchmark"), "n": r["n"], "accuracy": r["accuracy"],
               "tokens_mean": r.get("tokens_mean"),
               "tokens_p90": r.get("tokens_p90"), "truncation_rate": r.get("truncation_rate"),
               "accuracy_per_1k_tokens": r.get("accuracy_per_1k_tokens"), "budget_auc": r.get("budget_auc"),
               "pareto": label in frontier}
        if baseline is not None:
            base = runs[baseline]
            # Token reduction and AES compare two runs on the same problems; across benchmarks they mean nothing.
            if (r.get("benchmark"), r["n"]) == (base.get("benchmark"), base["n"]):
                vs = report.baseline_figures(r, base, weights)
                row.update(token_reduction=vs["token_reduction"], aes=vs["aes"])
            else:
                row.update(token_reduction=None, aes=None)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The comparison rows as a markdown table (``*`` marks the Pareto frontier)."""
    cols = [c for c in rows[0] if c != "pareto"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = []
        for c in cols:
            v = row[c]
            cell = "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(cell + (" *" if c == "run" and row["pareto"] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    note = f"{_TABLE_NOTE} (no run has fewer tokens and higher accuracy)."
    if "aes" in cols:
        note += " Token reduction and AES: n/a for runs on other problems than the baseline."
    return "\n".join(lines) + "\n\n" + note + "\n"


def _place_labels(ax, labels: list[tuple[str, float, float, str, int]],
                  markers: list[tuple[float, float, float]]) -> None:
    """Annotate points, trying a few offsets and skipping a label that would overlap one already placed.

    Args:
        labels: ``(text, x, y, color, fontsize)``, most important first (run names before budgets).
        markers: ``(x, y, radius in points)`` of drawn markers that labels must not cover.
    """
    ax.figure.canvas.draw()  # fixes the axis limits, so data -> pixel transforms are final
    scale = ax.figure.dpi / 72  # points -> pixels
    placed: list[tuple[float, float, float, float]] = []  # (x0, y0, x1, y1) in pixels
    for x, y, radius in markers:
        px, py = ax.transData.transform((x, y))
        placed.append((px - radius * scale, py - radius * scale, px + radius * scale, py + radius * scale))
    for text, x, y, color, size in labels:
        px, py = ax.transData.transform((x, y))
        width, height = 0.6 * size * len(text) * scale, 1.2 * size * scale
        gap = 9 * scale if size > 7 else 4 * scale
        for dx, dy in ((gap, gap / 2), (gap, -gap / 2 - height), (-gap - width, gap / 2),
                       (-gap - width, -gap / 2 - height), (-width / 2, gap * 1.5), (-width / 2, -gap * 1.5 - height)):
            box = (px + dx, py + dy, px + dx + width, py + dy + height)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed):
                placed.append(box)
                ax.annotate(text, (x, y), xytext=(dx / scale, dy / scale), textcoords="offset points",
                            fontsize=size, color=color, va="bottom", ha="left")
                break


def plot_runs(runs: dict[str, dict], out: str | Path, baseline: str | None = None, title: str | None = None) -> None:
    """Accuracy vs mean completion tokens: one point per run, its budget curve dashed, the frontier ringed.

    Runs at the same point share one label (``a = b``); budget labels that would overlap are left out.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=150)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    points, budget_labels, same_point = [], [], {}
    for i, (label, r) in enumerate(runs.items()):
        if r.get("tokens_mean") is None:
            continue
        color = colors[i % len(colors)]
        budgets = r.get("budgets") or {}
        if budgets:
            xs = [f["tokens_mean"] for f in budgets.values()]
            ys = [f["accuracy"] for f in budgets.values()]
            ax.plot(xs, ys, "--", marker="o", ms=3, lw=1, color=color, alpha=0.6)
            budget_labels += [(f"B={b}", x, y, color, 7) for b, x, y in zip(budgets, xs, ys, strict=True)]
        is_base = label == baseline
        ax.scatter([r["tokens_mean"]], [r["accuracy"]], s=220 if is_base else 70, marker="*" if is_base else "o",
                   color=color, edgecolor="black", zorder=4 if is_base else 3,
                   label=label + (" (baseline)" if is_base else ""))
        same_point.setdefault((round(r["tokens_mean"], 6), round(r["accuracy"], 6)), []).append(label)
        points.append(metrics.Point(label, r["tokens_mean"], r["accuracy"]))
    frontier = metrics.pareto_frontier(points)
    ax.step([p.tokens for p in frontier], [p.accuracy for p in frontier], where="post", color="black", lw=1.2,
            alpha=0.7, zorder=2)
    ax.scatter([p.tokens for p in frontier], [p.accuracy for p in frontier], s=420, facecolors="none",
               edgecolors="black", lw=1.2, zorder=2)
    ax.set_xlabel("mean completion tokens")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.03, 1.1)
    ax.set_yticks([i / 5 for i in range(6)])
    ax.set_xlim(0, max(p.tokens for p in points) * 1.15 if points else 1)
    ax.grid(alpha=0.3)
    ax.set_title(title or "accuracy vs mean completion tokens (dashed: thinking budgets B)")
    handles, names = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", lw=1.2, marker="o", ms=11, mfc="none", alpha=0.7))
    ax.legend(handles, [*names, "Pareto frontier"], fontsize=8, loc="lower right")
    run_labels = [(" = ".join(names), x, y, "black", 8) for (x, y), names in same_point.items()]
    markers = [(p.tokens, p.accuracy, 11.0) for p in frontier] + [(p.tokens, p.accuracy, 7.0) for p in points]
    _place_labels(ax, run_labels + budget_labels, markers)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, metadata={"Creator": MARK} if Path(out).suffix.lower() in _METADATA_FORMATS else None)
    plt.close(fig)
