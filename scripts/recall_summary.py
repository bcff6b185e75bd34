#!/usr/bin/env python3
"""The retrieval experiment's table (scripts/experiment-recall) from its outputs.

    scripts/recall_summary.py RESULTS_DIR RUNS_DIR RUN ...

For each run: MQAR answer accuracy within and beyond the sliding window at the training
length (the first context of its eval) and beyond the window at 2x / 4x / 8x it, from
RESULTS_DIR/eval_RUN.json; the last text validation loss and the mean MQAR training
accuracy of the last 50 MQAR steps from RUNS_DIR/RUN/loss.csv; the wall time from
RUNS_DIR/RUN.time. Prints a Markdown table.
"""
import csv
import json
import os
import sys


def cells_by_context(cells):
    by = {}
    for c in cells:
        by.setdefault(c["context"], []).append(c)
    return by


def pooled(cells, part):
    right = sum(c[f"accuracy_{part}"] * c[f"answers_{part}"] for c in cells)
    n = sum(c[f"answers_{part}"] for c in cells)
    return (right / n if n else float("nan")), n


def from_loss_csv(path):
    val, acc = None, []
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["val_loss"]:
                val = float(row["val_loss"])
            if row.get("mqar_loss") and row.get("recall_accuracy"):
                acc.append(float(row["recall_accuracy"]))
    tail = acc[-50:]
    return val, (sum(tail) / len(tail) if tail else None)


def main():
    results, runs, names = sys.argv[1], sys.argv[2], sys.argv[3:]
    print("| run | beyond w, 1x | within w, 1x | beyond w, 2x | 4x | 8x | train acc (last 50 MQAR steps) "
          "| text val loss | wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        with open(os.path.join(results, f"eval_{name}.json")) as f:
            ev = json.load(f)
        by = cells_by_context(ev["cells"])
        contexts = sorted(by)
        beyond = [pooled(by[c], "beyond")[0] for c in contexts]
        within = pooled(by[contexts[0]], "within")[0]
        val, train_acc = from_loss_csv(os.path.join(runs, name, "loss.csv"))
        wall = open(os.path.join(runs, f"{name}.time")).read().split()[0] if os.path.exists(
            os.path.join(runs, f"{name}.time")) else "-"
        more = " | ".join(f"{b:.3f}" for b in beyond[1:4])
        print(f"| {name} | {beyond[0]:.3f} | {within:.3f} | {more} | "
              f"{'-' if train_acc is None else f'{train_acc:.3f}'} | {'-' if val is None else f'{val:.4f}'} | {wall} s |")


if __name__ == "__main__":
    main()
