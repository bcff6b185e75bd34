"""Negative edges for evaluation, as DyGLib's NegativeEdgeSampler draws them.

random      (src, random dst): PyG's TemporalDataLoader(neg_sampling_ratio=1.0) draws the
            dst uniformly in [min dst, max dst] of the data it loads; used as it is.
historical  (Poursafaei et al., NeurIPS 2022, "Towards better evaluation for dynamic link
            prediction"): pairs (src, dst) that occurred before the batch's first event and
            do not occur in the batch, drawn without replacement; when there are too few, the
            rest are random pairs that are not batch edges. Re-querying a pair that did occur
            is much harder than a random one: it asks *when* an edge recurs, not *whether*.
            PyG has no historical sampler; this is DyGLib's historical_sample.
"""
import numpy as np
import torch

__all__ = ["HistoricalNegatives"]


class HistoricalNegatives:
    """Draws from the edges of `data` (a TemporalData in time order) before each batch."""

    def __init__(self, data, num_nodes, seed):
        self.n = num_nodes
        self.code = (data.src * num_nodes + data.dst).numpy()  # one int per directed pair
        self.t = data.t.numpy()
        self.rng = np.random.default_rng(seed)

    def sample(self, src, dst, t):
        """(neg_src, neg_dst), each [len(src)], for a batch of events (src, dst, t) in time order."""
        size = len(src)
        batch = np.unique((src * self.n + dst).numpy())
        seen = np.unique(self.code[self.t < float(t[0])])
        cand = np.setdiff1d(seen, batch, assume_unique=True)
        if len(cand) >= size:
            pick = self.rng.choice(cand, size=size, replace=False)
        else:
            fill = []
            while len(fill) < size - len(cand):
                c = self.rng.integers(self.n, size=2 * size) * self.n + self.rng.integers(self.n, size=2 * size)
                fill.extend(c[~np.isin(c, batch)].tolist())
            pick = np.concatenate([cand, np.array(fill[: size - len(cand)], dtype=np.int64)])
        pick = torch.from_numpy(pick.astype(np.int64))
        return pick // self.n, pick % self.n
