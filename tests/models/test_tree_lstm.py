"""Tree-LSTMs: batched == example by example (forward and gradients), loss semantics,
errors, batching structure."""

import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

import dynnet
from dynnet.data import Tree, read_trees
from dynnet.models import ChildSumTreeLSTM, NaryTreeLSTM
from dynnet.models.classifier import IGNORE_LABEL
from dynnet.vocab import Vocab
from tests.helpers import assert_batch_matches_loop
from tests.strategies import VOCAB, chain_tree, random_tree, random_trees, tree_batches


def small(cls, **kw):
    return cls(VOCAB, embed_dim=8, hidden_dim=12, **kw)


def unary_binary_trees(n, seed):
    """Random trees whose inner nodes have 1 or 2 children."""
    rng = random.Random(seed)

    def build(depth):
        if depth <= 1 or rng.random() < 0.3:
            t = Tree(rng.randrange(5), word="w")
            t.word_id = rng.randrange(VOCAB)
            return t
        return Tree(rng.randrange(5), [build(depth - 1) for _ in range(rng.choice([1, 2, 2]))])

    return [build(6) for _ in range(n)]


@pytest.mark.parametrize("node_loss", [False, True])
@pytest.mark.parametrize("method", ["loss", "predict", "encode"])
def test_nary_batched_equals_per_example(method, node_loss):
    model = small(NaryTreeLSTM, node_loss=node_loss)
    trees = random_trees(12, max_depth=7, seed=3) + [chain_tree(9)]
    assert_batch_matches_loop(getattr(model, method), trees, params=model.parameters())


@pytest.mark.parametrize("node_loss", [False, True])
@pytest.mark.parametrize("method", ["loss", "predict", "encode"])
def test_child_sum_batched_equals_per_example(method, node_loss):
    model = small(ChildSumTreeLSTM, node_loss=node_loss)
    trees = random_trees(12, max_depth=6, seed=4, nary=True)
    assert_batch_matches_loop(getattr(model, method), trees, params=model.parameters())


def test_nary_unary_nodes_and_other_arity():
    model = small(NaryTreeLSTM, node_loss=True)
    assert_batch_matches_loop(model.loss, unary_binary_trees(10, 5), params=model.parameters())
    ternary = small(NaryTreeLSTM, arity=3, num_classes=3)
    trees = random_trees(8, max_depth=5, seed=6, nary=True)
    for t in trees:
        for node in t.nodes():
            node.label %= 3
    assert_batch_matches_loop(ternary.loss, trees, params=ternary.parameters())


@settings(max_examples=12, deadline=None)
@given(tree_batches(max_size=6, max_depth=6))
def test_nary_node_loss_any_batch(trees):
    model = small(NaryTreeLSTM, node_loss=True)
    assert_batch_matches_loop(model.loss, trees, params=model.parameters())


def test_real_sst_trees(sst_dir):
    trees = read_trees(sst_dir / "dev.txt")[:16]
    vocab = Vocab.from_trees(trees)
    vocab.index_trees(trees)
    model = NaryTreeLSTM(len(vocab), embed_dim=16, hidden_dim=16, node_loss=True)
    assert_batch_matches_loop(model.loss, trees, params=model.parameters())


def test_shapes_and_outputs():
    model = small(NaryTreeLSTM, num_classes=3)
    trees = random_trees(4, seed=1)
    for t in trees:
        for node in t.nodes():
            node.label %= 3
    h, c = model.encode.batch(trees)
    assert h.shape == c.shape == (4, 12)
    assert model.predict.batch(trees).shape == (4, 3)
    assert model.loss.batch(trees).shape == (4,)
    assert model.predict(trees[0]).shape == (3,)


def _manual_node_loss(model, tree):
    """The mean, over labelled nodes, of each subtree's root cross-entropy (eager)."""
    losses = []
    with dynnet.run_eagerly():
        for node in tree.nodes():
            if node.label != IGNORE_LABEL:
                losses.append(F.cross_entropy(model.predict(node), torch.tensor(node.label)))
    return torch.stack(losses).mean() if losses else torch.tensor(0.0)


