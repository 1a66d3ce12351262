"""Direct calls (converter/direct.py): functions that do not pause run without a
generator once calls have shown it, and go back to resumable calls when one waits."""

import sys

import torch
import torch.nn as nn

import dynnet
from dynnet.converter import _ARM_AFTER
from tests.helpers import assert_batch_matches_loop
from tests.strategies import VOCAB, chain_tree, random_trees


class Reduce(nn.Module):
    def __init__(self, dim=5):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.combine = nn.Linear(2 * dim, dim)

    @dynnet.function
    def reduce(self, tree):
        if tree.is_leaf:
            return torch.tanh(self.embed(torch.tensor(tree.word_id)))
        left, right = [self.reduce(child) for child in tree.children]
        return torch.tanh(self.combine(torch.cat([left, right])))


def _sometimes_pausing():
    """A new class (with its own converted function) each call."""

    class SometimesPausing(Reduce):
        @dynnet.function
        def reduce(self, tree):
            if tree.is_leaf:
                return torch.tanh(self.embed(torch.tensor(tree.word_id)))
            left, right = [self.reduce(child) for child in tree.children]
            h = torch.tanh(self.combine(torch.cat([left, right])))
            if tree.label == 4 and h.sum() > 0:  # a pause, on some nodes only
                h = -h
            return h

    return SometimesPausing


def _relabel(trees, label):
    for tree in trees:
        for node in tree.nodes():
            if node.label == 4:
                node.label = label
    return trees


def test_a_function_that_does_not_pause_runs_direct_and_stays_exact():
    torch.manual_seed(0)
    model = Reduce()
    converted = Reduce.reduce.converted
    assert converted.direct is None
    warm = random_trees(8, max_depth=5, seed=1)
    model.reduce.batch(warm)
    assert sum(1 for t in warm for n in t.nodes() if n.is_leaf) >= _ARM_AFTER
    assert converted.direct is not None
    # the twin holds the very code objects of the functions defined inside (segments
    # are looked up by code object)
    nested = [c for c in converted.function.__code__.co_consts if hasattr(c, "co_code")]
    assert nested and all(any(c is t for t in converted.direct.__code__.co_consts)
                          for c in nested)
    # deeper than Python's recursion limit: direct calls nest on Python's stack only
    # up to a small depth, then the driver's explicit stack takes over
    trees = random_trees(10, max_depth=8, seed=2) + [chain_tree(sys.getrecursionlimit() + 50)]
    assert_batch_matches_loop(model.reduce, trees[:10], model.parameters())
    with torch.no_grad():
        deep = model.reduce.batch(trees)
    assert converted.direct is not None
    torch.testing.assert_close(deep[:10], model.reduce.batch(trees[:10]).detach())


def test_a_function_that_starts_to_pause_goes_back_to_resumable_calls():
    torch.manual_seed(0)
    cls = _sometimes_pausing()
    model = cls()
    model.reduce.batch(_relabel(random_trees(8, max_depth=5, seed=1), 3))  # no pause
    assert cls.reduce.converted.direct is not None
    trees = random_trees(12, max_depth=6, seed=4)
    assert any(n.label == 4 and not n.is_leaf for t in trees for n in t.nodes())
    assert_batch_matches_loop(model.reduce, trees, model.parameters())
    assert cls.reduce.converted.direct is None  # a direct call had to wait

    # from now on its pauses batch across examples again: as many rounds as a fresh
    # function that paused from its first calls
    fresh = _sometimes_pausing()()
    fresh.load_state_dict(model.state_dict())
    rounds = []
    for m in (model, fresh):
        with dynnet.profile() as profile:
            m.reduce.batch(trees)
        rounds.append(profile.rounds)
    assert rounds[0] == rounds[1] > 2
