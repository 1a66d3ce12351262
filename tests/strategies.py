"""Random trees and sequences for oracle tests (plain random and hypothesis)."""

import random

import torch
from hypothesis import strategies as st

from dynnet.data import Tree

VOCAB = 50


def random_tree(rng, max_depth, p_leaf=0.3, nary=False):
    """A random tree; binary unless `nary` (then 1-3 children per internal node)."""
    if max_depth <= 1 or rng.random() < p_leaf:
        t = Tree(rng.randrange(5), word=f"w{rng.randrange(VOCAB)}")
        t.word_id = int(t.word[1:])
        return t
    k = rng.choice([1, 2, 3]) if nary else 2
    return Tree(rng.randrange(5), [random_tree(rng, max_depth - 1, p_leaf, nary) for _ in range(k)])


def random_trees(n, max_depth=6, seed=0, nary=False):
    rng = random.Random(seed)
    return [random_tree(rng, max_depth, nary=nary) for _ in range(n)]


def chain_tree(depth):
    """A left-leaning chain of `depth` internal nodes (height depth + 1)."""
    t = Tree(1, word="w1")
    t.word_id = 1
    for i in range(depth):
        leaf = Tree(2, word="w2")
        leaf.word_id = 2
        t = Tree(i % 5, [t, leaf])
    return t


@st.composite
def trees(draw, max_depth=5, nary=False):
    seed = draw(st.integers(0, 2**31 - 1))
    return random_tree(random.Random(seed), max_depth, nary=nary)


@st.composite
def tree_batches(draw, max_size=8, max_depth=5, nary=False):
    """Batches of random trees; binary unless `nary` (1-3 children per inner node)."""
    return draw(st.lists(trees(max_depth, nary), min_size=1, max_size=max_size))


@st.composite
def sequence_batches(draw, dim=4, max_len=7, max_size=6):
    lengths = draw(st.lists(st.integers(1, max_len), min_size=1, max_size=max_size))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=g) for n in lengths]
