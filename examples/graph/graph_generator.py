"""A seeded generator of evolving interaction graphs with long-range structure.

The graph is a stream of timestamped interactions (src, dst, t, msg), returned as PyTorch
Geometric's TemporalData, plus fixed random node features. Every event is one of five kinds:

  background  src picked by its community's time-of-day activity; dst from src's *current*
              community with probability p_in_community, else any node. Communities drift:
              every drift_every hours a fraction drift_fraction of the nodes moves to another
              community. Short-range signal: who u met recently says who u meets next.
  routine     every node has one routine partner (a fixed random pairing); the pair meets
              once every routine_period hours (weekly), at the first event after its
              fixed meeting hour (a random phase, the same every period).
              Periodic signal, at one period's distance in the pair's histories.
  promise     u meets a random node v (any community) and the edge carries the flag
              msg[0] = 1, "we meet again": it starts a chain of returns.
  return      the flagged pair meets again as soon as BOTH u and v have had at least g
              other interactions since the flagged meeting, g drawn uniformly in
              [gap_min, gap_max] per meeting. With probability p_continue the return is
              flagged too (the chain goes on), else it is the chain's last meeting.
              Long-range signal: a return is predictable only from the pair's flagged
              edge, g .. ~1.1 g events back in the slower endpoint's history and
              g .. ~3 g in the faster one's (measured: describe()), beyond any window
              shorter than gap_min, never from the recent past.
  decoy       like a promise (a random partner) but unflagged, and it never returns:
              "seen once long ago" alone does not predict a return, the flag does.

Time is in hours; events arrive as a Poisson process whose rate follows a daily cycle
(events_per_hour * (1 + day_amplitude * cos(2 pi t / day_length))), and each community's
activity peaks at its own hour of the day (same amplitude): daily traffic.

Node features: num_nodes x node_feature_dim Gaussian vectors / sqrt(dim), fixed by the seed
and carrying no community information, so a model can tell nodes apart (and match a partner
seen before) without learning per-node embeddings, which keeps it inductive.

msg (edge features, 2 per event): [flag "we meet again", a uniform noise value in [0, 1)].
"""
import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch_geometric.data import TemporalData

__all__ = ["GraphConfig", "DynamicGraph", "generate", "describe", "EVENT_KINDS"]

EVENT_KINDS = ("background", "routine", "promise", "return", "decoy")
BACKGROUND, ROUTINE, PROMISE, RETURN, DECOY = range(5)


@dataclass(frozen=True)
class GraphConfig:
    num_nodes: int = 200
    num_events: int = 40000
    num_communities: int = 10
    events_per_hour: float = 20.0   # mean arrival rate of events over a day
    day_length: float = 24.0        # hours of the daily traffic cycle
    day_amplitude: float = 0.8      # in [0, 1): depth of the daily cycle (global and per community)
    p_in_community: float = 0.95    # a background partner comes from src's current community
    drift_every: float = 24.0       # hours between drift steps
    drift_fraction: float = 0.02    # fraction of nodes moved to another community per drift step
    routine_period: float = 168.0   # hours between two meetings of a routine pair
    p_promise: float = 0.10         # fraction of the non-return events that start a chain
    p_continue: float = 0.85        # a return is flagged (another one follows) with this probability
    p_decoy: float = 0.05           # fraction of the non-return events that are decoys
    gap_min: int = 16               # least interactions of each endpoint between promise and return
    gap_max: int = 32               # most (the drawn gap; the slower endpoint decides when)
    node_feature_dim: int = 16
    seed: int = 0

    def check(self):
        if self.num_nodes < max(4, 2 * self.num_communities):
            raise ValueError(f"graph: num_nodes={self.num_nodes} must be >= max(4, 2 * num_communities)")
        if self.num_events < 1 or self.num_communities < 1 or self.node_feature_dim < 1:
            raise ValueError("graph: num_events, num_communities and node_feature_dim must be >= 1")
        if not 0 <= self.day_amplitude < 1:
            raise ValueError(f"graph: day_amplitude={self.day_amplitude} must be in [0, 1)")
        if not 0 < self.gap_min <= self.gap_max:
            raise ValueError(f"graph: need 0 < gap_min <= gap_max, got {self.gap_min}, {self.gap_max}")
        if self.p_promise < 0 or self.p_decoy < 0 or self.p_promise + self.p_decoy > 1:
            raise ValueError("graph: p_promise and p_decoy must be >= 0 with a sum <= 1")
        if not 0 <= self.p_continue < 1:
            raise ValueError(f"graph: p_continue={self.p_continue} must be in [0, 1)")
        for name in ("events_per_hour", "day_length", "drift_every", "routine_period"):
            if not getattr(self, name) > 0:
                raise ValueError(f"graph: {name} must be > 0")


