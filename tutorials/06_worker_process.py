"""Tracing the next batches in a worker process while this one trains.

    python tutorials/06_worker_process.py [--small]

Running a batch has two halves: running your Python code on every example to record
what to compute (the trace), and computing it batched. ``f.batches(batches)`` moves
the first half to a forked worker process: while this process computes batch k (and
runs your backward pass and optimizer step on its outputs), the worker traces batch
k+1 and sends back a plan, where every batched call and every gather index is
ready. Here the plan runs with no per-example Python at all. How much that saves
depends on how much of a step the trace is: `python -m benchmarks.pipelined` measures
the SST tree-LSTM and an LSTM language model against hand-batched PyTorch.

    for losses in model.loss.batches(batches):      # instead of model.loss.batch(b)
        losses.mean().backward()
        optimizer.step()

The outputs are those of ``.batch``, value for value and gradient for gradient: the
worker traces with the weights of when it was forked, but the plan computes with the
current ones. A batch the worker cannot plan (one whose examples test tensor values
mid-way, say) runs here instead; ``dynnet.profile()`` counts the planned batches and
says why any were not. What changes: your code runs in the worker, so its side effects
other than ``print`` (appending to a list, counting calls) stay there. Use
``workers=0`` for code that needs them.
"""

import sys

import torch

import dynnet
from dynnet import synthetic
from dynnet.models import NaryTreeLSTM
from dynnet.vocab import Vocab


def main(small=False):
    torch.manual_seed(0)
    trees = synthetic.sentiment_trees(256 if small else 2048, seed=1)
    vocab = Vocab(synthetic.VOCABULARY)
    vocab.index_trees(trees)
    batches = [trees[i:i + 32] for i in range(0, len(trees), 32)]
    model = NaryTreeLSTM(len(vocab), embed_dim=32, hidden_dim=32)
    twin = NaryTreeLSTM(len(vocab), embed_dim=32, hidden_dim=32)
    twin.load_state_dict(model.state_dict())

    def train(m, losses_of_batches):
        optimizer = torch.optim.Adam(m.parameters(), lr=0.01)
        total = 0.0
        for losses in losses_of_batches:
            optimizer.zero_grad()
            loss = losses.mean()
            loss.backward()
            optimizer.step()
            total += loss.item()
        return total / len(batches)

    with dynnet.profile() as profile:
        mean_loss = train(model, model.loss.batches(batches))
    print(f"with a worker: mean loss {mean_loss:.4f}, {profile.planned_batches} of "
          f"{profile.batches} batches from the worker's plans")
    print(f"batch by batch: mean loss {train(twin, (twin.loss.batch(b) for b in batches)):.4f}")
    same = all(torch.allclose(p, q, atol=1e-5) for p, q in zip(model.parameters(),
                                                               twin.parameters()))
    print("same parameters after the epoch:", same)

    # A test on a tensor value makes an example pause for its value: the worker cannot
    # go on without computing, so such batches run here, and the profile says why.
    @dynnet.function
    def clipped_norm(x):
        if x.norm() > 1.0:
            return x / x.norm()
        return x

    vectors = [[torch.randn(4) * (i % 3) for i in range(8)] for _ in range(4)]
    with dynnet.profile() as profile:
        for _ in clipped_norm.batches(vectors):
            pass
    print(f"clipped_norm: {profile.planned_batches} planned;", profile.fallbacks[0])


if __name__ == "__main__":
    main(small="--small" in sys.argv)
