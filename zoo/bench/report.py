"""The leaderboard files (``leaderboard.{csv,json,md,png}``) and the same tables on W&B.

Everything is rendered from one payload (:func:`leaderboard_payload`), so the four files and W&B always agree.
Metric columns are ordered as :data:`COLUMN_ORDER`; each header carries the direction of "better".
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from zoo.io.atomic import atomic_path, write_json
from zoo.metrics.suite import higher_is_better

COLUMN_ORDER = ("M-LMD", "F-LMD", "Sync_conf", "LSE-D", "SSIM[wang]", "SSIM[skimage-default]", "PSNR", "CPBD",
                "CSIM", "FID", "LPIPS")
TABLE_TITLES = {"test": "seen identities (test)", "test_unseen": "unseen identities (test_unseen)"}
PROVENANCE = ("num_clips", "train_seconds", "eval_seconds", "seed", "zoo_version")


def protocol_text(payload: dict) -> str:
    budget, dataset = payload["budget"], payload["dataset"]
    window = budget["eval_window_seconds"]
    lines = [
        f"Dataset {dataset['name']} version {dataset['version']}; budget '{budget['name']}'"
        + (f" ({budget['description']})" if budget.get("description") else "") + f"; seed {payload['seed']}.",
        f"Every row of a table is scored on the same windows ({'whole clips' if window is None else f'{window:g} s'}) "
        "of the listed identities with one metric suite; per-clip metrics are averaged over all clips, dataset-level "
        "metrics (FID) are computed per identity and averaged over identities.",
        "one-shot / few-shot methods are trained once on the training identities; person-specific methods are "
        "trained once per evaluated identity on that person's training clips; gt is the ground truth and static "
        "repeats the clip's reference frame.",
    ]
    return "\n".join(lines)


def metric_columns(payload: dict) -> list[str]:
    names = {name for table in payload["tables"].values() for row in table["rows"] for name in row["metrics"]}

    def order(name: str) -> tuple[int, str]:
        base = [i for i, prefix in enumerate(COLUMN_ORDER) if name == prefix or name.startswith(prefix + "[")]
        return (base[0] if base else len(COLUMN_ORDER), name)

    return sorted(names, key=order)


def arrow(name: str) -> str:
    return "↑" if higher_is_better(name) else "↓"


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_csv(payload: dict, path: Path) -> None:
    columns = metric_columns(payload)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["table", "method", "protocol", *columns, *PROVENANCE, "train_config_hashes",
                     "eval_config_hashes", "dataset_version", "git_commit"])
    for split, table in payload["tables"].items():
        for row in table["rows"]:
            values = [row["metrics"].get(c, {}).get("value", "") for c in columns]
            writer.writerow([split, row["method"], row["protocol"], *values, *(row[k] for k in PROVENANCE),
                             ";".join(f"id{k}:{h}" for k, h in row["train_config_hashes"].items()),
                             ";".join(f"id{k}:{h}" for k, h in row["eval_config_hashes"].items()),
                             row["dataset"]["version"], payload["git_commit"] or ""])
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def markdown(payload: dict) -> str:
    columns = metric_columns(payload)
    out = [f"# Leaderboard: {payload['dataset']['name']}", "", protocol_text(payload), ""]
    for split, table in payload["tables"].items():
        present = [c for c in columns if any(c in row["metrics"] for row in table["rows"])]
        out += [f"## {TABLE_TITLES.get(split, split)}: identities {', '.join(map(str, table['identities']))}", ""]
        out.append("| method | protocol | " + " | ".join(f"{c} {arrow(c)}" for c in present) + " | clips | train s |")
        out.append("|---|---|" + "---:|" * (len(present) + 2))
        for row in table["rows"]:
            cells = [fmt(row["metrics"].get(c, {}).get("value")) for c in present]
            out.append(f"| {row['method']} | {row['protocol']} | " + " | ".join(cells)
                       + f" | {row['num_clips']} | {fmt(row['train_seconds'])} |")
        out.append("")
    skipped = {k: v for table in payload["tables"].values() for row in table["rows"]
               for k, v in row["skipped_metrics"].items()}
    if skipped:
        # the first clause only (the full reason, with this machine's paths, is in leaderboard.json)
        out += ["Skipped metrics: " + "; ".join(f"{k}: {v.split(' in /')[0]}" for k, v in sorted(skipped.items())),
                ""]
    out += [f"zoo {payload['zoo_version']}, commit {payload['git_commit'] or 'unknown'}. "
            f"Variants and backbones of every number: leaderboard.json.", ""]
    return "\n".join(out)


def plot(payload: dict, path: Path) -> None:
    """One bar chart per metric of the ``test`` table, the direction of "better" in each title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = payload["tables"]["test"]
    columns = [c for c in metric_columns(payload) if any(c in row["metrics"] for row in table["rows"])]
    cols = min(4, max(1, len(columns)))
    rows = math.ceil(len(columns) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    methods = [row["method"] for row in table["rows"]]
    colours = plt.get_cmap("tab10")(range(len(methods)))
    for ax, name in zip(axes.flat, columns):
        values = [row["metrics"].get(name, {}).get("value", float("nan")) for row in table["rows"]]
        ax.bar(range(len(methods)), values, color=colours)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        better = "higher is better ↑" if higher_is_better(name) else "lower is better ↓"
        ax.set_title(f"{name}\n{better}", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    fig.suptitle(f"{payload['dataset']['name']} {payload['dataset']['version']} — budget "
                 f"'{payload['budget']['name']}', identities {table['identities']}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def log_to_wandb(payload: dict, run_dir: Path, project: str, mode: str) -> None:
    """The tables (one W&B Table per split) and one bar chart per metric, as a ``bench`` job."""
    import wandb

    from zoo.tracking import wandb_mode

    resolved = wandb_mode(mode)
    if resolved == "disabled":
        return
    run = wandb.init(project=project, job_type="bench", dir=str(run_dir), mode=resolved,
                     name=f"bench-{payload['dataset']['name']}-{payload['budget']['name']}",
                     config={k: payload[k] for k in ("budget", "dataset", "seed", "git_commit", "zoo_version")})
    columns = metric_columns(payload)
    for split, table in payload["tables"].items():
        data = [[row["method"], row["protocol"], *(row["metrics"].get(c, {}).get("value") for c in columns)]
                for row in table["rows"]]
        wb_table = wandb.Table(columns=["method", "protocol", *columns], data=data)
        charts = {f"{split}/{c}": wandb.plot.bar(wb_table, "method", c, title=f"{c} {arrow(c)} ({split})")
                  for c in columns}
        run.log({f"{split}/leaderboard": wb_table, **charts})
    run.summary["protocol"] = protocol_text(payload)
    run.finish()


def write_files(payload: dict, out_dir: Path) -> list[Path]:
    """``leaderboard.{json,csv,md,png}`` in ``out_dir`` (each written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"leaderboard.{ext}" for ext in ("json", "csv", "md", "png")]
    write_json(paths[0], payload, sort_keys=True, default=str)
    write_csv(payload, paths[1])
    with atomic_path(paths[2]) as tmp:
        tmp.write_text(markdown(payload))
    plot(payload, paths[3])
    return paths
