"""nsa.native_sparse_attention against the independent PyTorch oracle of the spec
(tests/oracle/nsa_torch_oracle.py), forward and backward, in float32 (the fast kernels;
spec tolerances 1e-5 forward, 1e-4 gradients) and float64 (the reference)."""
import pytest
import torch

import nsa
from conftest import SMALL, leaves, make_problem, op_kwargs, oracle_forward, positional, rel_err, with_leaves

PAPER = dict(block_len=32, stride=16, sel_block=64, top_n=16, n_init=1, n_local=2, window=512)

CASES = {
    "mlp-shared-G3": (dict(B=2, T=96, H=6, H_kv=2, d_k=8, d_v=6, phi="mlp"), SMALL),
    "linear-independent-G1": (dict(B=1, T=80, H=2, H_kv=2, d_k=8, d_v=8, phi="linear", shared=False), SMALL),
    "mean-varlen-G2": (dict(B=1, T=120, H=4, H_kv=2, d_k=6, d_v=10, phi="mean", cu_seqlens=[0, 50, 50, 120]), SMALL),
    "mlp-independent-varlen-G4": (dict(B=1, T=70, H=4, H_kv=1, d_k=8, d_v=4, phi="mlp", shared=False,
                                       cu_seqlens=[0, 7, 70]), SMALL),
    "mlp-paper-defaults": (dict(B=1, T=1100, H=2, H_kv=1, d_k=16, d_v=16, phi="mlp"), PAPER),
}
TOL = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-10, 1e-9)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_against_oracle(name, dtype):
    args, cfg = CASES[name]
    p64 = make_problem(dtype=torch.float64, seed=2, cfg=cfg, **args)
    phi = args["phi"]
    # The op on inputs rounded to dtype; the oracle on the same values in float64.
    p = with_leaves(p64, dtype)
    ref = with_leaves(p, torch.float64)
    out = nsa.native_sparse_attention(*positional(p), **op_kwargs(p), phi=phi, **cfg)
    out_ref = oracle_forward(ref, cfg, phi)
    assert out.dtype == dtype and out.shape == out_ref.shape
    assert torch.isfinite(out).all()
    fwd_tol, grad_tol = TOL[dtype]
    assert rel_err(out, out_ref) < fwd_tol

    d_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grads = torch.autograd.grad((out * d_out.to(dtype)).sum(), [t for _, t in leaves(p)])
    grads_ref = torch.autograd.grad((out_ref * d_out).sum(), [t for _, t in leaves(ref)], allow_unused=True)
    for (n, _), g, g_ref in zip(leaves(p), grads, grads_ref):
        g_ref = torch.zeros_like(g, dtype=torch.float64) if g_ref is None else g_ref
        assert g.dtype == dtype and torch.isfinite(g).all(), n
        assert rel_err(g, g_ref) < grad_tol, f"{n}: {rel_err(g, g_ref):.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_selection_matches_oracle(dtype):
    """The blocks the C++ forward chose (kept in its saved state) are the oracle's."""
    cfg = SMALL
    p = make_problem(B=2, T=96, H=6, H_kv=2, d_k=8, d_v=6, phi="mlp", dtype=dtype, seed=4)
    config = nsa.Config(**cfg, phi="mlp")
    out = torch.empty(2, 96, 6, 6, dtype=dtype)
    gates = torch.stack((p["g_cmp"], p["g_slc"], p["g_win"]), dim=-1)
    saved = nsa._core.forward(config, p["q"], p["k"], p["v"], p["k"], p["v"], p["k"], p["v"], gates,
                              p["phi_k"], p["phi_v"], None, out, True)
    sel = torch.from_numpy(saved.sel_blocks()).reshape(2, 96, 2, cfg["top_n"])
    ref = with_leaves(p, torch.float64)
    ocfg = dict(cfg, phi="mlp", scale=8 ** -0.5)
    params = {f"{pre}.{n}": t for pre in ("phi_k", "phi_v") for n, t in ref[pre].items()}
    for b in range(2):
        x = {n: ref[src][b] for n, src in (("q", "q"), ("k_cmp", "k"), ("v_cmp", "v"), ("k_slc", "k"),
                                            ("v_slc", "v"), ("k_win", "k"), ("v_win", "v"))}
        x["gates"] = gates[b].double()
        _, chosen = oracle.nsa_sequence(x, params, ocfg)
        assert torch.equal(sel[b].long(), chosen)
    assert (sel[:, 40:] >= 0).all() and (sel.amax(dim=-1) >= 3).any()  # selection is not trivial


from conftest import oracle  # noqa: E402
