"""Tokens, attention kinds and the link predictor: shapes, equal parameters, exactness, errors."""
import dataclasses

import pytest
import torch
from torch_geometric.data import TemporalData

from attention_kinds import KINDS, FullAttention, WindowAttention
from edge_tokens import pair_tokens
from link_predictor import LinkPredictor, ModelConfig, parameter_counts
from node_history import InteractionHistory

TINY_NSA = dict(block_len=4, stride=2, sel_block=8, top_n=4, window=8)


def tiny_data():
    """6 nodes; node 0 meets 1, 2, 1, 3 then 1 again; times 1..8."""
    src = torch.tensor([0, 0, 4, 0, 5, 0, 2, 0])
    dst = torch.tensor([1, 2, 5, 1, 4, 3, 1, 1])
    t = torch.arange(1, 9, dtype=torch.float64)
    msg = torch.stack([torch.arange(8.0), torch.zeros(8)], 1)
    return TemporalData(src=src, dst=dst, t=t, msg=msg, e_id=torch.arange(8))


def test_history_is_strictly_before_and_in_order():
    h = InteractionHistory(tiny_data(), 6)
    partner, time, msg, valid = h.last(torch.tensor([0, 0, 3]), torch.tensor([4.0, 100.0, 1.0]), 3)
    assert partner[0].tolist() == [1, 2, 0] and valid[0].tolist() == [True, True, False]  # t < 4: events 1, 2
    assert partner[1].tolist() == [1, 3, 1] and time[1].tolist() == [4.0, 6.0, 8.0]      # the last 3, oldest first
    assert msg[1, :, 0].tolist() == [3.0, 5.0, 7.0]
    assert not bool(valid[2].any())                                                          # node 3 before t=1: none


def test_pair_tokens_layout_and_cooccurrence():
    h = InteractionHistory(tiny_data(), 6)
    tok = pair_tokens(h, torch.tensor([0]), torch.tensor([1]), torch.tensor([7.5]), history_len=4)
    # u = 0 before 7.5: partners 2, 1, 3 (times 2, 4, 6) and... last 4 of [1, 2, 1, 3]; v = 1: [0, 0, 2]
    assert tok.partner.shape == (2, 5)
    assert tok.partner[0].tolist() == [1, 2, 1, 3, 1]         # history, then the query token (partner v = 1)
    assert tok.partner[1].tolist() == [0, 0, 2, 0, 0]         # v's history, query token (partner u = 0), padding
    assert tok.lengths.tolist() == [5, 4]
    assert tok.valid[1].tolist() == [True, True, True, True, False]
    # u's tokens: [count in u's history, count in v's history + (partner == v), partner == v]
    assert tok.cooc[0, :4].tolist() == [[2, 1, 1], [1, 1, 0], [2, 1, 1], [1, 0, 0]]
    # v's tokens: [count in v's history, count in u's history + (partner == u), partner == u]
    assert tok.cooc[1, :3].tolist() == [[2, 1, 1], [2, 1, 1], [1, 1, 0]]
    assert tok.cooc[:, -1].abs().sum() == 0 and tok.cooc[1, 3].abs().sum() == 0  # query tokens: zero
    assert tok.delta_t[0, :4].tolist() == [6.5, 5.5, 3.5, 1.5]


