"""nsa.DecodeCache (nsa::DecodeCache): decoding token by token gives the rows of the op's
output on the same tokens (fp32 tolerance 1e-5), for shared and independent K/V, batched
steps over sequences of different lengths, the layer's decode path, and save/load.
storage="bf16": within the spec's bf16 tolerance (1e-2) of the fp32 cache and of the op,
half the chunk bytes, save/load, mismatched files and unknown storage names refused."""
import numpy as np
import pytest
import torch

import nsa
from conftest import SMALL, make_problem, op_kwargs, positional, rel_err


def cache_for(p, max_seqs=1, **kw):
    H, d_k = p["q"].shape[2:]
    H_kv, d_v = p["v"].shape[2:]
    return nsa.DecodeCache(H, H_kv, d_k, d_v, phi_k=p["phi_k"], phi_v=p["phi_v"], shared_kv="k_slc" not in p,
                           max_seqs=max_seqs, **SMALL, **kw)


def branch_kv(p, at):
    return {n: at(p[n]) for n in ("k_slc", "v_slc", "k_win", "v_win") if n in p}


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "independent"])
def test_prefill_then_steps_match_the_op(shared):
    p = make_problem(B=1, T=60, H=4, H_kv=2, d_k=8, d_v=6, dtype=torch.float32, shared=shared, seed=11)
    full = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)[0]
    cache = cache_for(p)
    P = 21
    head = lambda t: t[0, :P]
    o = cache.prefill(0, *(head(t) for t in positional(p)), **branch_kv(p, head))
    assert o.shape == (P, 4, 6) and rel_err(o, full[:P]) < 1e-5
    for t in range(P, 60):
        row = lambda x: x[:, t]
        o = cache.step([0], *(row(x) for x in positional(p)), **branch_kv(p, row))
        assert rel_err(o[0], full[t]) < 1e-5, t
    assert cache.position(0) == 60 and cache.num_cmp_blocks(0) == nsa.Config(**SMALL).num_cmp_blocks(60)
    read = cache.tokens_read(0, 1)
    assert read["total"] == read["cmp"] + read["slc"] + read["win"] and read["win"] == SMALL["window"]
    # The last token's selection is the op's (its saved state) for row 59.
    gates = torch.stack((p["g_cmp"], p["g_slc"], p["g_win"]), -1)
    kv = [p.get(n, p[n[0]]) for n in ("k_slc", "v_slc", "k_win", "v_win")]
    saved = nsa._core.forward(cache.config, p["q"], p["k"], p["v"], *kv, gates, p["phi_k"], p["phi_v"],
                              None, torch.empty(1, 60, 4, 6), True)
    for h in range(2):
        assert cache.selected_blocks(0, h) == [b for b in saved.sel_blocks()[59, h] if b >= 0]


def test_batched_steps_over_sequences_of_different_lengths():
    a = make_problem(B=1, T=50, H=3, H_kv=1, d_k=4, d_v=4, dtype=torch.float32, seed=12)
    b = make_problem(B=1, T=50, H=3, H_kv=1, d_k=4, d_v=4, dtype=torch.float32, seed=13)
    b["phi_k"], b["phi_v"] = a["phi_k"], a["phi_v"]  # one layer: one phi
    full = [nsa.native_sparse_attention(*positional(x), **op_kwargs(x), **SMALL)[0] for x in (a, b)]
    cache = cache_for(a, max_seqs=3)
    cache.prefill(2, *(t[0, :30] for t in positional(a)))   # sequence ids need not be dense
    cache.prefill(0, *(t[0, :12] for t in positional(b)))
    for i in range(20):
        ta, tb = 30 + i, 12 + i
        xs = [torch.stack((x[0, ta], y[0, tb])) for x, y in zip(positional(a), positional(b))]
        o = cache.step([2, 0], *xs)
        assert rel_err(o[0], full[0][ta]) < 1e-5 and rel_err(o[1], full[1][tb]) < 1e-5
    assert (cache.position(2), cache.position(0), cache.position(1)) == (50, 32, 0)
    cache.reset(2)
    assert cache.position(2) == 0 and cache.memory()["tokens"] == 32


