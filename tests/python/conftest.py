"""Shared fixtures of the Python tests: random NSA problems and the independent oracle.

The oracle is tests/oracle/nsa_torch_oracle.py (the spec re-implemented in PyTorch float64,
differentiated by autograd), imported as a module: nothing of the C++ library is in it.
"""
import importlib.util
import pathlib

import torch

import nsa

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_oracle():
    spec = importlib.util.spec_from_file_location("nsa_torch_oracle", ROOT / "tests" / "oracle" / "nsa_torch_oracle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


oracle = _load_oracle()

# A small configuration where every rule is active at T ~ 40..100: several compressed
# blocks per selection block, more candidates than top_n, a window shorter than T.
SMALL = dict(block_len=4, stride=2, sel_block=8, top_n=3, n_init=1, n_local=1, window=6)


def make_phi(phi, l, dim, dtype, gen, hidden=None):
    hidden = dim if hidden is None else hidden
    shapes = nsa._common.phi_shapes(phi, l, dim, hidden)  # the library's table, in its order
    scale = {"pe": 0.5, "w1": (l * dim) ** -0.5, "b1": 0.1, "w2": hidden ** -0.5, "b2": 0.1, "w": (l * dim) ** -0.5}
    return {n: (torch.randn(s, generator=gen, dtype=torch.float64) * scale[n]).to(dtype) for n, s in shapes.items()} or None


def make_problem(B=1, T=40, H=3, H_kv=1, d_k=4, d_v=5, phi="mlp", shared=True, dtype=torch.float64,
                 seed=0, cu_seqlens=None, cfg=SMALL, phi_hidden=None):
    """Random inputs of the op: dict with q, k, v, g_cmp, g_slc, g_win, (k_slc ... v_win), phi_k, phi_v."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda *shape: torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    p = dict(q=rnd(B, T, H, d_k), k=rnd(B, T, H_kv, d_k), v=rnd(B, T, H_kv, d_v))
    g = torch.rand((B, T, H, 3), generator=gen, dtype=torch.float64).to(dtype)
    p.update(g_cmp=g[..., 0].contiguous(), g_slc=g[..., 1].contiguous(), g_win=g[..., 2].contiguous())
    if not shared:
        p.update(k_slc=rnd(B, T, H_kv, d_k), v_slc=rnd(B, T, H_kv, d_v), k_win=rnd(B, T, H_kv, d_k), v_win=rnd(B, T, H_kv, d_v))
    p["phi_k"] = make_phi(phi, cfg["block_len"], d_k, dtype, gen, phi_hidden)
    p["phi_v"] = make_phi(phi, cfg["block_len"], d_v, dtype, gen, phi_hidden)
    if cu_seqlens is not None:
        p["cu_seqlens"] = torch.tensor(cu_seqlens, dtype=torch.int64)
    return p


def oracle_forward(p, cfg, phi):
    """The oracle's output for a problem from make_problem (tensors may require grad)."""
    q = p["q"]
    B, T, H, d_k = q.shape
    ocfg = dict(cfg, phi=phi, scale=cfg.get("scale") or d_k ** -0.5)
    params = {}
    for prefix in ("phi_k", "phi_v"):
        for n, t in (p[prefix] or {}).items():
            params[f"{prefix}.{n}"] = t
    gates = torch.stack((p["g_cmp"], p["g_slc"], p["g_win"]), dim=-1)
    branch = {"k_cmp": p["k"], "v_cmp": p["v"], "k_slc": p.get("k_slc", p["k"]), "v_slc": p.get("v_slc", p["v"]),
              "k_win": p.get("k_win", p["k"]), "v_win": p.get("v_win", p["v"])}
    if p.get("cu_seqlens") is not None:
        cu = p["cu_seqlens"].tolist()
        spans = [(0, cu[i], cu[i + 1]) for i in range(len(cu) - 1)]
    else:
        spans = [(b, 0, T) for b in range(B)]
    rows = []
    for b in range(B):
        pieces = []
        for bb, start, end in spans:
            if bb != b or end == start:
                continue
            x = {n: t[b, start:end] for n, t in branch.items()}
            x.update(q=q[b, start:end], gates=gates[b, start:end])
            pieces.append(oracle.nsa_sequence(x, params, ocfg)[0])
        rows.append(torch.cat(pieces, dim=0))
    return torch.stack(rows, dim=0)


def op_kwargs(p):
    """The op's keyword arguments of a problem (everything but the positional tensors)."""
    return {n: t for n, t in p.items() if n not in ("q", "k", "v", "g_cmp", "g_slc", "g_win")}


def positional(p):
    return [p[n] for n in ("q", "k", "v", "g_cmp", "g_slc", "g_win")]


def leaves(p):
    """Every tensor of the problem that gets a gradient, in a fixed order, as (name, tensor)."""
    out = [(n, p[n]) for n in ("q", "k", "v", "g_cmp", "g_slc", "g_win", "k_slc", "v_slc", "k_win", "v_win") if n in p]
    for prefix in ("phi_k", "phi_v"):
        out += [(f"{prefix}.{n}", t) for n, t in (p[prefix] or {}).items()]
    return out


def with_leaves(p, dtype=None):
    """A copy of the problem whose differentiable tensors are fresh leaves requiring grad."""
    q = {}
    for n, t in p.items():
        if n in ("phi_k", "phi_v"):
            q[n] = None if t is None else {k: v.detach().to(dtype or v.dtype).requires_grad_() for k, v in t.items()}
        elif n == "cu_seqlens":
            q[n] = t
        else:
            q[n] = t.detach().to(dtype or t.dtype).requires_grad_()
    return q


def rel_err(x, ref):
    """||x - ref|| / ||ref||; absolute where ref is zero by structure (phi_k's b2: a shift of
    every compressed key leaves the softmax unchanged), as in the oracle."""
    x, ref = x.detach().double(), ref.detach().double()
    den = ref.norm().item()
    return (x - ref).norm().item() / (den if den >= 1e-12 else 1.0)


# The fp32 kernels' results are reproducible for a fixed thread count; CI has 2 cores.
nsa.set_num_threads(2)
# torch's own threads only slow these tiny problems down (badly on a busy machine).
torch.set_num_threads(1)
