"""An LSTM sentence classifier on SST, in plain PyTorch: one cell over the words.

A sentence is the word ids of an SST tree's leaves, left to right, and its label the
tree's root label (5 classes). One ``nn.LSTMCell`` reads the words; the last hidden
state is classified. The loss is the cross-entropy, averaged over a batch.

This is the plainest "loop applying one cell over a sequence": only the final state
leaves the loop, so the whole loop is what one ``nn.LSTM`` call on a packed batch
computes (the input projections of every word in one product, then only the
recurrent product per step).

- ``naive``: one sentence at a time, a Python loop over its words calling
  ``nn.LSTMCell`` (what the dynnet version says).
- ``batched``: ``nn.LSTM`` on a ``PackedSequence`` with the cell's weights, the last
  state of each sentence from ``h_n``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

from benchmarks.common import DATA_DIR, Benchmark, Variant, dynnet_variant, load_sst
from benchmarks.sequence_lm import LABELS, cell_grads, copy_cell_weights, make_optimizer

__all__ = ["BASELINES", "LABELS", "Sentence", "SentenceClassifierParams", "benchmark",
           "cell_grads", "make_optimizer", "sentences_of"]

DIM = 128
CLASSES = 5


class Sentence(NamedTuple):
    """One example: word ids (at least one) and a class index."""

    ids: list
    label: int


class SentenceClassifierParams(nn.Module):
    """Embedding, one ``LSTMCell`` and the output layer, shared by all variants."""

    def __init__(self, vocab_size, dim=DIM):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "dim": dim}
        self.dim = dim
        self.embed = nn.Embedding(vocab_size, dim)
        self.cell = nn.LSTMCell(dim, dim)
        self.out = nn.Linear(dim, CLASSES)


def _labels(sentences, device):
    return torch.tensor([s.label for s in sentences], device=device)


# -------------------- naive: one sentence at a time --------------------

def _logits(p, ids):
    device = p.out.weight.device
    h = torch.zeros(p.dim, device=device)
    c = torch.zeros(p.dim, device=device)
    for word in ids:
        h, c = p.cell(p.embed(torch.tensor(word, device=device)), (h, c))
    return p.out(h)


def _naive_loss_and_grad(p, sentences):
    logits = torch.stack([_logits(p, s.ids) for s in sentences])
    loss = F.cross_entropy(logits, _labels(sentences, logits.device))
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _naive_infer(p, sentences):
    return torch.stack([_logits(p, s.ids) for s in sentences])


NAIVE = Variant(_naive_loss_and_grad, _naive_infer)


# -------------------- batched: nn.LSTM on a packed batch --------------------

class PackedClassifier(nn.Module):
    """The same model with ``nn.LSTM`` in place of the ``LSTMCell``."""

    def __init__(self, start):
        super().__init__()
        self.embed = nn.Embedding.from_pretrained(start.embed.weight.detach().clone(),
                                                  freeze=False)
        self.lstm = nn.LSTM(start.dim, start.dim)
        self.out = nn.Linear(start.dim, CLASSES)
        copy_cell_weights(start.cell, self.lstm)
        self.out.load_state_dict(start.out.state_dict())
        self.to(start.out.weight.device)

    def logits(self, sentences):
        """``[B, CLASSES]``, in the order of ``sentences``."""
        device = self.out.weight.device
        ids = pack_sequence([torch.tensor(s.ids) for s in sentences], enforce_sorted=False)
        embedded = PackedSequence(self.embed(ids.data.to(device)), ids.batch_sizes,
                                  ids.sorted_indices.to(device),
                                  ids.unsorted_indices.to(device))
        _, (h, _) = self.lstm(embedded)  # h_n in the order of `sentences`
        return self.out(h[0])


def _batched_loss_and_grad(model, sentences):
    logits = model.logits(sentences)
    loss = F.cross_entropy(logits, _labels(sentences, logits.device))
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _batched_infer(model, sentences):
    return model.logits(sentences)


BATCHED = Variant(_batched_loss_and_grad, _batched_infer, PackedClassifier)

BASELINES = {"naive": NAIVE, "batched": BATCHED}


def sentences_of(trees):
    """A ``Sentence`` per tree: its leaves' word ids and its root label."""
    return [Sentence([leaf.word_id for leaf in t.nodes() if leaf.is_leaf], t.label)
            for t in trees]


def benchmark(n_sentences, batch_sizes, device, data_dir=DATA_DIR):
    """The classifier on the first ``n_sentences`` sentences of SST train."""
    trees, vocab = load_sst(n_sentences, data_dir=data_dir)
    torch.manual_seed(0)
    start = SentenceClassifierParams(len(vocab)).to(device)
    variants = {**BASELINES, "dynnet": dynnet_variant("SENTENCE_CLASSIFIER"),
                "dynnet-replay": dynnet_variant("SENTENCE_CLASSIFIER_REPLAYED")}
    return Benchmark("sst-lstm", "sentences", sentences_of(trees), batch_sizes, start,
                     variants, make_optimizer, LABELS)
