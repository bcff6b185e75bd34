"""Training and evaluation of a LinkPredictor, DyGLib's protocol.

Training: chronological batches of training events (PyG's TemporalDataLoader), one random
negative per positive (src, random dst), binary cross-entropy, Adam. Histories come from the
training events only. After each epoch the model is scored on the validation events
(random negatives); the epoch with the best validation AP is kept.
Evaluation: chronological batches of `eval_batch_size` events; per batch, AP and AUC of the
positives against one negative each (random or historical, seeded); the reported number is
the mean over batches (as DyGLib reports it). Histories come from every event before t.
"""
import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.loader import TemporalDataLoader

from edge_tokens import pair_tokens
from graph_generator import EVENT_KINDS
from negative_sampling import HistoricalNegatives
from node_history import InteractionHistory
from ranking_metrics import average_precision, roc_auc

__all__ = ["TrainConfig", "train_model", "evaluate"]


@dataclass
class TrainConfig:
    history_len: int = 256      # interactions read per endpoint (the sequence is one longer)
    batch_size: int = 16        # positive events per step (as many negatives)
    epochs: int = 3
    train_events: int = 3000    # the most recent training events are used (0: all)
    lr: float = 3e-3
    eval_batch_size: int = 200  # DyGLib's
    val_events: int = 1000      # validation events scored after each epoch (0: all)
    seed: int = 0


def _tokens(history, src, dst, t, tc):
    return pair_tokens(history, src, dst, t, tc.history_len)


def train_model(model, graph, splits, tc, log=print):
    """Trains `model` in place; returns {"epochs": [{loss, val_ap, val_auc, seconds}], "best_epoch"}."""
    torch.manual_seed(tc.seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr)
    train_hist = InteractionHistory(splits.train, graph.num_nodes)
    full_hist = InteractionHistory(splits.full, graph.num_nodes)
    data = splits.train if tc.train_events <= 0 else splits.train[-tc.train_events:]
    val = splits.val if tc.val_events <= 0 else splits.val[: tc.val_events]
    out, best, best_state = {"epochs": []}, -1.0, None
    for epoch in range(tc.epochs):
        start = time.perf_counter()
        torch.manual_seed(tc.seed * 1000 + epoch)  # the loader's random negatives
        model.train()
        losses = []
        for batch in TemporalDataLoader(data, batch_size=tc.batch_size, neg_sampling_ratio=1.0):
            b = len(batch.src)
            tok = _tokens(train_hist, torch.cat([batch.src, batch.src]), torch.cat([batch.dst, batch.neg_dst[:b]]),
                          torch.cat([batch.t, batch.t]), tc)
            y = torch.cat([torch.ones(b), torch.zeros(b)])
            loss = F.binary_cross_entropy_with_logits(model(tok), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        metrics = evaluate(model, full_hist, val, graph.num_nodes, tc, strategies=("random",), seed=1)
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "val_ap": metrics["random"]["ap"],
               "val_auc": metrics["random"]["auc"], "seconds": time.perf_counter() - start}
        out["epochs"].append(row)
        log(f"  epoch {epoch}: loss {row['loss']:.4f}  val AP {row['val_ap']:.4f}  AUC {row['val_auc']:.4f}  "
            f"({row['seconds']:.1f} s)")
        if row["val_ap"] > best:
            best, best_state, out["best_epoch"] = row["val_ap"], copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best_state)
    return out


@torch.no_grad()
def evaluate(model, history, data, num_nodes, tc, strategies=("random", "historical"), seed=0,
             historical_from=None):
    """{strategy: {"ap", "auc"} (means over batches), "by_kind": {kind: ap}} on the events of `data`.

    historical_from: the events historical negatives are drawn from (DyGLib: all events for
    the transductive test, the new-node events themselves for the inductive one); default `data`.

    by_kind (random negatives only): AP of the positives of one event kind against all the
    negatives, pooled over batches: which kinds of edges the model ranks above random pairs.
    """
    model.eval()
    torch.manual_seed(seed)  # the loader's random negatives: the same for every model
    hist_neg = HistoricalNegatives(data if historical_from is None else historical_from, num_nodes, seed) if "historical" in strategies else None
    per_batch = {s: [] for s in strategies}
    pooled_pos, pooled_kind, pooled_neg = [], [], []
    for batch in TemporalDataLoader(data, batch_size=tc.eval_batch_size, neg_sampling_ratio=1.0):
        b = len(batch.src)
        negs = {}
        if "random" in strategies:
            negs["random"] = (batch.src, batch.neg_dst[:b])
        if hist_neg is not None:
            negs["historical"] = hist_neg.sample(batch.src, batch.dst, batch.t)
        src = torch.cat([batch.src] + [n[0] for n in negs.values()])
        dst = torch.cat([batch.dst] + [n[1] for n in negs.values()])
        t = torch.cat([batch.t] * (1 + len(negs)))
        scores = torch.sigmoid(model(_tokens(history, src, dst, t, tc))).numpy()
        pos = scores[:b]
        for i, name in enumerate(negs):
            neg = scores[b * (i + 1): b * (i + 2)]
            y = np.r_[np.ones(b), np.zeros(b)]
            per_batch[name].append((average_precision(y, np.r_[pos, neg]), roc_auc(y, np.r_[pos, neg])))
            if name == "random":
                pooled_neg.append(neg)
        pooled_pos.append(pos)
        pooled_kind.append(batch.kind.numpy())
    out = {s: {"ap": float(np.mean([m[0] for m in v])), "auc": float(np.mean([m[1] for m in v]))}
           for s, v in per_batch.items()}
    if "random" in strategies:
        pos, kind, neg = np.concatenate(pooled_pos), np.concatenate(pooled_kind), np.concatenate(pooled_neg)
        out["by_kind"] = {}
        for k, name in enumerate(EVENT_KINDS):
            if (kind == k).any():
                y = np.r_[np.ones((kind == k).sum()), np.zeros(len(neg))]
                out["by_kind"][name] = {"ap": average_precision(y, np.r_[pos[kind == k], neg]),
                                        "positives": int((kind == k).sum())}
    return out

