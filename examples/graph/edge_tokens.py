"""The token sequences of candidate edges: DyGFormer's inputs, laid out for a causal encoder.

For a candidate edge (u, v, t), u's sequence is u's last `history_len` interactions before t,
oldest first, then one query token; v's sequence likewise. In a causal encoder the query
token is the one position that sees the whole history, and the edge is scored from it.
Sequences are right-padded to the longest one (at most history_len + 1 tokens): a causal
model never lets a real token see a padding token (they all come after it), so every
attention kind runs on the padded batch as it is, with no mask and no packing, and pays
for the same L positions.

Per token (DyGFormer, Yu et al. 2023, section 4.1):
  partner    the node interacted with (its features are looked up by the model);
  delta_t    t - t_i in hours (time encoding);
  msg        the interaction's edge features;
  cooc       neighbour co-occurrence, DyGFormer's two counts and one flag (u's side;
             mirrored for v's side):
               [times this partner occurs in u's history,
                times it occurs in v's history + 1 if it is v,
                1 if it is v]
             The "+1 if it is v" is DyGFormer counting each sequence's own node (its first
             token). The third entry is ours: the second count alone cannot tell v from a
             common neighbour, so finding a past meeting with v would first need the
             attention to learn to match node identities from their random features, which
             did not happen within this example's training budget; with the flag
             a past meeting with v is recognisable from its own token, and what is left
             to the attention is reaching it, which is what the comparison measures.
The query token of u's sequence: partner = v, delta_t = 0, msg = 0, cooc = 0. Its
co-occurrence is zero on purpose: DyGFormer's own-node token carries "how often v occurs in
u's history", a summary of the whole history handed to every attention kind alike; here
what the scoring position knows about the far past has to come through attention.
"""
from dataclasses import dataclass

import torch

__all__ = ["PairTokens", "pair_tokens"]


@dataclass
class PairTokens:
    """Inputs for P candidate edges: rows 0..P-1 are the src sides, rows P..2P-1 the dst sides.

    partner [2P, L] long (0 at padding), delta_t [2P, L] float32 (hours), msg [2P, L, m],
    cooc [2P, L, 3] float32, valid [2P, L] bool (a prefix of each row, at least one long);
    the query token of row r is its last valid position, lengths[r] - 1.
    """
    partner: torch.Tensor
    delta_t: torch.Tensor
    msg: torch.Tensor
    cooc: torch.Tensor
    valid: torch.Tensor

    @property
    def num_pairs(self):
        return self.partner.shape[0] // 2

    @property
    def lengths(self):
        """[2P] tokens per sequence, the query token included."""
        return self.valid.sum(1)

    def check(self, num_nodes, msg_dim):
        """Raises ValueError naming the first field with a wrong shape, dtype or value."""
        S, L = self.partner.shape if self.partner.dim() == 2 else (None, None)
        if S is None or S % 2 or S == 0 or L < 1:
            raise ValueError(f"tokens: partner must be [2P, L] with P >= 1, L >= 1, got {list(self.partner.shape)}")
        want = {"delta_t": (S, L), "msg": (S, L, msg_dim), "cooc": (S, L, 3), "valid": (S, L)}
        for name, shape in want.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"tokens: {name} must have shape {list(shape)}, got {list(got)}")
        if self.valid.dtype != torch.bool or self.partner.dtype != torch.long:
            raise ValueError("tokens: valid must be bool and partner long")
        if not bool(self.valid[:, 0].all()):
            raise ValueError("tokens: every sequence needs at least its query token (valid[:, 0] all True): "
                             "a sequence of length 0 has nothing to score")
        if bool((self.valid[:, 1:].long() > self.valid[:, :-1].long()).any()):
            raise ValueError("tokens: valid must be a prefix of each row (right padding)")
        if int(self.partner.min()) < 0 or int(self.partner.max()) >= num_nodes:
            raise ValueError(f"tokens: partner ids must be in [0, {num_nodes})")
        for name in ("delta_t", "msg", "cooc"):
            if not bool(torch.isfinite(getattr(self, name)).all()):
                raise ValueError(f"tokens: {name} holds NaN or infinite values")


def _counts(ids, valid, num_nodes, extra=None):
    """[n, num_nodes]: occurrences of each node among ids[valid] per row (+1 at `extra`)."""
    c = torch.zeros(ids.shape[0], num_nodes).scatter_add_(1, ids, valid.float())
    if extra is not None:
        c[torch.arange(ids.shape[0]), extra] += 1
    return c


def pair_tokens(history, src, dst, t, history_len):
    """PairTokens of the candidate edges (src[i], dst[i], t[i]), each side reading at most
    `history_len` interactions from `history` (an InteractionHistory) strictly before t[i]."""
    if history_len < 1:
        raise ValueError(f"tokens: history_len must be >= 1 (a history of length 0 has no events), got {history_len}")
    src, dst, t = (torch.as_tensor(a) for a in (src, dst, t))
    if not (src.dim() == dst.dim() == t.dim() == 1 and len(src) == len(dst) == len(t) > 0):
        raise ValueError(f"tokens: src, dst, t must be 1-d of one length >= 1, got {list(src.shape)}, "
                         f"{list(dst.shape)}, {list(t.shape)}")
    n = history.num_nodes
    for name, ids in (("src", src), ("dst", dst)):
        if int(ids.min()) < 0 or int(ids.max()) >= n:
            raise ValueError(f"tokens: {name} ids must be in [0, {n})")
    if not bool(torch.isfinite(t.double()).all()):
        raise ValueError("tokens: t holds NaN or infinite values")
    P = len(src)
    nodes, times = torch.cat([src, dst]), torch.cat([t, t]).double()
    partner, when, msg, valid = history.last(nodes, times, history_len)
    if not bool(torch.isfinite(msg).all()):
        raise ValueError("tokens: the history's edge features (msg) hold NaN or infinite values")
    own = _counts(partner, valid, n)                       # [2P, N] per side
    other_side = torch.cat([own[P:], own[:P]])             # the opposite side's counts
    other_side[torch.arange(2 * P), torch.cat([dst, src])] += 1  # DyGFormer's own-node token
    other_end = torch.cat([dst, src])[:, None]                 # v for u's rows, u for v's rows
    cooc = torch.stack([own.gather(1, partner), other_side.gather(1, partner),
                        (partner == other_end).float()], -1) * valid[..., None]
    delta = ((times[:, None] - when) * valid).float()
    # One more column, then the query token at each row's first free position:
    # partner = the other endpoint, everything else zero.
    S, pad = 2 * P, lambda x: torch.cat([x, torch.zeros_like(x[:, :1])], 1)
    partner, delta, msg, cooc, valid = pad(partner), pad(delta), pad(msg), pad(cooc), pad(valid)
    rows, q = torch.arange(S), valid.sum(1)
    partner[rows, q] = torch.cat([dst, src])
    valid[rows, q] = True
    L = int(q.max()) + 1  # columns that are padding in every row are dropped
    return PairTokens(partner=partner[:, :L], delta_t=delta[:, :L], msg=msg[:, :L], cooc=cooc[:, :L],
                      valid=valid[:, :L])
