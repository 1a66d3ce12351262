"""Structure: how many batched groups a batch runs in (not timings)."""

import operator

import pytest
import torch
import torch.nn.functional as F

import dynnet
from tests.helpers import assert_batch_matches_loop
from tests.strategies import random_trees
from tests.test_engine import ModuleTreeLSTM


def _height(tree):
    return 1 if tree.is_leaf else 1 + max(_height(c) for c in tree.children)


@pytest.mark.parametrize("strategy", ["depth", "agenda"])
@pytest.mark.parametrize("max_depth", [3, 6, 9])
def test_internal_cell_runs_in_at_most_height_groups(strategy, max_depth):
    model = ModuleTreeLSTM()
    trees = random_trees(40, max_depth=max_depth, seed=max_depth)
    h = max(_height(t) for t in trees)
    old = dynnet.config.schedule
    dynnet.config.set(schedule=strategy)
    try:
        with torch.no_grad():
            model.loss.batch(trees[:3])  # segments capture their ops on first use
        with dynnet.profile() as prof, torch.no_grad():
            model.loss.batch(trees)
    finally:
        dynnet.config.set(schedule=old)
    leaf, internal = prof.groups_of(model.leaf), prof.groups_of(model.internal)
    assert len(leaf) == 1  # every leaf of every tree in one group
    assert len(internal) <= h - 1  # at most one group per internal level
    n_leaves = sum(len(t.leaves()) for t in trees)
    words = {n.word_id for t in trees for n in t.nodes() if n.is_leaf}
    assert sum(leaf) == len(words)  # one row per word: leaves of a word share it
    assert sum(internal) == sum(t.size() for t in trees) - n_leaves
    assert prof.rounds == 1


def test_groups_do_not_grow_with_batch_size():
    model = ModuleTreeLSTM()
    counts = []
    for n in (5, 50):
        trees = random_trees(n, max_depth=5, seed=1)
        with dynnet.profile() as prof, torch.no_grad():
            model.loss.batch(trees)
        counts.append(prof.groups)
    assert counts[1] <= counts[0] + 15


def test_segments_record_one_node_per_tree_node():
    """Straight-line tensor code (with its `torch.tensor(tree.word_id)` data) becomes one
    node per call once captured: the leaf's and the internal node's bodies. A call on
    data alone records one node per distinct data: one per word for the leaves."""
    model = ModuleTreeLSTM()
    trees = random_trees(20, max_depth=6, seed=4)
    with torch.no_grad():
        model.encode.batch(trees[:2])  # capture
        with dynnet.profile() as prof:
            model.encode.batch(trees)
    leaves = [n for t in trees for n in t.nodes() if n.is_leaf]
    internal = sum(t.size() for t in trees) - len(leaves)
    assert prof.nodes == internal + len({n.word_id for n in leaves})
    assert prof.groups <= max(_height(t) for t in trees)


@pytest.mark.parametrize("n", [30, 300])  # 300: dozens of roots of each height
@pytest.mark.parametrize("grad", [False, True])
def test_head_on_roots_of_different_heights_runs_once(grad, n):
    """The output layer and the loss read the root of trees of many heights: the depth
    schedule runs them as late as possible, in one group each, and values still
    equal the example-by-example ones."""
    model = ModuleTreeLSTM()
    trees = random_trees(n, max_depth=7, seed=11)
    assert len({_height(t) for t in trees}) > 2
    with torch.set_grad_enabled(grad):
        model.loss.batch(trees[:2])  # capture
        with dynnet.profile() as prof:
            losses = model.loss.batch(trees)
    assert prof.groups_of(model.out) == [len(trees)]
    assert prof.groups_of(F.cross_entropy) == [len(trees)]
    with dynnet.run_eagerly():
        expected = torch.stack([model.loss(t) for t in trees])
    torch.testing.assert_close(losses, expected)


@pytest.mark.parametrize("grad", [False, True])
def test_ops_with_a_number_per_example_run_as_one_group(grad):
    """`x / n` with a different Python number per example (a loss divided by each
    sequence's length) is one group, not one per number, at any depth; values and
    gradients equal the loop's."""

    @dynnet.function
    def f(xs, scale):
        h = torch.zeros(3)
        for x in xs:  # as many steps as the sequence is long
            h = torch.tanh(h + x)
        n = len(xs)
        i = torch.tensor(n)  # an int64 value: int and float numbers with it
        return (h / n, 2.5 * n - h, h * scale + n, (i + n) / 2, i / (n + 1), i * 0.5,
                (h * h + 1) ** scale, torch.pow(h.abs() + 1, n), torch.mul(h, scale),
                n ** (h * 0.1))

    g = torch.Generator().manual_seed(0)
    examples = [([torch.randn(3, generator=g) for _ in range(1 + k % 6)], 0.5 + k)
                for k in range(11)]
    with torch.set_grad_enabled(grad):
        with dynnet.profile() as prof:
            assert_batch_matches_loop(f, examples)
    joined = [(sig.fn.fn, sizes) for sig, sizes in prof.group_sizes.items()
              if sig.kind == "numbers"]
    assert {fn for fn, _ in joined} == {operator.truediv, operator.sub, operator.mul,
                                        operator.add, operator.pow, torch.pow, torch.mul}
    assert all(len(sizes) == 1 and sizes[0] % len(examples) == 0 for _, sizes in joined)
    numbered = [sig for sig in prof.group_sizes
                if sig.kind == "op" and any(isinstance(a, (int, float)) for a in sig.template[0])]
    assert all(len(prof.group_sizes[sig]) == 1 for sig in numbered)  # `/ 2`, `* 0.5`