def test_numpy_arrays_and_append():
    p = make_problem(B=1, T=40, H=2, H_kv=2, d_k=4, d_v=4, dtype=torch.float32, seed=14)
    full = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)[0].numpy()
    cache = cache_for(p)
    arrays = [t[0].numpy() for t in positional(p)]
    cache.append(0, arrays[1][:35], arrays[2][:35])  # K/V only, no outputs
    out = np.empty((5, 2, 4), dtype=np.float32)
    res = cache.prefill(0, *(x[35:] for x in arrays), out=out)  # continues token by token
    assert res is out
    np.testing.assert_allclose(out, full[35:], rtol=1e-5, atol=1e-6)


def test_layer_decode_matches_forward():
    torch.manual_seed(0)
    layer = nsa.NativeSparseAttention(16, 4, 2, 8, shared_kv=False, **SMALL)
    x = torch.randn(2, 36, 16)
    with torch.no_grad():
        full = layer(x)
    cache = layer.new_cache(max_seqs=2)
    first = [layer.decode(x[b:b + 1, :20], cache, seqs=[b]) for b in range(2)]
    for b in range(2):
        assert rel_err(first[b][0], full[b, :20]) < 1e-5
    for t in range(20, 36):
        y = layer.decode(x[:, t:t + 1], cache, seqs=[0, 1])
        assert rel_err(y[:, 0], full[:, t]) < 1e-5


def test_save_and_load_resume_decoding(tmp_path):
    p = make_problem(B=1, T=48, H=2, H_kv=1, d_k=4, d_v=4, dtype=torch.float32, seed=15)
    full = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)[0]
    cache = cache_for(p)
    cache.prefill(0, *(t[0, :30] for t in positional(p)))
    cache.save(tmp_path / "cache.bin")
    restored = cache_for(p)
    restored.load(tmp_path / "cache.bin")
    assert restored.position(0) == 30
    for t in range(30, 48):
        o = restored.step([0], *(x[:, t] for x in positional(p)))
        assert rel_err(o[0], full[t]) < 1e-5
    other = make_problem(B=1, T=48, H=2, H_kv=1, d_k=4, d_v=4, dtype=torch.float32, seed=16)
    with pytest.raises(nsa.Error, match="phi"):  # another layer's weights
        cache_for(other).load(tmp_path / "cache.bin")
    with pytest.raises(nsa.Error):
        restored.load(tmp_path / "missing.bin")


def test_one_sequence_moves_between_caches(tmp_path):
    p = make_problem(B=1, T=48, H=2, H_kv=1, d_k=4, d_v=4, dtype=torch.float32, seed=18)
    full = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)[0]
    source = cache_for(p, max_seqs=2)
    source.prefill(1, *(t[0, :30] for t in positional(p)))
    source.save_sequence(1, tmp_path / "seq.bin")
    target = cache_for(p, max_seqs=3)
    target.prefill(0, *(t[0, :10] for t in positional(p)))  # a sequence of its own
    target.load_sequence(2, tmp_path / "seq.bin")
    assert (target.position(0), target.position(2)) == (10, 30)
    for t in range(30, 40):
        o = target.step([2], *(x[:, t] for x in positional(p)))
        assert rel_err(o[0], full[t]) < 1e-5
    assert target.position(0) == 10
    with pytest.raises(nsa.Error):
        target.load_sequence(2, tmp_path / "missing.bin")
    assert target.position(2) == 40  # kept
    with pytest.raises(nsa.Error, match="unknown sequence"):
        source.save_sequence(5, tmp_path / "x.bin")


def test_decode_errors():
    p = make_problem(B=1, T=20, H=2, H_kv=1, d_k=4, d_v=4, dtype=torch.float32, seed=17)
    cache = cache_for(p, max_seqs=2, max_tokens=24)
    row = lambda t: [x[:, t] for x in positional(p)]
    with pytest.raises(nsa.Error, match="unknown sequence id 5"):
        cache.step([5], *row(0))
    with pytest.raises(nsa.Error, match="listed twice"):
        cache.step([0, 0], *[torch.cat((x, x)) for x in row(0)])
    with pytest.raises(TypeError, match="q has dtype float64, expected float32"):
        cache.step([0], *[x.double() for x in row(0)])
    with pytest.raises(nsa.Error, match="shares K/V between branches"):
        cache.step([0], *row(0), k_slc=torch.zeros(1, 1, 4))
    with pytest.raises(nsa.Error, match=r"phi_k.w1: expected shape \[4,16\]"):
        nsa.DecodeCache(2, 1, 4, 4, phi_k=dict(p["phi_k"], w1=torch.zeros(4, 4)), phi_v=p["phi_v"], **SMALL)
    cache.prefill(0, *(t[0] for t in positional(p)))
    with pytest.raises(nsa.Error, match="sequence 0 is full"):
        cache.prefill(0, *(t[0] for t in positional(p)))
    assert cache.position(0) == 20  # all-or-nothing


