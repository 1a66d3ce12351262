"""Recursive NN (Socher-style): batched == example by example, and the composition."""

import pytest
import torch
from hypothesis import given, settings

import dynnet
from dynnet.data import Tree
from dynnet.models import RecursiveNN
from tests.helpers import assert_batch_matches_loop
from tests.strategies import VOCAB, chain_tree, random_trees, tree_batches


def small(**kw):
    return RecursiveNN(VOCAB, embed_dim=8, hidden_dim=10, **kw)


@pytest.mark.parametrize("node_loss", [False, True])
@pytest.mark.parametrize("method", ["loss", "predict", "encode"])
def test_batched_equals_per_example(method, node_loss):
    model = small(node_loss=node_loss)
    trees = random_trees(12, max_depth=7, seed=11) + [chain_tree(8)]
    assert_batch_matches_loop(getattr(model, method), trees, params=model.parameters())


@settings(max_examples=10, deadline=None)
@given(tree_batches(max_size=6, max_depth=6))
def test_node_loss_any_batch(trees):
    model = small(node_loss=True)
    assert_batch_matches_loop(model.loss, trees, params=model.parameters())


def _leaf(word_id):
    t = Tree(2, word=f"w{word_id}")
    t.word_id = word_id
    return t


def test_composition_is_tanh_of_linear_on_concatenation():
    model = small()
    tree = Tree(3, [_leaf(4), Tree(1, [_leaf(5), _leaf(6)])])
    leaf = lambda i: torch.tanh(model.leaf.proj(model.leaf.embed.weight[i]))
    W = model.cell.compose
    right = torch.tanh(W(torch.cat([leaf(5), leaf(6)])))
    want = torch.tanh(W(torch.cat([leaf(4), right])))
    torch.testing.assert_close(model.encode(tree), want)
    torch.testing.assert_close(model.encode.batch([tree])[0], want)
    torch.testing.assert_close(model.predict(tree), model.head.out(want))
    with dynnet.run_eagerly():
        torch.testing.assert_close(model.encode(tree), want)


def test_unary_node_pads_with_zeros():
    model = small()
    tree = Tree(1, [_leaf(3)])
    h_leaf = torch.tanh(model.leaf.proj(model.leaf.embed.weight[3]))
    want = torch.tanh(model.cell.compose(torch.cat([h_leaf, torch.zeros(10)])))
    torch.testing.assert_close(model.encode.batch([tree, tree])[1], want)


def test_config():
    model = small(num_classes=2, dropout=0.1)
    assert model.config() == {"vocab_size": VOCAB, "embed_dim": 8, "hidden_dim": 10,
                              "num_classes": 2, "node_loss": False, "dropout": 0.1,
                              "arity": 2}
