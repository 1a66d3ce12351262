"""A generated sentiment treebank where the tree structure decides the label.

Words are positive ("good"), negative ("bad"), neutral ("the") or negations ("not").
Every node's sentiment follows one rule, applied bottom-up:

- a leaf: +1 for a positive word, -1 for a negative word, 0 otherwise;
- a node whose first child is a negation leaf, ``(not X)``: minus the sentiment of X;
- any other node: the sign of the sum of its children's sentiments.

Labels use the Stanford Sentiment Treebank scale, so SST code reads both sets:
1 negative, 2 neutral, 3 positive (0 and 4 are not used); ``dynnet.data.binary_label``
maps them to 0/1 and drops neutral nodes.

Where a negation sits decides the label: "(not good) bad" is negative and
"good (not bad)" is positive, with the same words. ``sentiment_trees`` keeps, for every
bag of sentiment-bearing words (how many positive, negative and negation words), as many
positive as negative roots, so a bag-of-words classifier stays near chance, while a
model that composes along the tree can reach 100%.

    trees = sentiment_trees(1000, seed=0)
    train, dev, test = splits(seed=0)          # the data `dynnet train` uses by default
"""

from __future__ import annotations

import random

from dynnet.data import Tree

__all__ = [
    "NEGATIONS",
    "NEGATIVE",
    "NEUTRAL",
    "POSITIVE",
    "VOCABULARY",
    "label_of",
    "relabel",
    "sentiment",
    "sentiment_trees",
    "splits",
]

POSITIVE = ("good", "great", "fine", "nice", "superb", "lovely", "fun", "clever")
NEGATIVE = ("bad", "awful", "poor", "dull", "boring", "weak", "silly", "messy")
NEUTRAL = ("the", "movie", "plot", "film", "story", "cast", "was", "is", "and", "a",
           "it", "this")
NEGATIONS = ("not", "never")
VOCABULARY = POSITIVE + NEGATIVE + NEUTRAL + NEGATIONS

NEGATIVE_LABEL, NEUTRAL_LABEL, POSITIVE_LABEL = 1, 2, 3

_POLARITY = {**{w: 1 for w in POSITIVE}, **{w: -1 for w in NEGATIVE}}
_NEGATION = frozenset(NEGATIONS)


def label_of(value):
    """The SST-scale label of a sentiment in {-1, 0, 1}: 1, 2 or 3."""
    return NEUTRAL_LABEL + value


def sentiment(tree):
    """The sentiment (-1, 0 or 1) of ``tree`` under the rule in the module docstring."""
    values = {}
    for node in tree.nodes():
        if not node.children:
            values[node] = _POLARITY.get(node.word, 0)
        elif _is_negation(node):
            values[node] = -values[node.children[1]]
        else:
            total = sum(values[c] for c in node.children)
            values[node] = (total > 0) - (total < 0)
    return values[tree]


def relabel(tree):
    """Sets every node's label from the rule; returns ``tree``."""
    values = {}
    for node in tree.nodes():
        if not node.children:
            value = _POLARITY.get(node.word, 0)
        elif _is_negation(node):
            value = -values[node.children[1]]
        else:
            total = sum(values[c] for c in node.children)
            value = (total > 0) - (total < 0)
        values[node] = value
        node.label = label_of(value)
    return tree


def _is_negation(node):
    first = node.children[0]
    return len(node.children) == 2 and not first.children and first.word in _NEGATION


def _random_tree(rng, leaves, p_negation, p_sentiment):
    """A random binary tree with ``leaves`` leaves (negation words included).

    Built top-down with an explicit stack: a node of n leaves becomes, with probability
    ``p_negation``, ``(not X)`` with X of n - 1 leaves, else a split at a uniform point.
    """
    root = Tree(None)
    stack = [(root, leaves)]
    while stack:
        node, n = stack.pop()
        if n == 1:
            r = rng.random()
            if r < p_sentiment / 2:
                node.word = rng.choice(POSITIVE)
            elif r < p_sentiment:
                node.word = rng.choice(NEGATIVE)
            else:
                node.word = rng.choice(NEUTRAL)
            continue
        if rng.random() < p_negation:
            negation, rest = Tree(None, word=rng.choice(NEGATIONS)), Tree(None)
            node.children = [negation, rest]
            stack.append((rest, n - 1))
            continue
        k = rng.randint(1, n - 1)
        left, right = Tree(None), Tree(None)
        node.children = [left, right]
        stack.append((right, n - k))
        stack.append((left, k))
    return relabel(root)


def _bag_key(tree):
    pos = neg = nots = 0
    for word in tree.leaves():
        if word in _NEGATION:
            nots += 1
        else:
            p = _POLARITY.get(word, 0)
            pos += p > 0
            neg += p < 0
    return pos, neg, nots


def sentiment_trees(n, seed=0, min_leaves=4, max_leaves=16, p_negation=0.25,
                    p_sentiment=0.45):
    """Generates ``n`` trees with positive or negative roots, half of each.

    Random trees with a neutral root are dropped. For every bag key (numbers of
    positive, negative and negation words) trees are kept only in positive/negative
    pairs, so the bag of words says nothing about the root label. Deterministic given
    the arguments.

    Args:
        n: number of trees (for an odd ``n``, one pair is cut in half).
        seed: seed of the generator.
        min_leaves, max_leaves: range of the number of leaves (words) per tree.
        p_negation: chance that a node of two or more leaves is a negation ``(not X)``.
        p_sentiment: chance that a non-negation word is positive or negative.

    Returns:
        A list of ``Tree`` with labels on every node (see the module docstring).
    """
    if not 2 <= min_leaves <= max_leaves:
        raise ValueError(f"need 2 <= min_leaves <= max_leaves, got {min_leaves}, "
                         f"{max_leaves}")
    rng = random.Random(seed)
    waiting = {}  # (bag key, label) -> trees waiting for a partner of the other label
    out = []
    while len(out) < n:
        tree = _random_tree(rng, rng.randint(min_leaves, max_leaves), p_negation,
                            p_sentiment)
        if tree.label == NEUTRAL_LABEL:
            continue
        key = _bag_key(tree)
        other = NEGATIVE_LABEL + POSITIVE_LABEL - tree.label
        partners = waiting.get((key, other))
        if partners:
            out.append(partners.pop())
            out.append(tree)
        else:
            waiting.setdefault((key, tree.label), []).append(tree)
    del out[n:]
    rng.shuffle(out)
    return out


def splits(train=5000, dev=500, test=1000, seed=0, **kwargs):
    """The default train/dev/test sets: independent draws (seeds seed, seed+1, seed+2).

    Keyword arguments go to ``sentiment_trees``.
    """
    return (sentiment_trees(train, seed=3 * seed, **kwargs),
            sentiment_trees(dev, seed=3 * seed + 1, **kwargs),
            sentiment_trees(test, seed=3 * seed + 2, **kwargs))
