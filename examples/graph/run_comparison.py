"""NSA against full and window attention on dynamic-graph link prediction, end to end.

  python examples/graph/run_comparison.py                 # the default: ~10 minutes on 1 thread
  python examples/graph/run_comparison.py --kinds full --epochs 1 --out /tmp/try

Generates the graph (graph_generator.py, seeded), splits it (splits.py), then for each
attention kind trains the same link predictor from the same seed (training.py) and scores
the test period: transductive (every test event) and inductive (the test events with a new
node), each against random and historical negatives, AP and AUC. Writes to --out:
comparison.json (everything, wall times included), comparison.md and comparison.csv (the
table), comparison_ap.svg (the plot) and graph.json (the graph's description).
"""
import argparse
import csv
import dataclasses
import json
import os
import platform
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import nsa  # noqa: E402

import graph_generator as gg  # noqa: E402
from attention_kinds import KINDS  # noqa: E402
from link_predictor import LinkPredictor, ModelConfig, parameter_counts  # noqa: E402
from measure_cost import cpu_name  # noqa: E402
from node_history import InteractionHistory  # noqa: E402
from splits import make_splits  # noqa: E402
from svg_plots import bar_chart  # noqa: E402
from training import TrainConfig, evaluate, train_model  # noqa: E402

SETTINGS = (("transductive", "random"), ("transductive", "historical"), ("inductive", "random"), ("inductive", "historical"))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tc, gc = TrainConfig(), gg.GraphConfig()
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--threads", type=int, default=1, help="torch and nsa threads (default 1)")
    ap.add_argument("--nodes", type=int, default=gc.num_nodes)
    ap.add_argument("--events", type=int, default=gc.num_events)
    ap.add_argument("--graph-seed", type=int, default=gc.seed)
    ap.add_argument("--history", type=int, default=tc.history_len, help="interactions read per endpoint")
    ap.add_argument("--epochs", type=int, default=tc.epochs)
    ap.add_argument("--train-events", type=int, default=tc.train_events, help="latest training events used (0: all)")
    ap.add_argument("--batch-size", type=int, default=tc.batch_size)
    ap.add_argument("--lr", type=float, default=tc.lr)
    ap.add_argument("--val-events", type=int, default=tc.val_events)
    ap.add_argument("--test-events", type=int, default=2000, help="first test-period events scored (0: all)")
    ap.add_argument("--seed", type=int, default=tc.seed, help="model init and training seed")
    ap.add_argument("--window", type=int, default=None, help="window of nsa and window attention")
    ap.add_argument("--top-n", type=int, default=None, help="NSA's blocks selected per query")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    return ap.parse_args(argv)


