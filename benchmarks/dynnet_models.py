"""The benchmark models written for dynnet: one example at a time, in plain Python.

This module imports dynnet at the top, so it fails to import when dynnet is missing or
broken; the runner then reports the dynnet rows as unavailable and still runs the
baselines. Each model subclasses the baselines' parameter module, so it loads the same
``state_dict`` and computes the same function.
"""

import random

import torch
import torch.nn.functional as F

import dynnet
from benchmarks.common import Variant
from benchmarks.sequence_classifier import SentenceClassifierParams
from benchmarks.sequence_lm import SequenceLMParams
from benchmarks.tree_lstm import TreeLSTMParams
from benchmarks.while_loop import Contraction


def _same_as(cls):
    """``start -> module``: a new ``cls`` holding a copy of ``start``'s parameters."""
    def build(start):
        module = cls(**start.config).to(next(start.parameters()).device)
        module.load_state_dict(start.state_dict())
        return module
    return build


# -------------------- tree-LSTM --------------------

class DynTreeLSTM(TreeLSTMParams):
    @dynnet.function
    def encode(self, tree):
        device = self.out.weight.device
        if tree.is_leaf:
            x = self.embed(torch.tensor(tree.word_id, device=device))
            i, o, u = torch.chunk(self.leaf(x), 3)
            c = torch.sigmoid(i) * torch.tanh(u)
            return torch.sigmoid(o) * torch.tanh(c), c
        (hl, cl), (hr, cr) = [self.encode(child) for child in tree.children]
        i, fl, fr, o, u = torch.chunk(self.internal(torch.cat([hl, hr])), 5)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * cl + torch.sigmoid(fr) * cr
        return torch.sigmoid(o) * torch.tanh(c), c

    @dynnet.function
    def root_logits(self, tree):
        h, _ = self.encode(tree)
        return self.out(h)

    @dynnet.function
    def root_loss(self, tree):
        label = torch.tensor(tree.label, device=self.out.weight.device)
        return F.cross_entropy(self.root_logits(tree), label)


def _tree_loss_and_grad(model, trees):
    loss = model.root_loss.batch(trees).mean()
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _tree_infer(model, trees):
    return model.root_logits.batch(trees)


TREE_LSTM = Variant(_tree_loss_and_grad, _tree_infer, _same_as(DynTreeLSTM))


class ReplayedTreeLSTM(DynTreeLSTM):
    """The same model; a tree seen before replays its recorded trace."""
    root_logits = dynnet.function(DynTreeLSTM.root_logits, reuse_traces=True)
    root_loss = dynnet.function(DynTreeLSTM.root_loss, reuse_traces=True)


TREE_LSTM_REPLAYED = Variant(_tree_loss_and_grad, _tree_infer, _same_as(ReplayedTreeLSTM))


def _reshuffled(variant):
    """``variant`` on each batch's examples in a new order at every call: no batch comes
    back, as in reshuffled training, so examples replay their traces but no batch runs
    from a kept plan (dynnet/replayed_batches.py)."""
    rng = random.Random(0)

    def permuted(fn):
        def run(module, batch):
            batch = list(batch)
            rng.shuffle(batch)
            return fn(module, batch)
        return run

    return Variant(permuted(variant.loss_and_grad), permuted(variant.infer), variant.build)


TREE_LSTM_RESHUFFLED = _reshuffled(TREE_LSTM_REPLAYED)


# -------------------- sequence language model --------------------

class DynSequenceLM(SequenceLMParams):
    @dynnet.function
    def sentence_loss(self, ids):
        device = self.out.weight.device
        h = torch.zeros(self.dim, device=device)
        c = torch.zeros(self.dim, device=device)
        total = 0.0
        for t in range(len(ids) - 1):
            h, c = self.cell(self.embed(torch.tensor(ids[t], device=device)), (h, c))
            target = torch.tensor(ids[t + 1], device=device)
            total = total + F.cross_entropy(self.out(h), target)
        return total / (len(ids) - 1)


def _sequence_loss_and_grad(model, sentences):
    loss = model.sentence_loss.batch(sentences).mean()
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _sequence_infer(model, sentences):
    return model.sentence_loss.batch(sentences)


SEQUENCE_LM = Variant(_sequence_loss_and_grad, _sequence_infer, _same_as(DynSequenceLM))


class ReplayedSequenceLM(DynSequenceLM):
    sentence_loss = dynnet.function(DynSequenceLM.sentence_loss, reuse_traces=True)


SEQUENCE_LM_REPLAYED = Variant(_sequence_loss_and_grad, _sequence_infer,
                               _same_as(ReplayedSequenceLM))


# -------------------- LSTM sentence classifier --------------------

class DynSentenceClassifier(SentenceClassifierParams):
    @dynnet.function
    def logits(self, sentence):
        device = self.out.weight.device
        h = torch.zeros(self.dim, device=device)
        c = torch.zeros(self.dim, device=device)
        for word in sentence.ids:
            h, c = self.cell(self.embed(torch.tensor(word, device=device)), (h, c))
        return self.out(h)

    @dynnet.function
    def loss(self, sentence):
        label = torch.tensor(sentence.label, device=self.out.weight.device)
        return F.cross_entropy(self.logits(sentence), label)


def _classifier_loss_and_grad(model, sentences):
    loss = model.loss.batch(sentences).mean()
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _classifier_infer(model, sentences):
    return model.logits.batch(sentences)


SENTENCE_CLASSIFIER = Variant(_classifier_loss_and_grad, _classifier_infer,
                              _same_as(DynSentenceClassifier))


class ReplayedSentenceClassifier(DynSentenceClassifier):
    logits = dynnet.function(DynSentenceClassifier.logits, reuse_traces=True)
    loss = dynnet.function(DynSentenceClassifier.loss, reuse_traces=True)


SENTENCE_CLASSIFIER_REPLAYED = Variant(_classifier_loss_and_grad, _classifier_infer,
                                       _same_as(ReplayedSentenceClassifier))


# -------------------- data-dependent while loop --------------------

class DynContraction(Contraction):
    @dynnet.function
    def shrink(self, x):
        while x.norm() > 1:
            x = self.cell(x)
        return x


def _while_loss_and_grad(model, xs):
    loss = model.shrink.batch(xs).pow(2).sum(dim=1).mean()
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _while_infer(model, xs):
    return model.shrink.batch(xs)


WHILE_LOOP = Variant(_while_loss_and_grad, _while_infer, _same_as(DynContraction))
