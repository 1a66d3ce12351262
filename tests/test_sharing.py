"""Calls on per-example data alone share one node per distinct data within a batch
(op level: a module applied to `torch.tensor(word_id)`; the segment level is in
test_segments.py)."""

import torch
import torch.nn as nn

import dynnet
from dynnet.models import NaryTreeLSTM, RecursiveNN
from tests.helpers import assert_batch_matches_loop
from tests.strategies import random_trees


def _trees(n, seed, words=5):
    trees = random_trees(n, max_depth=5, seed=seed)
    for t in trees:
        for node in t.nodes():
            if node.is_leaf:
                node.word_id %= words  # few words: many leaves share one
    return trees


def _leaf_count(trees):
    return sum(1 for t in trees for n in t.nodes() if n.is_leaf)


def _word_count(trees):
    return len({n.word_id for t in trees for n in t.nodes() if n.is_leaf})


def _leaf_rows(model, trees):
    with dynnet.profile() as prof:
        model.encode.batch(trees)
    return sum(prof.groups_of(model.leaf))


def test_leaves_of_a_word_share_a_row_in_the_reference_models():
    trees = _trees(12, seed=3)
    assert _word_count(trees) < _leaf_count(trees)
    for cls in (NaryTreeLSTM, RecursiveNN):
        torch.manual_seed(0)
        model = cls(20, embed_dim=6, hidden_dim=7, node_loss=True)
        assert _leaf_rows(model, trees) == _word_count(trees), cls.__name__
        # values and gradients as example by example (a shared row's gradient summed)
        assert_batch_matches_loop(model.loss, trees, params=list(model.parameters()))


def test_leaves_share_a_row_in_the_node_loss_too():
    trees = _trees(12, seed=5, words=3)
    for t in trees:
        for node in t.nodes():
            node.label = node.word_id % 2 if node.is_leaf else node.label
    distinct = len({(n.word_id, n.label) for t in trees for n in t.nodes() if n.is_leaf})
    assert distinct < _leaf_count(trees)
    for cls in (NaryTreeLSTM, RecursiveNN):
        torch.manual_seed(0)
        model = cls(20, embed_dim=6, hidden_dim=7, node_loss=True)
        with dynnet.profile() as prof:
            model.loss.batch(trees)
        # one row per distinct (word, label): a leaf's step and its loss
        assert sum(prof.groups_of(model._with_loss["leaf"])) == distinct, cls.__name__
        assert_batch_matches_loop(model.loss, trees, params=list(model.parameters()))
        model.head.dropout.p = 0.5  # a mask per call: a row per leaf while training
        with dynnet.profile() as prof:
            model.loss.batch(trees)
        assert sum(prof.groups_of(model._with_loss["leaf"])) == _leaf_count(trees)


def test_dropout_keeps_a_row_per_leaf_while_training():
    trees = _trees(10, seed=4)
    torch.manual_seed(0)
    model = NaryTreeLSTM(20, embed_dim=6, hidden_dim=7, dropout=0.5)
    assert _leaf_rows(model, trees) == _leaf_count(trees)  # a mask per leaf
    model.eval()  # no masks: leaves of a word share again
    assert _leaf_rows(model, trees) == _word_count(trees)


class Noisy(nn.Module):
    """A module that does not say it is deterministic."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)

    def forward(self, word):
        return self.embed(word) + torch.randn(3)


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.leaf = Noisy()

    @dynnet.function
    def encode(self, word):
        return self.leaf(_word(word))


def _word(w):
    return torch.tensor(w)


@dynnet.function
def inverse(x):
    return torch.reciprocal(_word(x))  # 1 / -0.0 is -inf, 1 / 0.0 is inf


def test_unknown_modules_and_float_data_keep_a_row_per_call():
    model = Plain()
    with dynnet.profile() as prof:
        model.encode.batch([1, 1, 2, 1])
    assert sum(prof.groups_of(model.leaf)) == 4
    with dynnet.profile() as prof:
        out = inverse.batch([0.0, -0.0, 0.0, 2, 2])
    assert out.tolist() == [float("inf"), -float("inf"), float("inf"), 0.5, 0.5]
    assert sorted(prof.groups_of(torch.reciprocal)) == [1, 3]  # floats: 3; the 2s: 1
