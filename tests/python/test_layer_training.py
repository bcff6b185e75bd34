"""nsa.NativeSparseAttention inside a tiny torch model: a few optimizer steps (fixed seed)
lower the loss, and every parameter (projections, gates, phi) receives a gradient."""
import pytest
import torch
from torch import nn

import nsa
from conftest import SMALL


class TinyModel(nn.Module):
    def __init__(self, vocab=16, hidden=32, phi="mlp", shared_kv=True):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.attn = nsa.NativeSparseAttention(hidden, 4, 2, 8, 6, phi=phi, shared_kv=shared_kv, **SMALL)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        x = self.embed(tokens)
        return self.head(self.norm(x + self.attn(x)))


@pytest.mark.parametrize("phi, shared_kv", [("mlp", True), ("linear", False)])
def test_layer_trains(phi, shared_kv):
    """Teacher-student: the student's logits learn to match those of a model with another
    initialisation, on random token sequences long enough for every NSA branch to matter."""
    torch.manual_seed(1)
    teacher = TinyModel(phi=phi, shared_kv=shared_kv)
    torch.manual_seed(0)
    model = TinyModel(phi=phi, shared_kv=shared_kv)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(2)
    losses = []
    for step in range(30):
        tokens = torch.randint(0, 16, (4, 48), generator=gen)
        with torch.no_grad():
            target = teacher(tokens)
        loss = (model(tokens) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for name, p in model.named_parameters():
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
                assert p.grad.abs().sum() > 0 or name.endswith("phi_k.b2"), name
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, losses


def test_layer_varlen_matches_separate_sequences():
    """A packed batch (cu_seqlens) gives each sequence what it gets alone."""
    torch.manual_seed(0)
    layer = nsa.NativeSparseAttention(16, 4, 2, 8, **SMALL)
    a, b = torch.randn(1, 30, 16), torch.randn(1, 45, 16)
    packed = layer(torch.cat((a, b), dim=1), cu_seqlens=torch.tensor([0, 30, 75]))
    alone = torch.cat((layer(a), layer(b)), dim=1)
    assert torch.allclose(packed, alone, rtol=1e-5, atol=1e-6)