def graph_and_tokens(P=3, history_len=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    E, N = 200, 12
    src = torch.randint(0, N, (E,), generator=g)
    dst = (src + torch.randint(1, N, (E,), generator=g)) % N
    data = TemporalData(src=src, dst=dst, t=torch.arange(E, dtype=torch.float64), msg=torch.rand(E, 2, generator=g),
                        e_id=torch.arange(E))
    feat = torch.randn(N, 8, generator=g)
    h = InteractionHistory(data, N)
    tok = pair_tokens(h, torch.randint(0, N, (P,), generator=g), torch.randint(0, N, (P,), generator=g),
                      torch.tensor([5.0, 150.0, 199.5][:P]), history_len)
    return feat, h, tok


def small_cfg():
    return ModelConfig(channel=8, num_heads=2, num_kv_heads=1, head_dim=8, time_dim=8, nsa=TINY_NSA)


@pytest.mark.parametrize("kind", KINDS)
def test_predictor_shapes_and_padding_invariance(kind):
    """One logit per pair, finite, and the same whether a pair is scored alone or in a batch
    with longer (so: padded) sequences: right padding never leaks into a real token."""
    feat, h, tok = graph_and_tokens()
    torch.manual_seed(0)
    model = LinkPredictor(kind, feat, 2, small_cfg()).eval()
    logits = model(tok)
    assert logits.shape == (3,) and bool(torch.isfinite(logits).all())
    assert tok.lengths.min() < tok.lengths.max()  # the batch really is padded
    alone = pair_tokens(h, torch.tensor([int(tok.partner[3, tok.lengths[3] - 1])]),
                        torch.tensor([int(tok.partner[0, tok.lengths[0] - 1])]), torch.tensor([5.0]), 20)
    assert alone.partner.shape[1] < tok.partner.shape[1]
    assert model(alone)[0].item() == pytest.approx(logits[0].item(), abs=1e-5)
    logits.sum().backward()


def test_equal_parameters_except_nsa_gates_and_phi():
    feat, _, _ = graph_and_tokens()
    cfg = ModelConfig()
    counts = {k: parameter_counts(LinkPredictor(k, feat, 2, cfg)) for k in KINDS}
    assert counts["full"] == counts["window"]
    assert counts["full"]["nsa_only"] == 0
    assert counts["nsa"]["total"] - counts["nsa"]["nsa_only"] == counts["full"]["total"]
    h, d, l = cfg.hidden, cfg["head_dim"], cfg["nsa"]["block_len"]
    gate = h * 3 * cfg["num_heads"] + 3 * cfg["num_heads"]
    per_phi = {"mlp": l * d + d * l * d + d + d * d + d,  # pe, w1, b1, w2, b2
               "linear": l * d + d * l * d,                # pe, w
               "mean": 0}[cfg["nsa"]["phi"]]
    phi = 2 * per_phi                                      # phi_k and phi_v
    assert counts["nsa"]["nsa_only"] == cfg["num_layers"] * (gate + phi)


@pytest.mark.parametrize("L, window", [(37, 8), (16, 16), (5, 8), (40, 1)])
def test_window_attention_matches_a_banded_mask(L, window):
    torch.manual_seed(1)
    attn = WindowAttention(16, 4, 2, 8, window)
    x = torch.randn(3, L, 16)
    q, k, v = attn._qkv(x)
    i = torch.arange(L)
    band = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                           attn_mask=band)
    torch.testing.assert_close(attn(x), attn._out(ref), atol=1e-5, rtol=1e-5)
    full = FullAttention(16, 4, 2, 8)
    full.load_state_dict(attn.state_dict())
    if window >= L:
        torch.testing.assert_close(attn(x), full(x), atol=1e-5, rtol=1e-5)


def test_errors_name_the_problem():
    feat, h, tok = graph_and_tokens()
    with pytest.raises(ValueError, match="history_len must be >= 1"):
        pair_tokens(h, torch.tensor([0]), torch.tensor([1]), torch.tensor([3.0]), 0)
    with pytest.raises(ValueError, match="dst ids"):
        pair_tokens(h, torch.tensor([0]), torch.tensor([99]), torch.tensor([3.0]), 4)
    with pytest.raises(ValueError, match="one length"):
        pair_tokens(h, torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([3.0]), 4)
    with pytest.raises(ValueError, match="t holds NaN"):
        pair_tokens(h, torch.tensor([0]), torch.tensor([1]), torch.tensor([float("nan")]), 4)
    with pytest.raises(ValueError, match="NaN"):
        LinkPredictor("full", feat.clone().fill_(float("nan")), 2, small_cfg())
    with pytest.raises(ValueError, match="node_feat must be"):
        LinkPredictor("full", torch.randn(12), 2, small_cfg())
    with pytest.raises(ValueError, match="unknown kind"):
        LinkPredictor("sparse", feat, 2, small_cfg())
    model = LinkPredictor("full", feat, 2, small_cfg())
    with pytest.raises(ValueError, match="msg must have shape"):
        model(dataclasses.replace(tok, msg=tok.msg[..., :1]))
    with pytest.raises(ValueError, match="length 0"):
        model(dataclasses.replace(tok, valid=torch.zeros_like(tok.valid)))
    holey = tok.valid.clone()
    holey[:, 2] = False  # rows longer than 3 now have a real token after a padding one
    with pytest.raises(ValueError, match="prefix"):
        model(dataclasses.replace(tok, valid=holey))
    with pytest.raises(ValueError, match="delta_t holds NaN"):
        model(dataclasses.replace(tok, delta_t=tok.delta_t.clone().fill_(float("nan"))))
    bad = tiny_data()
    bad.msg[3, 0] = float("nan")
    with pytest.raises(ValueError, match="msg"):
        pair_tokens(InteractionHistory(bad, 6), torch.tensor([0]), torch.tensor([1]), torch.tensor([7.5]), 4)
    with pytest.raises(ValueError, match="unknown settings"):
        ModelConfig(heads=3)
    with pytest.raises(Exception, match="top_n"):
        LinkPredictor("nsa", feat, 2, ModelConfig(nsa=dict(top_n=1)))(tok)
