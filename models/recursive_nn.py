"""Recursive neural network: Socher et al., "Semi-Supervised Recursive Autoencoders for
Predicting Sentiment Distributions" (EMNLP 2011) / "Recursive Deep Models for Semantic
Compositionality Over a Sentiment Treebank" (EMNLP 2013), the plain RNN composition
``h = tanh(W [h_l; h_r] + b)``.
"""

from __future__ import annotations

import torch
from torch import nn

from dynnet.backends.kernels import tanh
from dynnet.models.classifier import TreeClassifier, check_positive_int, init_embedding, row_wise
from dynnet.models.io import register_model

__all__ = ["LeafProjection", "RecursiveCell", "RecursiveNN"]


@row_wise
class LeafProjection(nn.Module):
    """A leaf's vector: ``h = tanh(W dropout(embed(word)) + b)``."""

    def __init__(self, vocab_size, embed_dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.embed = init_embedding(nn.Embedding(vocab_size, embed_dim))
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(embed_dim, hidden_dim)

    def dynnet_deterministic(self):
        """Leaves of the same word may share a row unless dropout draws a mask per leaf."""
        return self.dropout.p == 0 or not self.training

    def forward(self, word):
        return tanh(self.proj(self.dropout(self.embed(word))))


@row_wise
class RecursiveCell(nn.Module):
    """``h = tanh(W [h_1; ...; h_N] + b)`` over at most ``arity`` ordered children;
    missing children are zero vectors."""

    def __init__(self, hidden_dim, arity=2):
        super().__init__()
        self.arity = arity
        self.compose = nn.Linear(arity * hidden_dim, hidden_dim)

    def forward(self, *children):
        if not 1 <= len(children) <= self.arity:
            raise ValueError(f"a {self.arity}-ary recursive-NN node needs 1 to {self.arity} "
                             f"children, got {len(children)}")
        hs = list(children)
        if len(hs) < self.arity:
            hs += [torch.zeros_like(hs[0])] * (self.arity - len(hs))
        return tanh(self.compose(torch.cat(hs, -1)))


@register_model("recursive-nn")
class RecursiveNN(TreeClassifier):
    """Socher-style recursive neural network sentiment classifier.

    A node state is its vector ``h`` (``encode(tree)`` returns the root's ``h``);
    otherwise the interface and arguments are those of ``NaryTreeLSTM``.
    """

    def __init__(self, vocab_size, embed_dim=128, hidden_dim=128, num_classes=5,
                 node_loss=False, dropout=0.0, arity=2):
        super().__init__(vocab_size, embed_dim, hidden_dim, num_classes, node_loss, dropout)
        check_positive_int("arity", arity)
        self.arity = arity
        self.leaf = LeafProjection(vocab_size, embed_dim, hidden_dim, dropout)
        self.cell = RecursiveCell(hidden_dim, arity)

    def config(self):
        return {**super().config(), "arity": self.arity}

    def hidden(self, state):
        return state
