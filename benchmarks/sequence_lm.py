"""LSTM language model over variable-length PTB sentences, in plain PyTorch.

A sentence is a list of word ids framed by ``<eos>``; its loss is the mean next-word
cross-entropy over its positions, and a batch loss is the mean over sentences.

- ``naive``: one sentence at a time, a Python loop over tokens calling ``nn.LSTMCell``,
  ``Linear`` and ``cross_entropy`` per token (what the dynnet version says).
- ``batched``: ``nn.LSTM`` on a ``PackedSequence`` (cuDNN on CUDA), one ``Linear`` and
  one ``cross_entropy`` over all tokens of the batch. Its ``nn.LSTM`` carries the same
  weights as the ``LSTMCell`` (same gate layout: weight_ih, weight_hh, bias_ih, bias_hh).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

from benchmarks.common import DATA_DIR, Benchmark, Variant, dynnet_variant, load_ptb

DIM = 128


class SequenceLMParams(nn.Module):
    """Embedding, one ``LSTMCell`` and the output projection, shared by all variants."""

    def __init__(self, vocab_size, dim=DIM):
        super().__init__()
        self.config = {"vocab_size": vocab_size, "dim": dim}
        self.dim = dim
        self.embed = nn.Embedding(vocab_size, dim)
        self.cell = nn.LSTMCell(dim, dim)
        self.out = nn.Linear(dim, vocab_size)


# -------------------- naive: one sentence at a time --------------------

def _sentence_loss(p, ids):
    device = p.out.weight.device
    h = torch.zeros(p.dim, device=device)
    c = torch.zeros(p.dim, device=device)
    total = 0.0
    for t in range(len(ids) - 1):
        h, c = p.cell(p.embed(torch.tensor(ids[t], device=device)), (h, c))
        total = total + F.cross_entropy(p.out(h), torch.tensor(ids[t + 1], device=device))
    return total / (len(ids) - 1)


def _naive_loss_and_grad(p, sentences):
    loss = torch.stack([_sentence_loss(p, ids) for ids in sentences]).mean()
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _naive_infer(p, sentences):
    return torch.stack([_sentence_loss(p, ids) for ids in sentences])


NAIVE = Variant(_naive_loss_and_grad, _naive_infer)


# -------------------- batched: nn.LSTM on a packed batch --------------------

class PackedLM(nn.Module):
    """The same model with ``nn.LSTM`` in place of the ``LSTMCell``."""

    def __init__(self, start):
        super().__init__()
        self.dim = start.dim
        self.embed = nn.Embedding.from_pretrained(start.embed.weight.detach().clone(),
                                                  freeze=False)
        self.lstm = nn.LSTM(start.dim, start.dim)
        self.out = nn.Linear(start.dim, start.out.out_features)
        copy_cell_weights(start.cell, self.lstm)
        self.out.load_state_dict(start.out.state_dict())
        self.to(start.out.weight.device)

    def sentence_losses(self, sentences):
        """Per-sentence mean next-word cross-entropy, ``[B]``."""
        device = self.out.weight.device
        lengths = [len(s) - 1 for s in sentences]
        # Pack token positions once; inputs, targets and owners are gathered by them.
        order = pack_sequence(torch.arange(sum(lengths)).split(lengths), enforce_sorted=False)
        rows = order.data.to(device)
        inputs = torch.tensor([w for s in sentences for w in s[:-1]], device=device)
        targets = torch.tensor([w for s in sentences for w in s[1:]], device=device)
        lengths = torch.tensor(lengths, device=device)
        owner = torch.repeat_interleave(torch.arange(len(sentences), device=device), lengths)
        embedded = PackedSequence(self.embed(inputs[rows]), order.batch_sizes,
                                  order.sorted_indices.to(device),
                                  order.unsorted_indices.to(device))
        hidden, _ = self.lstm(embedded)
        token_losses = F.cross_entropy(self.out(hidden.data), targets[rows], reduction="none")
        sums = token_losses.new_zeros(len(sentences)).index_add_(0, owner[rows], token_losses)
        return sums / lengths


def _batched_loss_and_grad(model, sentences):
    loss = model.sentence_losses(sentences).mean()
    loss.backward()
    return loss.detach()


@torch.no_grad()
def _batched_infer(model, sentences):
    return model.sentence_losses(sentences)


BATCHED = Variant(_batched_loss_and_grad, _batched_infer, PackedLM)

BASELINES = {"naive": NAIVE, "batched": BATCHED}


_CELL_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def copy_cell_weights(cell, lstm):
    """Sets one-layer ``nn.LSTM`` ``lstm``'s weights to ``nn.LSTMCell`` ``cell``'s (the
    two share the gate layout)."""
    with torch.no_grad():
        for name in _CELL_WEIGHTS:
            getattr(lstm, f"{name}_l0").copy_(getattr(cell, name))


def cell_grads(module):
    """Gradients by the names of a module with an ``LSTMCell`` ``cell``, also for its
    twin with an ``nn.LSTM`` ``lstm`` (``lstm.weight_ih_l0`` is ``cell.weight_ih``)."""
    grads = {name: p.grad for name, p in module.named_parameters()}
    for name in _CELL_WEIGHTS:
        if f"lstm.{name}_l0" in grads:
            grads[f"cell.{name}"] = grads.pop(f"lstm.{name}_l0")
    return grads


def make_optimizer(module):
    """The optimizer every variant trains with."""
    return torch.optim.Adam(module.parameters(), lr=0.01)


LABELS = {"naive": "naive per-sentence", "batched": "nn.LSTM packed", "dynnet": "dynnet",
          "dynnet-replay": "dynnet, reused traces"}


def benchmark(n_sentences, batch_sizes, device, data_dir=DATA_DIR):
    """The LSTM language model on the first ``n_sentences`` sentences of PTB valid."""
    sentences, vocab = load_ptb(n_sentences, data_dir=data_dir)
    torch.manual_seed(0)
    start = SequenceLMParams(len(vocab)).to(device)
    variants = {**BASELINES, "dynnet": dynnet_variant("SEQUENCE_LM"),
                "dynnet-replay": dynnet_variant("SEQUENCE_LM_REPLAYED")}
    return Benchmark("sequence-lm", "sentences", sentences, batch_sizes, start, variants,
                     make_optimizer, LABELS)