def run(args, log=print):
    torch.set_num_threads(args.threads)
    nsa.set_num_threads(args.threads)
    wall = time.perf_counter()
    kinds = args.kinds.split(",")
    gcfg = dataclasses.replace(gg.GraphConfig(), num_nodes=args.nodes, num_events=args.events, seed=args.graph_seed)
    start = time.perf_counter()
    graph = gg.generate(gcfg)
    splits = make_splits(graph.data, graph.num_nodes, seed=args.graph_seed)
    test = splits.test if args.test_events <= 0 else splits.test[: args.test_events]
    test_new = test[torch.isin(test.src, splits.new_nodes) | torch.isin(test.dst, splits.new_nodes)]
    full_hist = InteractionHistory(splits.full, graph.num_nodes)
    gen_s = time.perf_counter() - start
    desc = gg.describe(graph)
    log(f"graph: {len(graph.data)} events, {graph.num_nodes} nodes, {desc['events']} ({gen_s:.1f} s); "
        f"train {len(splits.train)}, val {len(splits.val)}, test {len(test)} (inductive {len(test_new)})")
    tc = TrainConfig(history_len=args.history, batch_size=args.batch_size, epochs=args.epochs,
                     train_events=args.train_events, lr=args.lr, val_events=args.val_events, seed=args.seed)
    nsa_over = {k: v for k, v in (("window", args.window), ("top_n", args.top_n)) if v is not None}
    mcfg = ModelConfig(nsa=nsa_over)
    results = {}
    for kind in kinds:
        torch.manual_seed(args.seed)
        model = LinkPredictor(kind, graph.node_feat, graph.data.msg.shape[1], mcfg)
        log(f"{kind}: {parameter_counts(model)}")
        start = time.perf_counter()
        trained = train_model(model, graph, splits, tc, log=log)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        trans = evaluate(model, full_hist, test, graph.num_nodes, tc, seed=2, historical_from=splits.full)
        induc = evaluate(model, full_hist, test_new, graph.num_nodes, tc, seed=3, historical_from=test_new)
        eval_s = time.perf_counter() - start
        results[kind] = {"params": parameter_counts(model), "training": trained, "train_seconds": train_s,
                         "eval_seconds": eval_s, "transductive": trans, "inductive": induc}
        log(f"{kind}: " + "  ".join(f"{s}/{n} AP {results[kind][s][n]['ap']:.4f}" for s, n in SETTINGS)
            + f"  (train {train_s:.0f} s, eval {eval_s:.0f} s)")
    meta = {"machine": cpu_name(), "threads": args.threads, "torch": torch.__version__, "nsa": nsa.__version__,
            "python": platform.python_version(), "args": vars(args), "train": dataclasses.asdict(tc),
            "model": mcfg, "graph_seconds": gen_s, "wall_seconds": time.perf_counter() - wall,
            "test_events": len(test), "inductive_test_events": len(test_new), "new_nodes": len(splits.new_nodes)}
    write_outputs(args.out, meta, desc, results, kinds)
    log(f"done in {meta['wall_seconds']:.0f} s; wrote {args.out}")
    return meta, results


def write_outputs(out, meta, desc, results, kinds):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "comparison.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    with open(os.path.join(out, "graph.json"), "w") as f:
        json.dump(desc, f, indent=1)
    header = ["kind", "params", "nsa_only_params"] + [f"{s}_{n}_{m}" for s, n in SETTINGS for m in ("ap", "auc")] \
        + ["return_ap_random", "train_s", "eval_s"]
    rows = []
    for k in kinds:
        r = results[k]
        rows.append([k, r["params"]["total"], r["params"]["nsa_only"]]
                    + [round(r[s][n][m], 4) for s, n in SETTINGS for m in ("ap", "auc")]
                    + [round(r["transductive"]["by_kind"].get("return", {}).get("ap", float("nan")), 4),
                       round(r["train_seconds"], 1), round(r["eval_seconds"], 1)])
    with open(os.path.join(out, "comparison.csv"), "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    lines = ["| kind | params | trans. random AP / AUC | trans. historical AP / AUC | induct. random AP / AUC "
             "| induct. historical AP / AUC | returns AP (random) | train s | eval s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k, row in zip(kinds, rows):
        cells = [f"{row[3 + 2 * i]:.4f} / {row[4 + 2 * i]:.4f}" for i in range(len(SETTINGS))]
        lines.append(f"| {k} | {row[1]} | " + " | ".join(cells) + f" | {row[11]:.4f} | {row[12]:.0f} | {row[13]:.0f} |")
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    groups = [f"{s[:5]}. {n}" for s, n in SETTINGS] + ["returns only"]
    values = {k: [results[k][s][n]["ap"] for s, n in SETTINGS]
              + [results[k]["transductive"]["by_kind"].get("return", {}).get("ap")] for k in kinds}
    lo = min(v for vs in values.values() for v in vs if v is not None)
    bar_chart(os.path.join(out, "comparison_ap.svg"), groups, kinds, values,
              f"test AP, history {meta['train']['history_len']}, {meta['threads']} thread", "AP",
              ymin=max(0.0, round(lo - 0.1, 1)), ymax=1.0)


if __name__ == "__main__":
    run(parse_args())
