"""Tests of dynnet.synthetic: the negation rule, balance, and that a bag of words fails."""

import collections

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dynnet import synthetic
from dynnet.data import Tree, binary_label


def _value(tree):
    """The rule, written independently (recursively) from the module's version."""
    if tree.is_leaf:
        return 1 if tree.word in synthetic.POSITIVE else -1 if tree.word in synthetic.NEGATIVE \
            else 0
    first = tree.children[0]
    if len(tree.children) == 2 and first.is_leaf and first.word in synthetic.NEGATIONS:
        return -_value(tree.children[1])
    total = sum(_value(c) for c in tree.children)
    return (total > 0) - (total < 0)


def _label(text):
    return synthetic.relabel(Tree.parse(text)).label


def test_negation_flips_its_subtree():
    neg, neutral, pos = 1, 2, 3
    assert _label("(x good)") == pos and _label("(x bad)") == neg
    assert _label("(x (x not) (x good))") == neg
    assert _label("(x (x not) (x (x not) (x good)))") == pos
    assert _label("(x (x never) (x the))") == neutral
    # the same words, the negation scoped differently
    assert _label("(x (x (x not) (x good)) (x bad))") == neg
    assert _label("(x (x good) (x (x not) (x bad)))") == pos
    assert _label("(x (x not) (x (x good) (x bad)))") == neutral
    assert _label("(x (x good) (x bad))") == neutral
    # a negation word that is not the first child negates nothing
    assert _label("(x (x good) (x not))") == pos


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_every_node_label_follows_the_rule(seed):
    for tree in synthetic.sentiment_trees(20, seed=seed):
        assert tree.label in (1, 3)
        for node in tree.nodes():
            assert node.label == synthetic.label_of(_value(node))
            assert node.label == synthetic.label_of(synthetic.sentiment(node))
            assert node.is_leaf == (node.word is not None)
            assert node.is_leaf or len(node.children) == 2


def test_balanced_within_every_bag_of_sentiment_words():
    trees = synthetic.sentiment_trees(2000, seed=1)
    assert len(trees) == 2000
    counts = collections.Counter(t.label for t in trees)
    assert counts[1] == counts[3] == 1000
    per_bag = collections.defaultdict(collections.Counter)
    for t in trees:
        per_bag[synthetic._bag_key(t)][t.label] += 1
    assert all(c[1] == c[3] for c in per_bag.values())
    # negations are frequent, and the trees vary in depth and size
    assert sum(1 for t in trees if any(w in synthetic.NEGATIONS for w in t.leaves())) > 1500
    heights = {t.height() for t in trees}
    assert min(heights) <= 4 and max(heights) >= 10
    assert all(4 <= len(t.leaves()) <= 16 for t in trees)


def test_deterministic_given_the_seed():
    a = synthetic.sentiment_trees(50, seed=7)
    b = synthetic.sentiment_trees(50, seed=7)
    c = synthetic.sentiment_trees(50, seed=8)
    assert all(x.equals(y) for x, y in zip(a, b))
    assert not all(x.equals(y) for x, y in zip(a, c))
    train, dev, test = synthetic.splits(30, 10, 20)
    assert (len(train), len(dev), len(test)) == (30, 10, 20)


def test_labels_are_on_the_sst_scale():
    tree = synthetic.sentiment_trees(2, seed=0)[0]
    assert binary_label(tree.label) in (0, 1)
    assert {binary_label(n.label) for n in tree.nodes()} <= {0, 1, None}
    assert tree.equals(Tree.parse(tree.to_string()))


def _bag_of_words(trees):
    index = {w: i for i, w in enumerate(synthetic.VOCABULARY)}
    x = torch.zeros(len(trees), len(index))
    for row, tree in enumerate(trees):
        for word in tree.leaves():
            x[row, index[word]] += 1
    y = torch.tensor([float(t.label == synthetic.POSITIVE_LABEL) for t in trees])
    return x, y


def test_bag_of_words_logistic_regression_stays_near_chance():
    train, _, test = synthetic.splits(3000, 0, 1000, seed=4)
    x, y = _bag_of_words(train)
    xt, yt = _bag_of_words(test)
    # counts, presence and squared counts: more than enough to count words
    expand = lambda x: torch.cat([x, (x > 0).float(), x ** 2], 1)
    x, xt = expand(x), expand(xt)
    torch.manual_seed(0)
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ w + b, y)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        train_accuracy = ((x @ w + b > 0).float() == y).float().mean().item()
        test_accuracy = ((xt @ w + b > 0).float() == yt).float().mean().item()
    assert 0.44 < test_accuracy < 0.56, test_accuracy
    assert train_accuracy < 0.6, train_accuracy
    # while the tree rule gets every root right
    assert all(synthetic.label_of(_value(t)) == t.label for t in test)


def test_rejects_bad_sizes():
    import pytest

    with pytest.raises(ValueError, match="min_leaves"):
        synthetic.sentiment_trees(5, min_leaves=1)
