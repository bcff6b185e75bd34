#!/usr/bin/env python3
"""The retrieval experiment's table (scripts/experiment-recall) from its outputs.

    scripts/recall_summary.py RESULTS_DIR RUNS_DIR RUN ...

For each run: MQAR answer accuracy within and beyond the sliding window at the training
length (the first context of its eval) and beyond the window at 2x / 4x / 8x it, from
RESULTS_DIR/eval_RUN.json; the last text validation loss and the mean MQAR training
accuracy of the last 50 MQAR steps from RUNS_DIR/RUN/loss.csv; the wall time from
RUNS_DIR/RUN.time. Prints a Markdown table.

    scripts/recall_summary.py --reaches SOURCE_RUN_DIR RESULTS_DIR RUNS_DIR RUN ...

For conversions: the first validation step at which each RUN's text validation loss is at
or below the last one of the model it was converted from (SOURCE_RUN_DIR/loss.csv).
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


def val_losses(path):
    """[(step, text validation loss)] of a loss.csv, in order."""
    with open(path) as f:
        return [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(f) if r["val_loss"]]


def reaches(source, runs, names):
    target = val_losses(os.path.join(source, "loss.csv"))[-1][1]
    print(f"source {os.path.basename(source)}: last text validation loss {target:.4f}")
    print()
    print("| run | first step at or below it | its loss there | loss at the last step |")
    print("|---|---|---|---|")
    for name in names:
        curve = val_losses(os.path.join(runs, name, "loss.csv"))
        hit = next(((s, v) for s, v in curve if v <= target), None)
        first = "not reached" if hit is None else f"{hit[0]} | {hit[1]:.4f}"
        if hit is None:
            first += " | -"
        print(f"| {name} | {first} | {curve[-1][1]:.4f} (step {curve[-1][0]}) |")


def main():
    if sys.argv[1] == "--reaches":
        reaches(sys.argv[2], sys.argv[4], sys.argv[5:])
        return
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
