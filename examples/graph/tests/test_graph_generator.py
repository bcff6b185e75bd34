"""The generator's promises: seeded, long gaps beyond the window, periodicity, drift."""
import dataclasses

import numpy as np
import pytest
import torch

import graph_generator as gg
from link_predictor import ModelConfig
from node_history import events_between

CFG = gg.GraphConfig(num_nodes=60, num_communities=5, num_events=8000)  # ~270 events per node


@pytest.fixture(scope="module")
def graph():
    return gg.generate(CFG)


def test_seeded_determinism(graph):
    again = gg.generate(CFG)
    for key in ("src", "dst", "t", "msg", "kind", "promise_of"):
        assert torch.equal(graph.data[key], again.data[key]), key
    assert torch.equal(graph.node_feat, again.node_feat)
    other = gg.generate(dataclasses.replace(CFG, seed=1))
    assert not torch.equal(graph.data.dst, other.data.dst)


def test_events_well_formed(graph):
    d = graph.data
    assert len(d) == CFG.num_events
    assert bool((d.t[1:] > d.t[:-1]).all()), "times strictly increase"
    assert bool((d.src != d.dst).all()), "no self-loops"
    flagged = d.msg[:, 0] == 1
    assert bool(flagged[d.kind == gg.PROMISE].all()), "every promise is flagged"
    assert not bool(flagged[(d.kind != gg.PROMISE) & (d.kind != gg.RETURN)].any()), "only chains are flagged"
    ret = torch.nonzero(d.kind == gg.RETURN).flatten()
    assert len(ret) > 0.05 * len(d)
    cont = float(flagged[ret].float().mean())
    assert cont == pytest.approx(CFG.p_continue, abs=0.05)
    p = d.promise_of[ret]
    assert bool((p < ret).all()) and bool(flagged[p].all()), "a return follows a flagged meeting of the pair"
    assert bool(torch.isin(d.kind[p], torch.tensor([gg.PROMISE, gg.RETURN])).all())
    assert torch.equal(d.src[p], d.src[ret]) and torch.equal(d.dst[p], d.dst[ret])
    assert bool((d.promise_of[d.kind != gg.RETURN] == -1).all())


def test_returns_lie_beyond_the_window(graph):
    """Both endpoints had >= gap_min other interactions between a promise and its return, and
    gap_min exceeds the window of the default model: window attention cannot see the promise."""
    d = graph.data
    ret = torch.nonzero(d.kind == gg.RETURN).flatten()
    gaps = events_between(d, d.promise_of[ret], ret)
    window = ModelConfig()["nsa"]["window"]
    assert CFG.gap_min > window
    assert int(gaps.min()) >= CFG.gap_min
    assert float(gaps.min(1).values.double().median()) <= CFG.gap_max  # the slower endpoint decides


def test_decoys_never_return(graph):
    d = graph.data
    assert not bool(torch.isin(torch.nonzero(d.kind == gg.DECOY).flatten(), d.promise_of).any())


def test_daily_periodicity(graph):
    """The hourly event count has its strongest non-zero frequency at one cycle per day."""
    d = graph.data
    hours = np.bincount(d.t.numpy().astype(int))
    spectrum = np.abs(np.fft.rfft(hours - hours.mean()))
    freq = np.fft.rfftfreq(len(hours), d=1.0)
    peak = freq[1 + np.argmax(spectrum[1:])]
    assert peak == pytest.approx(1 / CFG.day_length, rel=0.05)


def test_routine_pairs_meet_once_per_period(graph):
    d = graph.data
    rout = torch.nonzero(d.kind == gg.ROUTINE).flatten()
    pair = (torch.minimum(d.src[rout], d.dst[rout]) * 1000 + torch.maximum(d.src[rout], d.dst[rout])).numpy()
    t = d.t[rout].numpy()
    intervals = np.concatenate([np.diff(t[pair == p]) for p in np.unique(pair) if (pair == p).sum() > 1])
    assert len(intervals) > 20
    assert np.median(intervals) == pytest.approx(CFG.routine_period, abs=1.0)
    assert np.all(np.abs(intervals - CFG.routine_period) < 5.0)


def test_communities_drift_and_shape_background(graph):
    d, comm = graph.data, graph.community
    bg = d.kind == gg.BACKGROUND
    same = (comm[bg, 0] == comm[bg, 1]).float().mean()
    expect = CFG.p_in_community + (1 - CFG.p_in_community) / CFG.num_communities
    assert float(same) == pytest.approx(expect, abs=0.03)
    # Drift: a node's community at its first event differs from that at its last for many.
    n = graph.num_nodes
    first, last = torch.full((n,), -1), torch.full((n,), -1)
    for col, nodes in ((0, d.src), (1, d.dst)):
        for e in range(len(d)):
            u = int(nodes[e])
            if first[u] < 0:
                first[u] = comm[e, col]
            last[u] = comm[e, col]
    moved = float((first != last).float().mean())
    assert 0.1 < moved < 0.9


@pytest.mark.parametrize("field, value, match", [
    ("num_nodes", 3, "num_nodes"), ("day_amplitude", 1.0, "day_amplitude"),
    ("gap_min", 0, "gap_min"), ("p_promise", 0.99, "p_promise"), ("p_continue", 1.0, "p_continue"), ("routine_period", 0.0, "routine_period"),
])
def test_bad_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        gg.generate(gg.GraphConfig(**{field: value}))
