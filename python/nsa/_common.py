"""Argument handling shared by the torch and NumPy front ends (no torch import here)."""
import functools

from . import _core

# The parameters of each compression function phi, their order (the order the autograd op
# passes them) and shapes come from the library's one table (nsa/phi_fields.h) through
# _core.phi_fields(phi, block_len, dim, hidden) -> [(name, shape)].


@functools.lru_cache(maxsize=256)
def make_config(block_len, stride, sel_block, top_n, n_init, n_local, window, scale, phi, phi_hidden):
    """A validated nsa.Config (raises nsa.Error naming the bad parameter). Cached: Configs are immutable."""
    return _core.Config(block_len=block_len, stride=stride, sel_block=sel_block, top_n=top_n,
                        n_init=n_init, n_local=n_local, window=window,
                        scale=0.0 if scale is None else float(scale), phi=phi, phi_hidden=phi_hidden)


@functools.lru_cache(maxsize=8)
def phi_names(phi):
    """The names of phi's parameters, in the op's order (raises nsa.Error on an unknown kind)."""
    return tuple(name for name, _ in _core.phi_fields(phi, 1, 1, 1))


def phi_shapes(phi, block_len, dim, hidden):
    """{name: shape} of phi's parameters for block length l, head dim `dim`, mlp width `hidden`."""
    return {name: tuple(shape) for name, shape in _core.phi_fields(phi, block_len, dim, hidden)}


def check_phi_dict(params, phi, name):
    """params: a mapping name -> array, or None when phi='mean'. Returns a plain dict or None."""
    names = phi_names(phi)
    if params is None:
        if names:
            raise _core.Error(f"nsa: {name} is None but phi={phi} needs parameters {', '.join(names)}")
        return None
    params = dict(params)
    if not names and params:
        raise _core.Error(f"nsa: phi=mean takes no parameters, got {name} with {', '.join(params)}")
    return params


def phi_hidden_of(phi, phi_k, phi_v, d_k, d_v):
    """The library's single phi_hidden (0: the head dim) from the shapes of w1 in phi_k / phi_v."""
    if phi != "mlp" or phi_k is None or phi_v is None or "w1" not in phi_k or "w1" not in phi_v:
        return 0
    hk, hv = int(phi_k["w1"].shape[0]), int(phi_v["w1"].shape[0])
    if hk == d_k and hv == d_v:
        return 0
    if hk == hv:
        return hk
    raise _core.Error(f"nsa: phi_k.w1 has hidden size {hk} and phi_v.w1 {hv}: they must be equal, "
                      f"or each equal its head dim ({d_k} and {d_v})")
