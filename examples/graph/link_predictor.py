"""A DyGFormer-style link predictor whose attention is nsa, full or window.

  tokens (edge_tokens.PairTokens, [2P, L])
    -> TokenEmbedding: four channels of `channel` dims each, concatenated (DyGFormer 4.1):
         neighbour  Linear(node features of the partner)
         edge       Linear(msg)
         time       Linear(PyG TimeEncoder(delta_t)): cos(w dt + b), DyGLib's fixed
                    frequencies w = 10^-linspace(0, 9), not trained (as in DyGFormer)
         cooc       MLP(1 -> c -> c) on each co-occurrence entry, summed (DyGFormer's
                    NeighborCooccurrenceEncoder; edge_tokens.py adds a third entry)
       -> x [2P, L, hidden = 4 * channel]
    -> HistoryEncoder: `num_layers` pre-norm blocks x + attn(LN x), x + FFN(LN x) (FFN
       hidden -> 2 hidden -> hidden, GELU); causal; the output at the query token (the last
       real position, which sees the whole history) -> [2P, hidden]
    -> EdgeScorer: MLP([h_u, h_v]) -> one logit per candidate edge [P].

Differences from DyGFormer, on purpose: causal attention with a query token at the end
instead of bidirectional attention over the two concatenated sequences with mean pooling
(NSA is causal); no patching (one token per interaction: the attention kind, not a patch
size, decides how much history is read); the query token's co-occurrence is zero (see
edge_tokens.py); the co-occurrence's third entry, "this partner is the other endpoint"
(edge_tokens.py says why).
"""

import torch
from torch import nn
from torch_geometric.nn.models.tgn import TimeEncoder

from attention_kinds import make_attention

__all__ = ["ModelConfig", "LinkPredictor", "parameter_counts"]


class ModelConfig(dict):
    """Model settings with their defaults; any key can be overridden by keyword (nsa: only
    the keys given). hidden = 4 * channel; scale: the softmax scale of every attention kind
    (None: 1 / sqrt(head_dim)); nsa: the NSA layer's block settings, whose `window` is also
    the window attention's. The NSA blocks are scaled to 256-event histories: the local
    block (n_local = 1, 16 tokens) and the window (8) stay short of the generator's shortest
    return gap (16 events), so the long-range signal must come through compression and
    selection (README, "Why this NSA configuration")."""

    DEFAULTS = dict(channel=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=32, time_dim=16,
                    scale=None, nsa=dict(block_len=8, stride=4, sel_block=16, top_n=6, n_init=1,
                                         n_local=1, window=8, phi="linear"))

    def __init__(self, **overrides):
        super().__init__(self.DEFAULTS)
        nsa_over = overrides.pop("nsa", {})
        self.update(overrides)
        self["nsa"] = {**self.DEFAULTS["nsa"], **nsa_over}
        unknown = set(self) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(f"model: unknown settings {sorted(unknown)}")

    @property
    def hidden(self):
        return 4 * self["channel"]


class TokenEmbedding(nn.Module):
    def __init__(self, node_feat, msg_dim, channel, time_dim):
        super().__init__()
        self.register_buffer("node_feat", node_feat.float(), persistent=False)  # fixed inputs, not trained
        self.neighbour = nn.Linear(node_feat.shape[1], channel)
        self.edge = nn.Linear(msg_dim, channel)
        self.time_enc = TimeEncoder(time_dim)
        with torch.no_grad():  # DyGLib's TimeEncoder: w_i = 10^(-9 i / (dim - 1)), b = 0, frozen
            self.time_enc.lin.weight.copy_((1 / 10 ** torch.linspace(0, 9, time_dim))[:, None])
            self.time_enc.lin.bias.zero_()
        self.time_enc.requires_grad_(False)
        self.time = nn.Linear(time_dim, channel)
        self.cooc = nn.Sequential(nn.Linear(1, channel), nn.ReLU(), nn.Linear(channel, channel))

    def forward(self, tok):
        S, L = tok.partner.shape
        nb = self.neighbour(self.node_feat[tok.partner])
        ed = self.edge(tok.msg)
        tm = self.time(self.time_enc(tok.delta_t.reshape(-1)).view(S, L, -1))
        co = self.cooc(tok.cooc[..., None]).sum(2)
        return torch.cat([nb, ed, tm, co], -1) * tok.valid[..., None]  # padding tokens are 0


class Block(nn.Module):
    def __init__(self, kind, cfg):
        super().__init__()
        h = cfg.hidden
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.attn = make_attention(kind, h, cfg["num_heads"], cfg["num_kv_heads"], cfg["head_dim"], cfg["nsa"], cfg["scale"])
        self.ffn = nn.Sequential(nn.Linear(h, 2 * h), nn.GELU(), nn.Linear(2 * h, h))

    def forward(self, x, last=None):
        """x [S, L, hidden] -> [S, L, hidden]; with `last` ([S] positions) only those rows'
        outputs, [S, hidden] (the last block: only the query tokens are read)."""
        x = x + self.attn(self.ln1(x))
        if last is not None:
            x = x[torch.arange(len(last)), last]
        return x + self.ffn(self.ln2(x))


class LinkPredictor(nn.Module):
    """logits = model(tokens): [P] for the P candidate edges of a PairTokens."""

    def __init__(self, kind, node_feat, msg_dim, cfg=None):
        super().__init__()
        cfg = ModelConfig() if cfg is None else cfg
        if node_feat.dim() != 2 or not bool(torch.isfinite(node_feat).all()):
            raise ValueError(f"model: node_feat must be a finite [num_nodes, dim] tensor, got shape "
                             f"{list(node_feat.shape)}" + ("" if node_feat.dim() != 2 else " with NaN or inf"))
        self.kind, self.cfg, self.msg_dim = kind, cfg, msg_dim
        self.num_nodes = node_feat.shape[0]
        h = cfg.hidden
        self.embed = TokenEmbedding(node_feat, msg_dim, cfg["channel"], cfg["time_dim"])
        self.blocks = nn.ModuleList(Block(kind, cfg) for _ in range(cfg["num_layers"]))
        self.ln_out = nn.LayerNorm(h)
        self.scorer = nn.Sequential(nn.Linear(2 * h, h), nn.ReLU(), nn.Linear(h, 1))

    def encode(self, tok):
        """[2P, hidden]: each sequence's representation at its query token."""
        x = self.embed(tok)
        query = tok.lengths - 1
        for i, block in enumerate(self.blocks):
            x = block(x, last=query if i == len(self.blocks) - 1 else None)
        return self.ln_out(x)

    def forward(self, tok):
        tok.check(self.num_nodes, self.msg_dim)
        z = self.encode(tok)
        P = tok.num_pairs
        return self.scorer(torch.cat([z[:P], z[P:]], -1)).squeeze(-1)


def parameter_counts(model):
    """{'total': n, 'attention': n, 'nsa_only': n}: nsa_only counts g_proj and phi_k / phi_v."""
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    attn = sum(p.numel() for b in model.blocks for p in b.attn.parameters())
    extra = 0
    for b in model.blocks:
        layer = getattr(b.attn, "layer", None)
        if layer is not None:
            extra += sum(p.numel() for m in (layer.g_proj, layer.phi_k, layer.phi_v) for p in m.parameters())
    return {"total": total, "attention": attn, "nsa_only": extra}