@dataclass
class DynamicGraph:
    """data: TemporalData(src, dst, t (float64 hours), msg [E, 2], kind [E], promise_of [E]: for
    a return the index of the flagged meeting that announced it, else -1; e_id [E]: the event's index, kept by
    every slice); node_feat [N, node_feature_dim] (kept outside data:
    TemporalData slices every tensor whose length is the number of events);
    community [E, 2]: the communities of src and dst at the event (ground truth, not a model
    input); config: the GraphConfig it was made from."""
    data: TemporalData
    node_feat: torch.Tensor
    community: torch.Tensor
    config: GraphConfig

    @property
    def num_nodes(self):
        return self.node_feat.shape[0]


class _Communities:
    """Current community of every node and its members, with drift."""

    def __init__(self, cfg, rng):
        self.rng, self.k = rng, cfg.num_communities
        self.of = rng.permutation(np.arange(cfg.num_nodes) % self.k)  # balanced start
        self.phase = rng.permutation(self.k) / self.k                 # hour of peak activity / day
        self._rebuild()

    def _rebuild(self):
        self.members = [np.flatnonzero(self.of == c) for c in range(self.k)]

    def drift(self, fraction):
        n = len(self.of)
        for u in self.rng.choice(n, size=max(1, round(fraction * n)), replace=False):
            if self.k > 1:
                self.of[u] = (self.of[u] + self.rng.integers(1, self.k)) % self.k
        self._rebuild()

    def pick_active(self, t, cfg):
        """A node drawn with weight 1 + a cos(2 pi (t / day - phase of its community))."""
        w = [len(m) * (1 + cfg.day_amplitude * math.cos(2 * math.pi * (t / cfg.day_length - p)))
             for m, p in zip(self.members, self.phase)]
        r, c = self.rng.random() * sum(w), 0
        while c < self.k - 1 and r >= w[c]:  # scalar draws: rng.choice costs ~20 us per call
            r -= w[c]
            c += 1
        m = self.members[c]
        return int(m[int(self.rng.random() * len(m))])


def _other_node(rng, n, u):
    v = int(rng.integers(n - 1))
    return v + (v >= u)


def _next_time(rng, t, cfg):
    """Next arrival of a Poisson process with the daily rate, by thinning."""
    peak = cfg.events_per_hour * (1 + cfg.day_amplitude)
    while True:
        t += rng.exponential(1 / peak)
        rate = cfg.events_per_hour * (1 + cfg.day_amplitude * math.cos(2 * math.pi * t / cfg.day_length))
        if rng.random() * peak <= rate:
            return t


