"""A loop applying a recurrent cell over a sequence runs as one fused call
(dynnet/recurrences.py), with the values and gradients of running it step by step."""

import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dynnet
from dynnet import recurrences
from dynnet.recurrences import RecurrentTemplate
from tests.helpers import assert_batch_matches_loop


class Encoder(nn.Module):
    def __init__(self, vocab=30, dim=6, hidden=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.cell = nn.LSTMCell(dim, hidden)
        self.out = nn.Linear(hidden, 3)
        self.hidden = hidden

    @dynnet.function
    def logits(self, ids):
        device = self.out.weight.device
        h = torch.zeros(self.hidden, device=device)
        c = torch.zeros(self.hidden, device=device)
        for word in ids:
            h, c = self.cell(self.embed(torch.tensor(word, device=device)), (h, c))
        return self.out(h)

    @dynnet.function
    def every_state(self, ids):
        """Keeps every step's h: the steps cannot be fused."""
        h = torch.zeros(self.hidden)
        c = torch.zeros(self.hidden)
        hs = []
        for word in ids:
            h, c = self.cell(self.embed(torch.tensor(word)), (h, c))
            hs.append(h)
        return torch.stack(hs).sum(0) + c


class SingleStateEncoder(nn.Module):
    """A GRU or tanh/ReLU RNN cell over the words: one state tensor."""

    def __init__(self, cell, vocab=30, dim=6, hidden=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.cell = cell(dim, hidden)
        self.hidden = hidden

    @dynnet.function
    def last(self, ids):
        device = self.embed.weight.device
        h = torch.zeros(self.hidden, device=device)
        for word in ids:
            h = self.cell(self.embed(torch.tensor(word, device=device)) * 2, h)
        return h


class LanguageModel(nn.Module):
    """Next-word loss per sentence: the cell's loop also sums a loss per step."""

    def __init__(self, vocab=30, dim=6, hidden=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.cell = nn.LSTMCell(dim, hidden)
        self.out = nn.Linear(hidden, vocab)
        self.hidden = hidden

    @dynnet.function
    def loss(self, ids):
        h = torch.zeros(self.hidden)
        c = torch.zeros(self.hidden)
        total = 0.0
        for t in range(len(ids) - 1):
            h, c = self.cell(self.embed(torch.tensor(ids[t])), (h, c))
            target = torch.tensor(ids[t + 1])
            total = total + F.cross_entropy(self.out(h), target)
        return total / (len(ids) - 1)


def _sentences(n, seed, longest=12):
    rng = random.Random(seed)
    return [[rng.randrange(30) for _ in range(rng.randint(1, longest))] for _ in range(n)]


def _fused_rows(prof):
    return [size for sig, sizes in prof.group_sizes.items()
            if isinstance(sig.fn, RecurrentTemplate) for size in sizes]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_cell_over_a_sequence_runs_as_one_call_with_the_steps_values(seed):
    torch.manual_seed(seed)
    model = Encoder()
    sentences = _sentences(9 + seed * 5, seed)
    with torch.no_grad():
        expected = torch.stack([Encoder.logits.fn(model, s) for s in sentences])
        model.logits.batch(sentences[:1])  # the segment's first call captures its ops
        with dynnet.profile() as prof:
            got = model.logits.batch(sentences)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    longer = sum(1 for s in sentences if len(s) > 1)
    # one fused row per sequence of two or more steps; one-step sequences stay segments
    assert sum(_fused_rows(prof)) == longer
    assert sum(prof.groups_of(model.cell)) == len(sentences)
    assert prof.groups < max(len(s) for s in sentences)  # not one group per step


@pytest.mark.parametrize("make", [nn.GRUCell, nn.RNNCell,
                                  lambda i, h: nn.RNNCell(i, h, nonlinearity="relu")],
                         ids=["gru", "rnn-tanh", "rnn-relu"])
def test_single_state_cells_run_as_one_call(make):
    torch.manual_seed(7)
    model = SingleStateEncoder(make)
    sentences = _sentences(10, 7)
    with torch.no_grad():
        expected = torch.stack([SingleStateEncoder.last.fn(model, s) for s in sentences])
        model.last.batch(sentences[:1])
        with dynnet.profile() as prof:
            got = model.last.batch(sentences)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert sum(_fused_rows(prof)) == sum(1 for s in sentences if len(s) > 1)


@pytest.mark.parametrize("seed", [3, 8])
def test_training_an_lstm_loop_fused_gives_the_steps_gradients(seed):
    torch.manual_seed(seed)
    model = Encoder()
    sentences = _sentences(8 + seed, seed)
    assert_batch_matches_loop(model.logits, sentences, params=list(model.parameters()))
    with dynnet.profile() as prof:
        model.logits.batch(sentences)
    assert sum(_fused_rows(prof)) == sum(1 for s in sentences if len(s) > 1)


@pytest.mark.parametrize("make", [nn.GRUCell, nn.RNNCell,
                                  lambda i, h: nn.RNNCell(i, h, nonlinearity="relu", bias=False)],
                         ids=["gru", "rnn-tanh", "rnn-relu-no-bias"])
def test_training_single_state_loops_fused_gives_the_steps_gradients(make):
    torch.manual_seed(9)
    model = SingleStateEncoder(make)
    sentences = _sentences(7, 9)
    assert_batch_matches_loop(model.last, sentences, params=list(model.parameters()))
    with dynnet.profile() as prof:
        model.last.batch(sentences)
    assert sum(_fused_rows(prof)) == sum(1 for s in sentences if len(s) > 1)


@pytest.mark.parametrize("seed", [11, 12])
def test_a_loss_summed_over_the_steps_runs_once_for_all_steps(seed):
    """The loop's per-step loss (`total = total + f(h, data)`) runs on every step at
    once after the recurrence, each sentence's terms summed into its total."""
    torch.manual_seed(seed)
    model = LanguageModel()
    sentences = [s + [seed % 30] for s in _sentences(9, seed)]  # two words or more
    assert_batch_matches_loop(model.loss, sentences, params=list(model.parameters()))
    for grad in (True, False):
        with torch.set_grad_enabled(grad), dynnet.profile() as prof:
            model.loss.batch(sentences)
        # the first step (total still the number 0.0) runs on its own; a chain of the
        # others needs two steps or more
        assert sum(_fused_rows(prof)) == sum(1 for s in sentences if len(s) > 3)
        assert sum(prof.groups_of(model.out)) < sum(len(s) - 1 for s in sentences)


def test_states_held_elsewhere_keep_their_steps():
    torch.manual_seed(4)
    model = Encoder()
    sentences = _sentences(7, 4)
    with torch.no_grad():
        expected = [Encoder.every_state.fn(model, s) for s in sentences]
        with dynnet.profile() as prof:
            got = model.every_state.batch(sentences)
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=0)
    assert not _fused_rows(prof)
    assert sum(prof.groups_of(model.cell)) == sum(len(s) for s in sentences)


def test_worker_plans_carry_fused_calls():
    torch.manual_seed(5)
    model = Encoder()
    batches = [_sentences(6, seed) for seed in range(5)]
    with torch.no_grad():
        expected = [model.logits.batch(b) for b in batches]
        with dynnet.profile() as prof:
            got = list(model.logits.batches(batches, workers=1))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    if dynnet.workers.can_fork():
        assert prof.planned_batches == len(batches) - 1, prof.worker_misses
        assert _fused_rows(prof)


@pytest.mark.parametrize("tf32", [False, True])
def test_the_fused_call_runs_in_the_precision_of_the_cells_products(tf32):
    """cuDNN's RNNs default to TF32 where the cell's matmuls are full float32 (on an
    H100 the fused values were 1e-4 from the steps'): the fused call follows the
    matmul setting, and leaves the cuDNN setting as it found it."""
    rnn = torch.backends.cudnn.rnn
    before_rnn, before_matmul = rnn.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        with recurrences._cell_precision():
            assert rnn.fp32_precision == ("tf32" if tf32 else "ieee")
        assert rnn.fp32_precision == before_rnn
    finally:
        torch.backends.cuda.matmul.fp32_precision = before_matmul


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fused_call_on_cuda_matches_the_cpu_steps():
    torch.manual_seed(6)
    model = Encoder()
    sentences = _sentences(12, 6)
    with torch.no_grad():
        expected = torch.stack([Encoder.logits.fn(model, s) for s in sentences])
        model.cuda()
        model.logits.batch(sentences[:1])
        with dynnet.profile() as prof:
            got = model.logits.batch(sentences)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=0)
    assert _fused_rows(prof)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_training_a_fused_loop_on_cuda_gives_the_cpu_gradients(cell):
    """On a GPU with gradients and TF32 products not allowed (the default) the fused
    group runs the steps' own ops (cuDNN's backward would run in TF32)."""
    torch.manual_seed(10)
    if cell == "lstm":
        model, fn = Encoder(), Encoder.logits
    else:
        model, fn = SingleStateEncoder(nn.GRUCell), SingleStateEncoder.last
    sentences = _sentences(10, 10)
    loss = torch.stack([fn.fn(model, s) for s in sentences]).pow(2).sum()
    expected = torch.autograd.grad(loss, list(model.parameters()))
    model.cuda()
    bound = fn.__get__(model)
    bound.batch(sentences[:1])
    with dynnet.profile() as prof:
        loss = bound.batch(sentences).pow(2).sum()
    got = torch.autograd.grad(loss, list(model.parameters()))
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.cpu(), e, atol=1e-4, rtol=1e-4)
    assert _fused_rows(prof)


@pytest.mark.parametrize("make", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
@pytest.mark.parametrize("rows", [1, 2])
def test_cells_given_rows_of_their_own_per_example(make, rows):
    """`torch.zeros(1, d)` states and `[w]` inputs (an explicit batch of rows per
    example): the LSTM cell failed ('Batching rule not implemented for
    aten::lstm_cell'); the stack's rows are the cell's own batched form."""
    torch.manual_seed(3)
    embed, cell = nn.Embedding(30, 4), make(4, 5)
    lstm = make is nn.LSTMCell

    @dynnet.function
    def last(ids):
        h = torch.zeros(rows, 5)
        c = torch.zeros(rows, 5)
        for w in ids:
            x = embed(torch.tensor([w] * rows))
            if lstm:
                h, c = cell(x, (h, c))
            else:
                h = cell(x, h)
        return h.sum(0)

    assert_batch_matches_loop(last, _sentences(8, 3), params=[embed.weight, *cell.parameters()])
