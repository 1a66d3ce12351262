"""Tree-LSTMs: Tai, Socher and Manning, "Improved Semantic Representations From
Tree-Structured Long Short-Term Memory Networks", ACL 2015 (arXiv:1503.00075).

``NaryTreeLSTM`` ("tree-lstm") is the N-ary (by default binary) constituency tree-LSTM,
``ChildSumTreeLSTM`` ("child-sum-tree-lstm") the child-sum one. On constituency trees
(such as SST) words sit at the leaves only: a leaf reads its word and has no children,
an inner node reads its children and no word.

    model = NaryTreeLSTM(len(vocab), node_loss=True, dropout=0.5)
    loss = model.loss.batch(trees).mean()
    logits = model.predict.batch(trees)          # [B, num_classes]
"""

from __future__ import annotations

import torch
from torch import nn

from dynnet.backends.kernels import tanh
from dynnet.models.classifier import TreeClassifier, check_positive_int, init_embedding, row_wise
from dynnet.models.io import register_model

__all__ = ["ChildSumTreeLSTM", "ChildSumTreeLSTMCell", "LeafLSTM", "NaryTreeLSTM",
           "NaryTreeLSTMCell"]


@row_wise
class LeafLSTM(nn.Module):
    """A leaf of a tree-LSTM: embedding, dropout, then the LSTM gates with no children.

    ``i, o, u = W x + b;  c = σ(i)·tanh(u);  h = σ(o)·tanh(c)``. Returns ``(h, c)``.
    """

    def __init__(self, vocab_size, embed_dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.embed = init_embedding(nn.Embedding(vocab_size, embed_dim))
        self.dropout = nn.Dropout(dropout)
        self.gates = nn.Linear(embed_dim, 3 * hidden_dim)

    def dynnet_deterministic(self):
        """Leaves of the same word may share a row (backends/rules.py `deterministic`)
        unless dropout draws a mask per leaf."""
        return self.dropout.p == 0 or not self.training

    def forward(self, word):
        i, o, u = self.gates(self.dropout(self.embed(word))).chunk(3, -1)
        c = torch.sigmoid(i) * tanh(u)
        return torch.sigmoid(o) * tanh(c), c


@row_wise
class NaryTreeLSTMCell(nn.Module):
    """The N-ary tree-LSTM update of an inner node from its (at most N) ordered children.

    ``i, o, u, f_1..f_N = U [h_1; ...; h_N] + b`` (one forget gate per child position),
    ``c = σ(i)·tanh(u) + Σ_k σ(f_k)·c_k``, ``h = σ(o)·tanh(c)``. Missing children (a
    node with fewer than N) are zero states. ``cell((h_1, c_1), ...)`` -> ``(h, c)``.
    """

    def __init__(self, hidden_dim, arity=2):
        super().__init__()
        self.arity = arity
        self.gates = nn.Linear(arity * hidden_dim, (3 + arity) * hidden_dim)

    def forward(self, *children):
        if not 1 <= len(children) <= self.arity:
            raise ValueError(f"a {self.arity}-ary tree-LSTM node needs 1 to {self.arity} "
                             f"children, got {len(children)}")
        hs = [h for h, _ in children]
        cs = [c for _, c in children]
        if len(children) < self.arity:
            zero = torch.zeros_like(hs[0])
            hs += [zero] * (self.arity - len(children))
            cs += [zero] * (self.arity - len(children))
        i, o, u, *fs = self.gates(torch.cat(hs, -1)).chunk(3 + self.arity, -1)
        c = torch.sigmoid(i) * tanh(u)
        for f, c_k in zip(fs, cs):
            c = c + torch.sigmoid(f) * c_k
        return torch.sigmoid(o) * tanh(c), c


@row_wise
class ChildSumTreeLSTMCell(nn.Module):
    """The child-sum tree-LSTM update of an inner node from any number of children.

    ``h̃ = Σ_k h_k;  i, o, u = U h̃ + b;  f_k = σ(U_f h_k + b_f);``
    ``c = σ(i)·tanh(u) + Σ_k f_k·c_k;  h = σ(o)·tanh(c)``. ``cell((h_1, c_1), ...)``.
    """

    def __init__(self, hidden_dim):
        super().__init__()
        self.iou = nn.Linear(hidden_dim, 3 * hidden_dim)
        self.forget = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, *children):
        if not children:
            raise ValueError("a child-sum tree-LSTM node needs at least one child")
        hs = torch.stack([h for h, _ in children], -2)  # [..., k, hidden]
        cs = torch.stack([c for _, c in children], -2)
        i, o, u = self.iou(hs.sum(-2)).chunk(3, -1)
        f = torch.sigmoid(self.forget(hs))
        c = torch.sigmoid(i) * tanh(u) + (f * cs).sum(-2)
        return torch.sigmoid(o) * tanh(c), c


@register_model("tree-lstm")
class NaryTreeLSTM(TreeClassifier):
    """The N-ary (binary by default) constituency tree-LSTM sentiment classifier.

    ``encode(tree)`` returns the root ``(h, c)``; ``predict(tree)`` the root logits
    ``[num_classes]``; ``loss(tree)`` the root cross-entropy, or with ``node_loss`` the
    mean over every labelled node. Nodes may have 1 to ``arity`` children.

    Args:
        vocab_size: rows of the word embedding (leaves need ``word_id``).
        embed_dim, hidden_dim: embedding and LSTM sizes.
        num_classes: classes of ``tree.label`` (5 for SST fine-grained).
        node_loss: train on every node's label, not only the root's.
        dropout: dropout on the word embeddings and before the classifier.
        arity: the most children of a node.
    """

    def __init__(self, vocab_size, embed_dim=128, hidden_dim=128, num_classes=5,
                 node_loss=False, dropout=0.0, arity=2):
        super().__init__(vocab_size, embed_dim, hidden_dim, num_classes, node_loss, dropout)
        check_positive_int("arity", arity)
        self.arity = arity
        self.leaf = LeafLSTM(vocab_size, embed_dim, hidden_dim, dropout)
        self.cell = NaryTreeLSTMCell(hidden_dim, arity)

    def config(self):
        return {**super().config(), "arity": self.arity}


@register_model("child-sum-tree-lstm")
class ChildSumTreeLSTM(TreeClassifier):
    """The child-sum tree-LSTM sentiment classifier (any number of children per node).

    Same interface and arguments as ``NaryTreeLSTM`` (without ``arity``).
    """

    def __init__(self, vocab_size, embed_dim=128, hidden_dim=128, num_classes=5,
                 node_loss=False, dropout=0.0):
        super().__init__(vocab_size, embed_dim, hidden_dim, num_classes, node_loss, dropout)
        self.leaf = LeafLSTM(vocab_size, embed_dim, hidden_dim, dropout)
        self.cell = ChildSumTreeLSTMCell(hidden_dim)
