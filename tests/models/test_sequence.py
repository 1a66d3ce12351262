"""Sequence language model: batched == example by example, perplexity, decoding."""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import dynnet
from dynnet.models import SequencePredictor
from dynnet.models.sequence import TokenIds
from tests.helpers import assert_batch_matches_loop

V = 30


def sentences(n, seed, low=1, high=9):
    rng = random.Random(seed)
    return [[rng.randrange(3, V) for _ in range(rng.randint(low, high))] for _ in range(n)]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bos,eos", [(1, 2), (None, 2), (1, None)])
def test_batched_equals_per_example(cell, bos, eos):
    model = SequencePredictor(V, 8, 12, cell=cell, eos_id=eos, bos_id=bos)
    sents = sentences(9, seed=hash((cell, bos, eos)) % 1000)
    assert_batch_matches_loop(model.token_nll, sents, params=model.parameters())
    assert_batch_matches_loop(model.loss, sents, params=model.parameters())


def test_tensor_ids_and_no_bos_no_eos():
    model = SequencePredictor(V, 8, 12)
    sents = [torch.tensor(s) for s in sentences(6, seed=2, low=2)]
    assert_batch_matches_loop(model.loss, sents, params=model.parameters())


@settings(max_examples=10, deadline=None)
@given(st.lists(st.lists(st.integers(0, V - 1), min_size=0, max_size=10), min_size=1,
                max_size=6))
def test_any_batch_of_sentences(sents):
    model = SequencePredictor(V, 6, 8, cell="gru", eos_id=2, bos_id=1)
    assert_batch_matches_loop(model.loss, sents, params=model.parameters())


def test_token_nll_is_the_lstm_language_model_by_hand():
    model = SequencePredictor(V, 8, 12, eos_id=2, bos_id=1)
    ids = [5, 9, 4]
    cell, embed, out = model.step.cell, model.step.embed, model.head.out
    h = c = torch.zeros(12)
    total = 0.0
    for prev, target in zip([1] + ids, ids + [2]):
        h, c = cell(embed.weight[prev], (h, c))
        total = total + F.cross_entropy(out(h), torch.tensor(target))
    torch.testing.assert_close(model.token_nll(ids), total)
    torch.testing.assert_close(model.loss.batch([ids, [7]])[0], total / 4)
    assert model.num_tokens(ids) == 4


def test_perplexity():
    model = SequencePredictor(V, 8, 12, eos_id=2, bos_id=1, dropout=0.3)
    sents = sentences(10, seed=5)
    model.eval()
    with dynnet.run_eagerly():
        total = sum(float(model.token_nll(s).detach()) for s in sents)
    model.train()
    count = sum(len(s) + 1 for s in sents)
    assert model.perplexity(sents, batch_size=4) == pytest.approx(math.exp(total / count),
                                                                  rel=1e-5)
    assert model.training  # restored


def test_sentence_with_nothing_to_predict_is_an_error():
    model = SequencePredictor(V, 4, 4)
    with pytest.raises(ValueError, match="no token to predict"):
        model.loss.batch([[3, 4], [5]])
    # with eos_id but no bos_id an empty sentence has a target (eos) but no input: it
    # failed inside torch.stack
    model = SequencePredictor(V, 4, 4, eos_id=1)
    with pytest.raises(ValueError, match="no token to predict"):
        model.loss.batch([[3, 4], []])
    with pytest.raises(ValueError, match="no token to predict"):
        model.perplexity([[3, 4], []])


@pytest.mark.parametrize("kwargs", [{"dropout": "0.1"}, {"dropout": None}, {"eos_id": True},
                                    {"bos_id": False}])
def test_bad_constructor_arguments_are_named(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SequencePredictor(V, 4, 4, **kwargs)


def counting_model(cell="lstm", eos=V - 1):
    """A model that, after reading token t, predicts t + 1 with near certainty.

    Embeddings are one-hot, the cell forgets its past and copies the input's one-hot
    into h, and the output layer shifts h by one position.
    """
    model = SequencePredictor(V, embed_dim=V, hidden_dim=V, cell=cell, eos_id=eos, bos_id=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.step.embed.weight.copy_(6 * torch.eye(V))
        eye = torch.eye(V)
        if cell == "lstm":  # gates i, f, g, o
            w, b = model.step.cell.weight_ih, model.step.cell.bias_ih
            b[:V] = 10          # input gate open
            b[V:2 * V] = -10    # forget the past
            w[2 * V:3 * V] = eye  # g = tanh(6 one_hot)
            b[3 * V:] = 10      # output gate open
        else:  # GRU gates r, z, n: z = 0 keeps only n = tanh(6 one_hot)
            w, b = model.step.cell.weight_ih, model.step.cell.bias_ih
            b[V:2 * V] = -10
            w[2 * V:] = eye
        model.head.out.weight.copy_(20 * torch.roll(eye, 1, 0))
    return model


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_generate_stops_at_eos_per_example(cell):
    model = counting_model(cell)
    prefixes = [[3], [20, 25], [V - 4], [5, V - 2], [10]]
    got = model.generate.batch(prefixes, max_len=8)
    want = [list(range(3 + 1, 3 + 9)), [26, 27, 28, 29], [V - 3, V - 2, V - 1], [V - 1],
            list(range(11, 19))]
    assert got == want
    assert all(isinstance(g, TokenIds) for g in got)
    with dynnet.run_eagerly():
        assert [model.generate(p, max_len=8) for p in prefixes] == want


def test_generate_same_length_outputs_stay_per_example():
    model = counting_model()
    got = model.generate.batch([[3], [7], [11]], max_len=2)
    assert got == [[4, 5], [8, 9], [12, 13]]


def test_sampling_at_low_temperature_matches_greedy():
    model = counting_model()
    prefixes = [[3], [V - 5], [12]]
    greedy = model.generate.batch(prefixes, max_len=6)
    for temperature in (0.05, 1e-40):  # 1e-40: logits / T overflow, unless shifted first
        sampled = model.generate.batch(prefixes, max_len=6, greedy=False,
                                       temperature=temperature)
        assert sampled == greedy
    with pytest.raises(ValueError, match="temperature"):
        model.generate.batch(prefixes, greedy=False, temperature=0.0)


def test_generate_tensor_prefix_and_no_bos():
    model = SequencePredictor(V, 4, 6, eos_id=2)
    got = model.generate.batch([torch.tensor([3, 4]), torch.tensor([5])], max_len=4)
    with dynnet.run_eagerly():
        want = [model.generate(torch.tensor([3, 4]), max_len=4),
                model.generate(torch.tensor([5]), max_len=4)]
    assert got == want
    with pytest.raises(ValueError, match="non-empty prefix"):
        model.generate.batch([[]])


def test_constructor_checks_and_config():
    model = SequencePredictor(10, 4, 6, cell="gru", eos_id=2, bos_id=1, dropout=0.1)
    assert model.config() == {"vocab_size": 10, "embed_dim": 4, "hidden_dim": 6,
                              "cell": "gru", "eos_id": 2, "bos_id": 1, "dropout": 0.1}
    with pytest.raises(ValueError, match="cell"):
        SequencePredictor(10, cell="rnn")
    with pytest.raises(ValueError, match="eos_id"):
        SequencePredictor(10, eos_id=10)
