"""A data-dependent while loop: ``while x.norm() > 1: x = cell(x)``, per example.

``cell`` is a bias-free ``Linear`` whose weight is 0.9 times an orthogonal matrix, so
each step shrinks the norm by exactly 0.9. The starting vectors have random directions
and norms ``0.9 ** -(k - 0.5)`` with k drawn from 1..50, so example i runs exactly k_i
steps. The loss is the mean squared norm of the results; training here is forward and
backward only (no update), so that the trip counts stay the same across repeats.

- ``naive``: one vector at a time, the Python ``while`` as written.
- ``batched``: all vectors at once, a masked loop that stops when no row is active.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.common import Benchmark, Variant, dynnet_variant

DIM = 128
SHRINK = 0.9
MAX_TRIPS = 50


class Contraction(nn.Module):
    """The loop body: ``cell(x) = 0.9 * Q x`` with Q orthogonal."""

    def __init__(self, dim=DIM, seed=0):
        super().__init__()
        self.config = {"dim": dim, "seed": seed}
        self.cell = nn.Linear(dim, dim, bias=False)
        generator = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        with torch.no_grad():
            self.cell.weight.copy_(SHRINK * q)


def make_vectors(n, dim=DIM, seed=0, device="cpu"):
    """``n`` starting vectors and their exact trip counts (ints in 1..50).

    Returns:
        ``(vectors, trips)``: a list of ``n`` tensors ``[dim]`` and a list of ints.
    """
    generator = torch.Generator().manual_seed(seed)
    trips = torch.randint(1, MAX_TRIPS + 1, (n,), generator=generator)
    directions = torch.randn(n, dim, generator=generator)
    directions /= directions.norm(dim=1, keepdim=True)
    norms = SHRINK ** -(trips.double() - 0.5)
    vectors = (directions.double() * norms[:, None]).float().to(device)
    return list(vectors.unbind(0)), trips.tolist()


def _loss(results):
    return results.pow(2).sum(dim=1).mean()


# -------------------- naive: one vector at a time --------------------

def _shrink(p, x):
    while x.norm() > 1:
        x = p.cell(x)
    return x


def _naive_loss_and_grad(p, xs):
    loss = _loss(torch.stack([_shrink(p, x) for x in xs]))
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _naive_infer(p, xs):
    return torch.stack([_shrink(p, x) for x in xs])


NAIVE = Variant(_naive_loss_and_grad, _naive_infer)


# -------------------- batched: masked loop --------------------

def _masked_shrink(p, xs):
    x = torch.stack(xs)
    active = x.norm(dim=1) > 1
    while active.any():
        x = torch.where(active[:, None], p.cell(x), x)
        active = x.norm(dim=1) > 1
    return x


def _batched_loss_and_grad(p, xs):
    loss = _loss(_masked_shrink(p, xs))
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _batched_infer(p, xs):
    return _masked_shrink(p, xs)


BATCHED = Variant(_batched_loss_and_grad, _batched_infer)

BASELINES = {"naive": NAIVE, "batched": BATCHED}

LABELS = {"naive": "naive per-vector", "batched": "masked batch loop", "dynnet": "dynnet"}
BATCH = 256


def benchmark(n_vectors, device):
    """``n_vectors`` vectors in batches of 256; training has no optimizer step."""
    xs, _ = make_vectors(n_vectors, device=device)
    start = Contraction().to(device)
    variants = {**BASELINES, "dynnet": dynnet_variant("WHILE_LOOP")}
    return Benchmark("while-loop", "vectors", xs, [BATCH], start, variants, None, LABELS)