# ---- bf16 storage ----------------------------------------------------------------------
# Spec, "Tolerances": bf16 storage with fp32 accumulation, 1e-2 relative. A row whose chosen
# blocks differ from the fp32 cache's (a near-tie of the importance scores flipped by the
# rounding; tests/test_decode_bf16.cc checks that rule against the reference) is not held
# to it, but such rows must be rare: at most 5% (the C++ test's bound). Measured here: the
# other rows ~3e-3 together, the prefill equal to the steps to ~1e-7.
BF16_TOL = 1e-2


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "independent"])
def test_bf16_cache_steps_are_close_to_fp32_and_to_the_op(shared):
    T, H_kv = 60, 2
    p = make_problem(B=1, T=T, H=4, H_kv=H_kv, d_k=8, d_v=6, dtype=torch.float32, shared=shared, seed=11)
    full = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), **SMALL)[0]
    c32, c16 = cache_for(p), cache_for(p, storage="bf16")
    assert (c32.storage, c16.storage) == ("fp32", "bf16") and c16._cache.shape["storage"] == "bf16"
    o32, o16, same_blocks = [], [], []
    for t in range(T):
        row = lambda x: x[:, t]
        o32.append(c32.step([0], *(row(x) for x in positional(p)), **branch_kv(p, row))[0])
        o16.append(c16.step([0], *(row(x) for x in positional(p)), **branch_kv(p, row))[0])
        same_blocks.append(all(c16.selected_blocks(0, h) == c32.selected_blocks(0, h) for h in range(H_kv)))
    o32, o16, same = torch.stack(o32), torch.stack(o16), torch.tensor(same_blocks)
    assert same.sum() >= 0.95 * T
    assert 0 < rel_err(o16[same], o32[same]) < BF16_TOL   # > 0: the values were rounded
    assert rel_err(o16[same], full[same]) < BF16_TOL
    # Prefill of an empty bf16 cache is the same function as its steps (fp32 tolerance).
    whole = lambda x: x[0]
    prefilled = cache_for(p, storage="bf16").prefill(0, *(whole(x) for x in positional(p)), **branch_kv(p, whole))
    assert rel_err(prefilled, o16) < 1e-5


def test_bf16_cache_halves_the_chunk_bytes():
    p = make_problem(B=1, T=40, H=2, H_kv=1, d_k=8, d_v=8, dtype=torch.float32, shared=False, seed=18)
    m32, m16 = cache_for(p).memory(), cache_for(p, storage="bf16").memory()
    assert m16["chunk_tokens"] == m32["chunk_tokens"] and 2 * m16["chunk_bytes"] == m32["chunk_bytes"]
    assert 2 * m16["bytes_per_token"] == m32["bytes_per_token"]


def test_bf16_save_and_load(tmp_path):
    p = make_problem(B=1, T=48, H=2, H_kv=1, d_k=4, d_v=4, dtype=torch.float32, seed=15)
    cache = cache_for(p, storage="bf16")
    cache.prefill(0, *(t[0, :30] for t in positional(p)))
    cache.save(tmp_path / "bf16.bin")
    restored = cache_for(p, storage="bf16")
    restored.load(tmp_path / "bf16.bin")
    assert restored.position(0) == 30 and restored.memory() == cache.memory()
    for t in range(30, 48):  # the restored cache continues exactly as the saved one
        row = [x[:, t] for x in positional(p)]
        assert torch.equal(restored.step([0], *row), cache.step([0], *row))
    fp32 = cache_for(p)
    fp32.prefill(0, *(t[0, :5] for t in positional(p)))
    with pytest.raises(nsa.Error, match="written by a cache with bf16 storage, this cache stores fp32"):
        fp32.load(tmp_path / "bf16.bin")
    assert fp32.position(0) == 5  # kept
    fp32.save(tmp_path / "fp32.bin")
    with pytest.raises(nsa.Error, match="fp32 storage, this cache stores bf16"):
        restored.load(tmp_path / "fp32.bin")


