"""Quickstart: write a model for ONE example, run it on a batch.

    python tutorials/01_quickstart.py [--small]

1. Decorate a per-example method with ``@dynnet.function``: plain Python recursion
   over a tree, an ``if`` on the tree's shape.
2. ``f(x)`` runs one example; ``f.batch(xs)`` runs many differently-shaped examples
   as a few batched torch calls, and is differentiable.
3. ``dynnet.to_code(f)`` shows what dynnet converted your function into.
4. ``dynnet.run_eagerly()`` runs it unconverted, one example at a time, for debugging.
5. ``print`` inside a converted function prints per example, as plain Python would.
"""

import sys
import time

import torch
from torch import nn

import dynnet
from dynnet.data import Tree
from dynnet.vocab import Vocab


class TreeEncoder(nn.Module):
    """A recursive network: a leaf is its word's embedding, an inner node combines its
    two children."""

    def __init__(self, vocab_size, dim):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.combine = nn.Linear(2 * dim, dim)
        self.out = nn.Linear(dim, 2)

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            return self.embed(torch.tensor(tree.word_id))
        left, right = tree.children
        both = torch.cat([self.encode(left), self.encode(right)])
        return torch.tanh(self.combine(both))

    @dynnet.function
    def loss(self, tree):
        logits = self.out(self.encode(tree))
        return nn.functional.cross_entropy(logits, torch.tensor(tree.label))


@dynnet.function
def describe(tree, h):
    """A per-example print: each example prints its own line, in order."""
    print("words:", len(tree.leaves()), "first feature:", h[0])
    return h


def main(small=False):
    torch.manual_seed(0)
    texts = [
        "(1 (0 not) (1 (1 very) (1 good)))",
        "(0 (0 dull) (0 (0 and) (0 slow)))",
        "(1 fun)",
        "(1 (1 (1 a) (1 clever)) (1 (1 little) (1 film)))",
    ]
    trees = [Tree.parse(t) for t in texts]
    vocab = Vocab.from_trees(trees)
    vocab.index_trees(trees)  # sets tree.word_id on every leaf
    model = TreeEncoder(len(vocab), dim=8)

    print("1. one example:", tuple(model.encode(trees[0]).shape))
    h = model.encode.batch(trees)  # 4 trees of 3, 3, 1 and 4 words
    print("2. a batch of differently-shaped trees:", tuple(h.shape))

    one_by_one = torch.stack([model.encode(t) for t in trees])
    print("   same as one at a time:", torch.allclose(h, one_by_one, atol=1e-6))

    loss = model.loss.batch(trees).mean()  # differentiable: train as usual
    loss.backward()
    batched_grad = model.combine.weight.grad.clone()
    model.zero_grad()
    with dynnet.run_eagerly():  # 4. plain Python, plain torch: step through it in pdb
        torch.stack([model.loss(t) for t in trees]).mean().backward()
    print("   gradients match eager PyTorch:",
          torch.allclose(batched_grad, model.combine.weight.grad, atol=1e-6))

    print("3. the converted source of TreeEncoder.encode:")
    print(dynnet.to_code(TreeEncoder.encode))

    print("5. print inside a converted function:")
    with torch.no_grad():
        describe.batch(trees, h)

    # A bigger batch: every tree node of the same kind at the same depth shares one
    # torch call, so many trees cost little more than one.
    many = trees * (8 if small else 64)
    start = time.perf_counter()
    with torch.no_grad():
        model.encode.batch(many)
    print(f"encoded {len(many)} trees in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main(small="--small" in sys.argv[1:])
