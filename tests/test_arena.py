"""Gradients through the round's arenas (backends/arena.py) across backward passes.

The arena keeps one gradient buffer per arena per backward pass; these tests run
passes that a buffer shared between passes would get wrong: two backward passes
over one graph (retain_graph), and a pass that stops early (autograd.grad towards
an intermediate value) followed by a full one; second-order gradients (the buffer is
then updated out of place); and a round must not keep its autograd graph alive once
the loss is gone.
"""

import gc
import weakref

import torch
import torch.nn as nn

import dynnet
from dynnet.backends import arena
from tests.strategies import VOCAB, random_trees


class TreeLSTM(nn.Module):
    def __init__(self, dim=6):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.leaf = nn.Linear(dim, 2 * dim)
        self.internal = nn.Linear(2 * dim, 4 * dim)

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            i, u = torch.chunk(self.leaf(self.embed(torch.tensor(tree.word_id))), 2)
            c = torch.sigmoid(i) * torch.tanh(u)
            return torch.tanh(c), c
        (hl, cl), (hr, cr) = [self.encode(child) for child in tree.children]
        i, fl, fr, u = torch.chunk(self.internal(torch.cat([hl, hr])), 4)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * cl + torch.sigmoid(fr) * cr
        return torch.tanh(c), c


def _loss(model, trees, batched):
    if batched:
        h, _ = model.encode.batch(trees)
    else:
        with dynnet.run_eagerly():
            h = torch.stack([model.encode(t)[0] for t in trees])
    weights = torch.linspace(0.5, 1.5, h.numel()).reshape(h.shape)
    return (h * weights).sum()


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _setup():
    torch.manual_seed(0)
    return TreeLSTM(), random_trees(12, max_depth=6, seed=3)


def _expected_grads_and_batched_loss(model, trees):
    """The gradients of the example-by-example loss, then the batched loss (its
    gradients not taken yet)."""
    _loss(model, trees, batched=False).backward()
    expected = _grads(model)
    model.zero_grad()
    return expected, _loss(model, trees, batched=True)


def test_two_backward_passes_over_one_graph():
    model, trees = _setup()
    expected, loss = _expected_grads_and_batched_loss(model, trees)
    loss.backward(retain_graph=True)
    for got, want in zip(_grads(model), expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    loss.backward()  # the gradients add up: the first pass's buffers are not reused
    for got, want in zip(_grads(model), expected):
        torch.testing.assert_close(got, 2 * want, atol=1e-5, rtol=1e-4)


def test_a_pass_that_stops_early_leaves_the_next_pass_exact():
    model, trees = _setup()
    expected, loss = _expected_grads_and_batched_loss(model, trees)
    # towards the internal layer's weight only: the pass never reaches the leaf
    # groups, first in the arenas, which free a pass's buffers
    (partial,) = torch.autograd.grad(loss, [model.internal.weight], retain_graph=True)
    torch.testing.assert_close(partial, expected[3], atol=1e-5, rtol=1e-4)
    loss.backward()
    for got, want in zip(_grads(model), expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_the_graph_is_freed_with_the_loss(monkeypatch):
    made = weakref.WeakSet()

    class Tracked(arena.RoundGradients):
        __slots__ = ("__weakref__",)

        def __init__(self):
            super().__init__()
            made.add(self)

    monkeypatch.setattr(arena, "RoundGradients", Tracked)
    model, trees = _setup()
    loss = _loss(model, trees, batched=True)
    assert len(made) == 1
    loss.backward()
    del loss
    gc.collect()
    assert len(made) == 0  # nothing holds the round's graph any more


def test_second_order_gradients_through_the_arenas():
    model, trees = _setup()

    def gradient_penalty_grads(batched):
        model.zero_grad()
        loss = _loss(model, trees, batched)
        (g,) = torch.autograd.grad(loss, [model.internal.weight], create_graph=True)
        (g ** 2).sum().backward()
        return g.detach(), [p.grad.clone() for p in model.parameters()]

    want_g, want = gradient_penalty_grads(batched=False)
    got_g, got = gradient_penalty_grads(batched=True)
    torch.testing.assert_close(got_g, want_g, atol=1e-5, rtol=1e-4)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-3)