def test_node_loss_is_mean_over_labelled_nodes():
    model = small(NaryTreeLSTM, node_loss=True)
    trees = random_trees(5, seed=8)
    for t in trees[:2]:  # some unlabelled nodes, the root included
        for i, node in enumerate(t.nodes()):
            if i % 3 == 0:
                node.label = IGNORE_LABEL
    got = model.loss.batch(trees)
    for t, g in zip(trees, got):
        torch.testing.assert_close(g, _manual_node_loss(model, t), atol=1e-5, rtol=1e-5)
    root = small(NaryTreeLSTM)
    root.load_state_dict(model.state_dict())
    want = torch.stack([F.cross_entropy(root.predict(t), torch.tensor(t.label))
                        for t in trees[2:]])
    torch.testing.assert_close(root.loss.batch(trees[2:]), want, atol=1e-5, rtol=1e-5)


def test_leaf_is_the_lstm_with_no_children():
    model = small(NaryTreeLSTM)
    leaf = Tree(1, word="w")
    leaf.word_id = 7
    h, c = model.encode(leaf)
    i, o, u = model.leaf.gates(model.leaf.embed.weight[7]).chunk(3)
    want_c = torch.sigmoid(i) * torch.tanh(u)
    torch.testing.assert_close(c, want_c)
    torch.testing.assert_close(h, torch.sigmoid(o) * torch.tanh(want_c))


def test_dropout_trains_batched_and_eval_is_deterministic():
    model = small(NaryTreeLSTM, node_loss=True, dropout=0.5)
    trees = random_trees(6, seed=2)
    model.train()
    loss = model.loss.batch(trees).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    assert_batch_matches_loop(model.predict, trees, params=model.parameters())


def test_too_many_children_is_a_clear_error():
    model = small(NaryTreeLSTM)
    trees = [t for t in random_trees(30, seed=9, nary=True)
             if any(len(n.children) == 3 for n in t.nodes())][:2]
    with pytest.raises(ValueError, match="1 to 2 children, got 3"):
        model.predict.batch(trees)


def test_missing_word_id_is_a_clear_error():
    model = small(NaryTreeLSTM)
    tree = Tree.parse("(1 (2 good) (3 film))")
    with pytest.raises(ValueError, match="index_trees"):
        model.predict.batch([tree])


def test_groups_grow_with_height_not_batch_size():
    model = small(NaryTreeLSTM, node_loss=True)

    def groups(height, batch_size):
        rng = random.Random(batch_size)
        trees = [chain_tree(height - 1)]
        while len(trees) < batch_size:
            t = random_tree(rng, height)
            trees.append(t)
        assert max(t.height() for t in trees) == height
        with dynnet.profile() as p:
            model.loss.batch(trees)
        return p.groups, p.nodes

    for height in (3, 6):
        few, few_nodes = groups(height, 4)
        many, many_nodes = groups(height, 256)
        assert many_nodes > 20 * few_nodes
        # a few levels per tree height; root-only work adds one group per root height
        assert many <= 3 * height + 5
        assert many <= few + height
    assert groups(6, 256)[0] > groups(3, 256)[0]


def test_load_vectors(tmp_path):
    vocab = Vocab(["good", "bad"])
    path = tmp_path / "vectors.txt"
    path.write_text("good 1 2 3 4 5 6 7 8\nzzz 0 0 0 0 0 0 0 0\n")
    model = NaryTreeLSTM(len(vocab), embed_dim=8, hidden_dim=4)
    before = model.embedding.weight[vocab["bad"]].clone()
    assert model.load_vectors(vocab, path) == 1
    torch.testing.assert_close(model.embedding.weight[vocab["good"]],
                               torch.arange(1.0, 9.0))
    torch.testing.assert_close(model.embedding.weight[vocab["bad"]], before)


def test_config_round_trips_constructor_arguments():
    model = NaryTreeLSTM(10, embed_dim=4, hidden_dim=6, num_classes=2, node_loss=True,
                         dropout=0.25, arity=3)
    assert NaryTreeLSTM(**model.config()).config() == model.config()
    assert model.config() == {"vocab_size": 10, "embed_dim": 4, "hidden_dim": 6,
                              "num_classes": 2, "node_loss": True, "dropout": 0.25,
                              "arity": 3}
    with pytest.raises(ValueError, match="vocab_size"):
        NaryTreeLSTM(0)
    with pytest.raises(ValueError, match="dropout"):
        ChildSumTreeLSTM(5, dropout=1.0)
    for bad in ("0.2", None, True):  # a TypeError from a comparison before
        with pytest.raises(ValueError, match="dropout must be a number"):
            NaryTreeLSTM(5, dropout=bad)