def test_layer_new_cache_bf16():
    torch.manual_seed(0)
    layer = nsa.NativeSparseAttention(16, 4, 2, 8, shared_kv=False, **SMALL)
    x = torch.randn(2, 36, 16)
    with torch.no_grad():
        full = layer(x)
    cache = layer.new_cache(max_seqs=2, storage="bf16")
    assert cache.storage == "bf16"
    first = torch.cat([layer.decode(x[b:b + 1, :20], cache, seqs=[b]) for b in range(2)])
    rest = torch.cat([layer.decode(x[:, t:t + 1], cache, seqs=[0, 1]) for t in range(20, 36)], dim=1)
    assert rel_err(torch.cat((first, rest), dim=1), full) < BF16_TOL


@pytest.mark.parametrize("storage", ["float32", "BF16", "fp16", "", None, 1, torch.bfloat16],
                         ids=lambda s: repr(s))
def test_unknown_storage_is_refused(storage):
    p = make_problem(B=1, T=4, H=2, H_kv=1, d_k=4, d_v=4, dtype=torch.float32, seed=19)
    with pytest.raises(ValueError, match="storage must be 'fp32' or 'bf16', got"):
        cache_for(p, storage=storage)


def test_unknown_storage_is_refused_by_the_binding():
    config = nsa.Config(**SMALL, phi="mean")
    with pytest.raises(nsa.Error, match="storage must be 'fp32' or 'bf16', got 'fp16'"):
        nsa._core.DecodeCache(config, 2, 1, 4, 4, True, 1, 0, 0, None, None, "fp16")


def test_fork_truncate_and_the_memory_budget():
    """fork shares a prefix (one copy in memory) and the fork decodes like its source;
    truncate rolls back (the next step repeats the dropped one); max_pages refuses a call
    that would exceed it, naming the budget, and changes nothing."""
    p = make_problem(B=1, T=40, H=4, H_kv=2, d_k=8, d_v=6, dtype=torch.float32, seed=21)
    cache = cache_for(p, max_seqs=2, chunk_tokens=16)
    cache.prefill(0, *(t[0, :30] for t in positional(p)))
    cache.fork(0, 1)
    m = cache.memory()
    assert cache.position(1) == 30 and m["chunks"] == 2 and m["shared_chunks"] == 2
    row = [x[:, 30] for x in positional(p)]
    a, b = cache.step([0], *row), cache.step([1], *row)
    assert torch.equal(a, b)
    cache.truncate(1, 30)
    assert cache.position(1) == 30 and torch.equal(cache.step([1], *row), b)
    with pytest.raises(nsa.Error, match="cannot keep 99"):
        cache.truncate(0, 99)
    with pytest.raises(nsa.Error, match="reset it first"):
        cache.fork(0, 1)
    tight = cache_for(p, max_seqs=2, chunk_tokens=16, max_pages=2)
    tight.prefill(0, *(t[0, :30] for t in positional(p)))
    with pytest.raises(nsa.Error, match="memory budget.*max_pages = 2"):
        tight.prefill(1, *(t[0, :30] for t in positional(p)))
    assert tight.position(1) == 0 and tight.memory()["chunks"] == 2 and tight.memory()["max_chunks"] == 2


def test_multi_token_step_equals_one_token_steps():
    p = make_problem(B=1, T=40, H=4, H_kv=2, d_k=8, d_v=6, dtype=torch.float32, seed=22)
    multi, single = cache_for(p), cache_for(p)
    for c in (multi, single):
        c.prefill(0, *(t[0, :20] for t in positional(p)))
    drafts = multi.step([0], *(x[:, 20:24] for x in positional(p)))  # [1, 4, H, d_v]
    assert drafts.shape == (1, 4, 4, 6)
    for j in range(4):
        assert torch.equal(drafts[:, j], single.step([0], *(x[:, 20 + j] for x in positional(p))))
    multi.truncate(0, 22)  # two drafts rejected
    single.truncate(0, 22)
    row = [x[:, 30] for x in positional(p)]
    assert torch.equal(multi.step([0], *row), single.step([0], *row))
