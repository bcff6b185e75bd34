#!/usr/bin/env python3
"""Independent oracle for the NSA reference: the spec (../shared/docs/nsa-spec.md) written
again in PyTorch float64, in matrix form with masks, and differentiated by autograd.

It runs nsa_oracle_export (C++), which writes random problems together with the C++
float64 reference's output, selected blocks and gradients, then recomputes all of them
here from the inputs alone and compares. Nothing of the C++ implementation is imported.
Exit status 0 only when every comparison is within tolerance.
"""
import argparse
import json
import math
import pathlib
import subprocess
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a missing oracle is a failure, never a skip
    print(f"FAIL: the oracle needs numpy and torch ({e}); run scripts/setup")
    sys.exit(1)

TOL = 1e-9  # both sides are float64; only summation order differs


def load_case(case_dir):
    meta = json.loads((case_dir / "case.json").read_text())
    tensors = {}
    for name, info in meta["tensors"].items():
        arr = np.fromfile(case_dir / f"{name}.bin", dtype=info["dtype"]).reshape(info["shape"])
        tensors[name] = torch.from_numpy(arr.copy())
    return meta, tensors


def phi(blocks, params, prefix, kind):
    """blocks [N, l, dim] -> [N, dim]."""
    if kind == "mean":
        return blocks.mean(dim=1)
    x = (blocks + params[prefix + "pe"]).reshape(blocks.shape[0], -1)
    if kind == "linear":
        return x @ params[prefix + "w"].T
    hidden = F.gelu(x @ params[prefix + "w1"].T + params[prefix + "b1"], approximate="none")
    return hidden @ params[prefix + "w2"].T + params[prefix + "b2"]


def compress(raw, params, prefix, cfg):
    """raw [T, H_kv, dim] -> [N, H_kv, dim] with block i = raw[i*d : i*d + l]."""
    T, hkv, dim = raw.shape
    l, d = cfg["block_len"], cfg["stride"]
    n = (T - l) // d + 1 if T >= l else 0
    if n == 0:
        return raw.new_zeros((0, hkv, dim))
    idx = torch.arange(n)[:, None] * d + torch.arange(l)[None, :]  # [N, l]
    blocks = raw[idx].permute(0, 2, 1, 3).reshape(n * hkv, l, dim)  # [N*H_kv, l, dim]
    return phi(blocks, params, prefix, cfg["phi"]).reshape(n, hkv, dim)


def masked_attention(q, k, v, mask, scale):
    """q [T,H,dk], k [S,H,dk], v [S,H,dv], mask [H or 1, T, S] -> out [T,H,dv], probs [H,T,S].
    Rows without any visible key give 0 (and probabilities 0), never NaN."""
    s = scale * torch.einsum("thd,shd->hts", q, k)
    has_any = mask.any(dim=-1, keepdim=True)
    fill = torch.where(has_any, torch.tensor(-math.inf, dtype=s.dtype), torch.tensor(0.0, dtype=s.dtype))
    s = torch.where(mask, s, fill)
    p = torch.softmax(s, dim=-1) * mask
    return torch.einsum("hts,shd->thd", p, v), p


def overlap_matrix(n_cmp, n_sel, cfg):
    l, d, ls = cfg["block_len"], cfg["stride"], cfg["sel_block"]
    m = torch.zeros((n_cmp, n_sel), dtype=torch.float64)
    for i in range(n_cmp):
        for j in range(n_sel):
            m[i, j] = max(0, min(i * d + l, (j + 1) * ls) - max(i * d, j * ls)) / d
    return m


def choose_blocks(scores, t, cfg):
    """The spec's selection for query t: forced blocks, then top scores, ties to lower index."""
    ls, n = cfg["sel_block"], cfg["top_n"]
    current = t // ls
    candidates = current + 1
    if candidates <= n:
        return list(range(candidates))
    forced = {j for j in range(min(cfg["n_init"], candidates))}
    forced |= {current - k for k in range(cfg["n_local"]) if current - k >= 0}
    rest = sorted((j for j in range(candidates) if j not in forced), key=lambda j: (-float(scores[j]), j))
    return sorted(forced | set(rest[: n - len(forced)]))


