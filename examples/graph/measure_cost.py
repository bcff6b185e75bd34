"""Cost per batch against history length: forward + backward time and peak memory.

  python examples/graph/measure_cost.py                      # 256 .. 8192, every kind
  python examples/graph/measure_cost.py --lengths 256,1024 --kinds nsa,full

A batch is `--edges` candidate edges with one random negative each, so 2 * edges pairs and
4 * edges sequences of history_len + 1 tokens (every history full), through the link
predictor of the comparison (model settings as run_comparison.py); the time covers the
model's forward, loss and backward (tokens are built beforehand, their time is reported
apart). Kinds: nsa, full and window at the comparison's settings, and nsa-paper: NSA at the
paper's block sizes (l = 32, d = 16, l' = 64, n = 16, w = 512).

Memory: every point runs in a fresh process; its peak resident set (ru_maxrss) minus its
resident set just before the batch is the batch's peak memory. Graph and tokens are made
by the parent and handed over in a file, so the child's earlier peak is the imports alone.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import nsa  # noqa: E402

import graph_generator as gg  # noqa: E402
from edge_tokens import pair_tokens  # noqa: E402
from link_predictor import LinkPredictor, ModelConfig  # noqa: E402
from node_history import InteractionHistory  # noqa: E402
from svg_plots import line_chart  # noqa: E402

PAPER_NSA = dict(block_len=32, stride=16, sel_block=64, top_n=16, n_init=1, n_local=2, window=512, phi="mlp")


def model_config(kind):
    return ModelConfig(nsa=PAPER_NSA) if kind == "nsa-paper" else ModelConfig()


def make_tokens(length, edges, seed=0):
    """PairTokens of `edges` late events (and a random negative each) whose endpoints all
    have >= length earlier interactions, so every sequence is length + 1 tokens long."""
    n = 16
    cfg = gg.GraphConfig(num_nodes=n, num_communities=2, num_events=int(1.5 * (length + 1) * n / 2) + 400, seed=seed)
    g = gg.generate(cfg)
    hist = InteractionHistory(g.data, n)
    d = g.data
    t_end = d.t[-1:] + 1
    ready = hist.count_before(torch.arange(n), t_end.expand(n)) > length + 2 * edges  # nodes with a long past
    late = torch.nonzero(ready[d.src] & ready[d.dst]).flatten()[-edges:]
    d = d[late]
    gen = torch.Generator().manual_seed(seed)
    pool = torch.nonzero(ready).flatten()
    neg = pool[torch.randint(len(pool), (edges,), generator=gen)]
    neg = torch.where(neg == d.src, pool[(torch.searchsorted(pool, neg) + 1) % len(pool)], neg)
    start = time.perf_counter()
    tok = pair_tokens(hist, torch.cat([d.src, d.src]), torch.cat([d.dst, neg]), torch.cat([d.t, d.t]), length)
    seconds = time.perf_counter() - start
    if int(tok.lengths.min()) != length + 1:
        raise RuntimeError(f"cost: some history is shorter than {length}; make the graph longer")
    return tok, g.node_feat, seconds


def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def measure_one(kind, token_file, batches, threads):
    """In the child: time and peak memory of `batches` forward + backward passes."""
    torch.set_num_threads(threads)
    nsa.set_num_threads(threads)
    tok, node_feat = torch.load(token_file, weights_only=False)
    torch.manual_seed(0)
    model = LinkPredictor("nsa" if kind == "nsa-paper" else kind, node_feat, tok.msg.shape[-1], model_config(kind))
    y = torch.cat([torch.ones(tok.num_pairs // 2), torch.zeros(tok.num_pairs - tok.num_pairs // 2)])
    before = rss_kib()
    times = []
    for _ in range(batches):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(tok), y)
        loss.backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"seconds": min(times), "seconds_all": times, "peak_mib": (peak - before) / 1024}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="256,512,1024,2048,4096,8192")
    ap.add_argument("--kinds", default="nsa,full,window,nsa-paper")
    ap.add_argument("--edges", type=int, default=4, help="positive candidate edges per batch (as many negatives)")
    ap.add_argument("--batches", type=int, default=2, help="batches per point; the fastest is reported")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--child", nargs=2, metavar=("KIND", "TOKEN_FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure_one(args.child[0], args.child[1], args.batches, args.threads)))
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    kinds = args.kinds.split(",")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in lengths:
            tok, feat, tok_s = make_tokens(length, args.edges)
            path = os.path.join(tmp, f"tokens_{length}.pt")
            torch.save((tok, feat), path)
            for kind in kinds:
                cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, path,
                       "--batches", str(args.batches), "--threads", str(args.threads)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    print(res.stderr, file=sys.stderr)
                    raise SystemExit(f"cost: {kind} at {length} failed")
                row = {"kind": kind, "history_len": length, "sequences": tok.partner.shape[0],
                       "tokens_s": tok_s, **json.loads(res.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(f"{kind:10s} L={length:5d}  fwd+bwd {row['seconds']:8.3f} s   peak {row['peak_mib']:8.1f} MiB", flush=True)
    meta = {"machine": cpu_name(), "threads": args.threads, "edges_per_batch": args.edges,
            "sequences_per_batch": 4 * args.edges, "batches": args.batches, "torch": torch.__version__,
            "python": platform.python_version(), "nsa_paper": PAPER_NSA, "nsa": ModelConfig()["nsa"]}
    with open(os.path.join(args.out, "cost.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    write_table(rows, kinds, lengths, os.path.join(args.out, "cost.md"))
    for key, label, name in (("seconds", "seconds per batch (forward + backward)", "cost_time.svg"),
                             ("peak_mib", "peak MiB per batch", "cost_memory.svg")):
        series = {k: [(r["history_len"], r[key]) for r in rows if r["kind"] == k] for k in kinds}
        line_chart(os.path.join(args.out, name), series, f"{label}, {4 * args.edges} sequences, "
                   f"{args.threads} thread", "history length (events)", label)


def write_table(rows, kinds, lengths, path):
    get = lambda k, L: next(r for r in rows if r["kind"] == k and r["history_len"] == L)
    lines = ["| history | " + " | ".join(f"{k} s | {k} MiB" for k in kinds) + " |",
             "|---:|" + "---:|---:|" * len(kinds)]
    for L in lengths:
        lines.append(f"| {L} | " + " | ".join(f"{get(k, L)['seconds']:.3f} | {get(k, L)['peak_mib']:.0f}" for k in kinds) + " |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