def generate(cfg=GraphConfig()):
    """The graph of `cfg` (deterministic in cfg.seed). Events are in time order, times distinct."""
    cfg.check()
    rng = np.random.default_rng(cfg.seed)
    n = cfg.num_nodes
    node_feat = torch.from_numpy(rng.standard_normal((n, cfg.node_feature_dim)) / math.sqrt(cfg.node_feature_dim)).float()
    comm = _Communities(cfg, rng)
    pairs = rng.permutation(n)[: n - n % 2].reshape(-1, 2)  # routine partners
    routines = [(float(rng.uniform(0, cfg.routine_period)), int(a), int(b)) for a, b in pairs]
    heapq.heapify(routines)  # (next meeting time, a, b)

    count = np.zeros(n, np.int64)          # interactions of each node so far
    waiting = [[] for _ in range(n)]       # per node: its flagged meetings whose return is not yet due
    due = []                               # flagged meetings due to return, oldest first
    src, dst, times, flag, kind, promise_of, comm_of = [], [], [], [], [], [], []
    t, next_drift = 0.0, cfg.drift_every
    for e in range(cfg.num_events):
        t = _next_time(rng, t, cfg)
        while t >= next_drift:
            comm.drift(cfg.drift_fraction)
            next_drift += cfg.drift_every
        origin = -1
        if due:
            origin, u, v = due.pop(0)
            k = RETURN
        elif routines and routines[0][0] <= t:
            scheduled, u, v = heapq.heappop(routines)
            k = ROUTINE
            heapq.heappush(routines, (scheduled + cfg.routine_period, u, v))  # same phase next period
        else:
            u = comm.pick_active(t, cfg)
            r = rng.random()
            if r < cfg.p_promise + cfg.p_decoy:
                v = _other_node(rng, n, u)
                k = PROMISE if r < cfg.p_promise else DECOY
            else:
                k = BACKGROUND
                group = comm.members[comm.of[u]]
                if rng.random() < cfg.p_in_community and len(group) > 1:
                    v = int(rng.choice(group[group != u]))
                else:
                    v = _other_node(rng, n, u)
        flagged = k == PROMISE or (k == RETURN and rng.random() < cfg.p_continue)
        src.append(u), dst.append(v), times.append(t), flag.append(float(flagged))
        kind.append(k), promise_of.append(origin), comm_of.append((comm.of[u], comm.of[v]))
        count[u] += 1
        count[v] += 1
        if flagged:
            gap = int(rng.integers(cfg.gap_min, cfg.gap_max + 1))
            entry = [e, u, v, count[u] + gap, count[v] + gap]  # due when both counts reach these
            waiting[u].append(entry)
            waiting[v].append(entry)
        for w in (u, v):
            for entry in list(waiting[w]):
                pe, pu, pv, need_u, need_v = entry
                if count[pu] >= need_u and count[pv] >= need_v:
                    due.append((pe, pu, pv))
                    waiting[pu].remove(entry)
                    waiting[pv].remove(entry)

    noise = rng.random(cfg.num_events)
    data = TemporalData(
        src=torch.tensor(src, dtype=torch.long), dst=torch.tensor(dst, dtype=torch.long),
        t=torch.tensor(times, dtype=torch.float64),
        msg=torch.tensor(np.stack([flag, noise], 1), dtype=torch.float32),
        kind=torch.tensor(kind, dtype=torch.long), promise_of=torch.tensor(promise_of, dtype=torch.long),
        e_id=torch.arange(cfg.num_events))
    return DynamicGraph(data, node_feat, torch.tensor(np.array(comm_of), dtype=torch.long), cfg)


def describe(graph):
    """Counts per event kind and the measured distances of the long-range signals, as a dict."""
    from node_history import events_between  # noqa: E402 (local import: keeps this module standalone)
    d = graph.data
    kinds = {name: int((d.kind == i).sum()) for i, name in enumerate(EVENT_KINDS)}
    ret = torch.nonzero(d.kind == RETURN).flatten()
    gaps = events_between(d, d.promise_of[ret], ret) if len(ret) else torch.zeros(0, 2, dtype=torch.long)
    q = lambda x, p: float(torch.quantile(x.double(), p)) if len(x) else float("nan")
    near = gaps.min(1).values if len(ret) else torch.zeros(0)
    far = gaps.max(1).values if len(ret) else torch.zeros(0)
    rout = torch.nonzero(d.kind == ROUTINE).flatten()
    return {"config": asdict(graph.config), "events": kinds, "hours": float(d.t[-1]),
            "return_gap_events_min_endpoint": {"min": q(near, 0), "median": q(near, .5), "max": q(near, 1)},
            "return_gap_events_max_endpoint": {"min": q(far, 0), "median": q(far, .5), "max": q(far, 1)},
            "routine_meetings": len(rout)}