def nsa_sequence(x, params, cfg):
    """One sequence: x holds q [T,H,dk], the branches' k/v [T,H_kv,*] and gates [T,H,3]."""
    q = x["q"]
    T, H, dk = q.shape
    hkv = x["k_cmp"].shape[1]
    G = H // hkv
    scale, l, d, ls, w = cfg["scale"], cfg["block_len"], cfg["stride"], cfg["sel_block"], cfg["window"]
    t = torch.arange(T)
    per_head = lambda kv: kv.repeat_interleave(G, dim=1)  # [*, H_kv, dim] -> [*, H, dim]

    # Branch 1: compression.
    kc = compress(x["k_cmp"], params, "phi_k.", cfg)
    vc = compress(x["v_cmp"], params, "phi_v.", cfg)
    n_cmp = kc.shape[0]
    visible = (torch.arange(n_cmp)[None, :] * d + l - 1) <= t[:, None]  # [T, N]
    o_cmp, p_cmp = masked_attention(q, per_head(kc), per_head(vc), visible[None], scale)

    # Branch 2: selection, shared by the group; no gradient flows through it.
    n_sel = (T + ls - 1) // ls
    group_p = p_cmp.detach().reshape(hkv, G, T, n_cmp).sum(dim=1)  # [H_kv, T, N]
    scores = group_p @ overlap_matrix(n_cmp, n_sel, cfg)  # [H_kv, T, n_sel]
    chosen = torch.full((hkv, T, cfg["top_n"]), -1, dtype=torch.int64)
    sel_mask = torch.zeros((hkv, T, T), dtype=torch.bool)
    causal = t[None, :] <= t[:, None]
    for h in range(hkv):
        for ti in range(T):
            blocks = choose_blocks(scores[h, ti], ti, cfg)
            chosen[h, ti, : len(blocks)] = torch.tensor(blocks)
            for j in blocks:
                sel_mask[h, ti, j * ls : (j + 1) * ls] = True
    sel_mask &= causal[None]
    o_slc, _ = masked_attention(q, per_head(x["k_slc"]), per_head(x["v_slc"]),
                                sel_mask.repeat_interleave(G, dim=0), scale)

    # Branch 3: the window of exactly w tokens.
    win_mask = causal & (t[None, :] >= t[:, None] - w + 1)
    o_win, _ = masked_attention(q, per_head(x["k_win"]), per_head(x["v_win"]), win_mask[None], scale)

    g = x["gates"]
    out = g[..., 0:1] * o_cmp + g[..., 1:2] * o_slc + g[..., 2:3] * o_win
    return out, chosen.permute(1, 0, 2)  # [T, H, dv], [T, H_kv, n]


def relative_error(x, ref):
    den = ref.norm().item()
    num = (x - ref).norm().item()
    if den < 1e-12:  # zero by structure (e.g. phi_k's b2): compare absolutely
        return num
    return num / den


def check_case(case_dir):
    meta, t = load_case(case_dir)
    cfg = {k: meta[k] for k in ("block_len", "stride", "sel_block", "top_n", "n_init", "n_local", "window", "phi", "scale")}
    shared = meta["shared_kv"]
    leaves = {}
    for name in ["q", "k_cmp", "v_cmp", "k_slc", "v_slc", "k_win", "v_win", "gates"]:
        if name in t:
            leaves[name] = t[name].clone().requires_grad_(True)
    params = {n: t[n].clone().requires_grad_(True) for n in t if n.startswith("phi_")}
    for name in ("k", "v"):
        for branch in ("slc", "win"):
            if shared:
                leaves[f"{name}_{branch}"] = leaves[f"{name}_cmp"]

    B, T = t["q"].shape[:2]
    if "cu_seqlens" in t:
        cu = t["cu_seqlens"].tolist()
        spans = [(0, cu[i], cu[i + 1]) for i in range(len(cu) - 1)]
    else:
        spans = [(b, 0, T) for b in range(B)]
    outs, sels = [], []
    for b, start, end in spans:
        if end == start:
            continue
        x = {n: leaves[n][b, start:end] for n in leaves}
        o, sel = nsa_sequence(x, params, cfg)
        outs.append((b, start, end, o))
        sels.append((b, start, end, sel))
    out = torch.zeros_like(t["ref.out"])
    out_parts = {}
    for b, start, end, o in outs:
        out_parts[(b, start)] = o
    # Assemble without in-place writes into a leaf-derived tensor.
    rows = []
    for b in range(B):
        pieces = [out_parts[(bb, s)] for (bb, s, e, _) in outs if bb == b]
        rows.append(torch.cat(pieces, dim=0) if pieces else out[b])
    out = torch.stack(rows, dim=0)
    sel = torch.full_like(t["ref.sel_blocks"], -1)
    for b, start, end, s in sels:
        sel[b, start:end] = s

    results = []
    results.append(("out", relative_error(out.detach(), t["ref.out"])))
    mismatched = int((sel != t["ref.sel_blocks"]).any(dim=-1).sum())
    results.append(("sel_blocks (rows differing)", float(mismatched)))

    loss = (out * t["d_out"]).sum()
    names = [n for n in ["q", "gates", "k_cmp", "v_cmp", "k_slc", "v_slc", "k_win", "v_win"] if n in t]
    tensors = [leaves[n] for n in names] + list(params.values())
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    for name, g in zip(names + list(params.keys()), grads):
        key = "grad." + name
        # With shared K/V the C++ side wrote one gradient, the sum over branches.
        if shared and name in ("k_cmp", "v_cmp"):
            key = f"grad.{name[0]}_cmp"
        g = torch.zeros_like(t[key]) if g is None else g
        results.append((key, relative_error(g, t[key])))

    ok = True
    for name, err in results:
        good = err == 0.0 if name.startswith("sel_blocks") else err < TOL
        ok &= good
        print(f"{'OK  ' if good else 'FAIL'} {meta['name']:<24} {name:<28} {'rel_err' if not name.startswith('sel') else 'count'} = {err:.3e}")
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", required=True, help="path of the nsa_oracle_export program")
    ap.add_argument("--workdir", required=True, help="folder for the exported cases")
    args = ap.parse_args()
    workdir = pathlib.Path(args.workdir)
    subprocess.run([args.export, str(workdir)], check=True)
    torch.set_default_dtype(torch.float64)
    ok = True
    for case_dir in sorted(p for p in workdir.iterdir() if (p / "case.json").exists()):
        ok &= check_case(case_dir)
    print("oracle:", "all checks passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
