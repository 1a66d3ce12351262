"""Your own dynamic model: a loop whose number of steps depends on the data.

    python tutorials/04_custom_dynamic_model.py [--small]

``Settle`` pushes a vector through a learned contraction until its norm drops to 1:
large vectors take many steps, small ones none. Written for one example, it is a plain
``while`` loop on a tensor value. Run batched, every example runs until it needs the
loop test, the pending work of all examples runs as one batched call, and the loop
goes on for the examples that are not done yet: the batch stays batched while its
examples take different numbers of steps.

The same code runs with ``dynnet.run_eagerly()`` (plain PyTorch, example by example),
which is the reference the batched results are checked against here, and how you
debug a model. ``assert`` works on tensor values too, with the example's index in
the error. ``dynnet.profile()`` shows where code runs op by op instead of as one
recorded node per straight-line run, and why.
"""

import sys
import time

import torch
from torch import nn

import dynnet


class Settle(nn.Module):
    """Iterates ``x <- 0.9 x * sigmoid(W x + b)`` until ``|x| <= 1``, then classifies.

    Each step shrinks the norm by at least 10%, so the loop ends.
    """

    def __init__(self, dim, classes):
        super().__init__()
        self.gate = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, classes)

    @dynnet.function
    def settle(self, x):
        steps = 0
        while x.norm() > 1.0:  # a test on a tensor value: the example pauses here
            x = 0.9 * x * torch.sigmoid(self.gate(x))
            steps += 1
        return x, steps

    @dynnet.function
    def loss(self, x, label):
        h, steps = self.settle(x)
        assert h.norm() <= 1.0, "the loop ends when the norm is at most 1"
        logits = self.out(h)
        return nn.functional.cross_entropy(logits, torch.tensor(label))


def make_data(n, dim, generator):
    """Vectors of very different lengths; the label is the sign of the first entry."""
    scales = torch.exp(torch.empty(n).uniform_(-1, 4, generator=generator))
    xs = torch.randn(n, dim, generator=generator) * scales[:, None]
    labels = (xs[:, 0] > 0).long().tolist()
    return list(xs), labels


def main(small=False):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    dim = 8
    xs, labels = make_data(64 if small else 512, dim, generator)
    model = Settle(dim, 2)

    # 1. batched == eager, forward and backward
    sample_x, sample_y = xs[:6], labels[:6]
    h, steps = model.settle.batch(sample_x)
    print("steps per example:", steps)
    loss = model.loss.batch(sample_x, sample_y).mean()
    loss.backward()
    grad = model.gate.weight.grad.clone()
    model.zero_grad()
    with dynnet.run_eagerly():
        eager = [model.settle(x) for x in sample_x]
        torch.stack([model.loss(x, y) for x, y in zip(sample_x, sample_y)]).mean().backward()
    print("same as eager:", torch.allclose(h, torch.stack([e[0] for e in eager]), atol=1e-6),
          [e[1] for e in eager] == steps,
          torch.allclose(grad, model.gate.weight.grad, atol=1e-6))
    model.zero_grad()

    # 2. train it like any torch model
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for epoch in range(3 if small else 10):
        start = time.perf_counter()
        order = torch.randperm(len(xs), generator=generator).tolist()
        for i in range(0, len(order), 32):
            batch = order[i:i + 32]
            optimizer.zero_grad()
            loss = model.loss.batch([xs[j] for j in batch], [labels[j] for j in batch]).mean()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            h, steps = model.settle.batch(xs)
            accuracy = (model.out(h).argmax(-1) == torch.tensor(labels)).float().mean()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, accuracy {accuracy:.3f}, "
              f"{min(steps)}-{max(steps)} steps, {time.perf_counter() - start:.2f} s")

    # 3. an assert on a tensor value names the example that failed
    @dynnet.function
    def check(x):
        assert x.norm() < 100, "vector too long"
        return x

    try:
        check.batch([torch.ones(3), torch.full((3,), 1000.0)])
    except AssertionError as error:
        print("AssertionError:", str(error).splitlines()[0])

    # 4. where code leaves the fast path: dynnet.profile() names it. A Python number
    # that differs per example (a weight) keys the straight-line run it is used in, so
    # the run cannot be one recorded node; as torch.tensor(weight) it is per-example data.
    @dynnet.function
    def weighted(x, weight):
        y = torch.tanh(model.gate(x)) * weight + x
        return y.sum()

    @dynnet.function
    def weighted_data(x, weight):
        y = torch.tanh(model.gate(x)) * torch.tensor(weight) + x
        return y.sum()

    weights = [0.1 * k for k in range(16)]
    for f in (weighted, weighted_data):
        f.batch(xs[:16], weights)  # the first call captures the run
        with dynnet.profile() as prof:
            f.batch(xs[:16], weights)
        print(f"{f.__name__}: {prof.nodes} nodes in {prof.groups} groups")
        for line in prof.fallbacks:
            print("  ran op by op:", line.rsplit("/", 1)[-1])


if __name__ == "__main__":
    main(small="--small" in sys.argv[1:])
