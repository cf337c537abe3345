"""The run summary: one row per iteration (iteration 0 = the starting policy) and a plot.

    from rlaifv_core.summary import summary_plot, summary_table_markdown
    png_bytes = summary_plot(rows)                        # hallucination and coverage per iteration
    print(summary_table_markdown(rows, ["shapes.chair_i", "shapes.recall"]))
"""

from __future__ import annotations

import io

HALLUCINATION_KEYS = ("chair_i", "chair_s", "chair_s_refine", "hallucination_rate")
COVERAGE_KEYS = ("recall", "cover")


def summary_plot(rows: list[dict], title: str = "RLAIF-V iterations") -> bytes:
    """Hallucination (lower is better) and recall/coverage (higher is better) per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iterations = [row["iteration"] for row in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    metric_names = sorted({k for row in rows for k in row.get("metrics", {})})
    for name in metric_names:
        values = [row.get("metrics", {}).get(name) for row in rows]
        if any(v is None for v in values):
            continue
        short = name.split(".", 1)[-1]
        if short in HALLUCINATION_KEYS:
            left.plot(iterations, values, marker="o", label=name)
        elif short in COVERAGE_KEYS:
            right.plot(iterations, values, marker="o", label=name)
    left.set(title="hallucination (lower is better)", xlabel="iteration", ylim=(0, None))
    right.set(title="recall / coverage (higher is better)", xlabel="iteration", ylim=(0, 1.05))
    for axis in (left, right):
        axis.set_xticks(iterations)
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def summary_table_markdown(rows: list[dict], metrics: list[str]) -> str:
    header = "| iteration | policy | pairs | " + " | ".join(metrics) + " |"
    lines = [header, "|" + "---|" * (3 + len(metrics))]
    for row in rows:
        values = [row.get("metrics", {}).get(m) for m in metrics]
        cells = ["" if v is None else f"{v:.3f}" for v in values]
        lines.append(f"| {row['iteration']} | {row.get('selected', '')} | {row.get('pairs', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
