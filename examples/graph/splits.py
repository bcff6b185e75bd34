"""Transductive and inductive splits, as DyGLib does them (Yu et al. 2023, utils/DataLoader.py).

Chronological 70 / 15 / 15 split (PyG's TemporalData.train_val_test_split). Then 10% of all
nodes, drawn among those in the test period, become "new" nodes: every training event that
touches one is removed, so the model never sees them while training (neither as an endpoint
nor in a history). Evaluation reads histories from all events before t, training ones
included (DyGLib's full_neighbor_sampler).

  train        training events without new nodes
  val, test    every event of the period (transductive setting)
  val_new,     the events of the period with at least one new node (inductive setting)
  test_new
"""
from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import TemporalData

__all__ = ["Splits", "make_splits"]


@dataclass
class Splits:
    full: TemporalData
    train: TemporalData
    val: TemporalData
    test: TemporalData
    val_new: TemporalData
    test_new: TemporalData
    new_nodes: torch.Tensor


def _touches(data, nodes):
    return torch.isin(data.src, nodes) | torch.isin(data.dst, nodes)


def make_splits(data, num_nodes, seed=0, val_ratio=0.15, test_ratio=0.15, new_node_ratio=0.1):
    train, val, test = data.train_val_test_split(val_ratio=val_ratio, test_ratio=test_ratio)
    if len(train) == 0 or len(val) == 0 or len(test) == 0:
        raise ValueError(f"splits: {len(data)} events are too few for a train / val / test split")
    test_nodes = torch.unique(torch.cat([test.src, test.dst])).numpy()
    rng = np.random.default_rng(seed)
    k = min(len(test_nodes), max(1, int(new_node_ratio * num_nodes)))
    new_nodes = torch.from_numpy(np.sort(rng.choice(test_nodes, size=k, replace=False)))
    train = train[~_touches(train, new_nodes)]
    return Splits(full=data, train=train, val=val, test=test, val_new=val[_touches(val, new_nodes)],
                  test_new=test[_touches(test, new_nodes)], new_nodes=new_nodes)
