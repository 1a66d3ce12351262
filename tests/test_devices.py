"""The shipped models on every device there is (the `device` fixture: the CPU, and CUDA
where a card is present): batched == example by example, values and gradients, on
the paths a GPU user takes: plain batches, reused traces and kept plans, sequences,
generation, data-dependent loops, and batches planned in a worker process."""

import random

import pytest
import torch

import dynnet
from dynnet.models import ChildSumTreeLSTM, NaryTreeLSTM, SequencePredictor
from dynnet.workers import can_fork
from tests.helpers import assert_batch_matches_loop
from tests.strategies import VOCAB, random_trees


def _on(device, model):
    return model.to(device)


def _sentences(n, seed, longest=9):
    rng = random.Random(seed)
    return [[rng.randrange(VOCAB) for _ in range(rng.randrange(1, longest))] for _ in range(n)]


@pytest.mark.parametrize("cls", [NaryTreeLSTM, ChildSumTreeLSTM])
@pytest.mark.parametrize("method", ["loss", "predict"])
def test_tree_lstms(device, cls, method):
    torch.manual_seed(0)
    model = _on(device, cls(VOCAB, embed_dim=8, hidden_dim=12, node_loss=True))
    trees = random_trees(14, max_depth=7, seed=1, nary=cls is ChildSumTreeLSTM)
    out = assert_batch_matches_loop(getattr(model, method), trees, params=model.parameters())
    assert out.device.type == torch.device(device).type


def test_reused_traces_and_kept_plans(device):
    """Five passes over the same batch: segments, traces kept, all replayed, planned,
    run from the kept plan; each equals the example-by-example run."""
    torch.manual_seed(0)
    model = _on(device, NaryTreeLSTM(VOCAB, embed_dim=8, hidden_dim=12))
    loss = dynnet.function(type(model).loss, reuse_traces=True)
    trees = random_trees(16, max_depth=7, seed=2)
    kept = []
    for _ in range(5):
        with dynnet.profile() as p:
            _check_method(loss, model, trees)
        kept.append(p.replayed_batches)
    assert kept[-1] == 1


def _check_method(fn, model, trees):
    """`fn(model, tree)` batched over `trees` == the loop, values and gradients."""
    bound = fn.__get__(model, type(model))
    return assert_batch_matches_loop(bound, trees, params=model.parameters())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_sequence_predictor(device, cell):
    torch.manual_seed(0)
    model = _on(device, SequencePredictor(VOCAB, embed_dim=8, hidden_dim=10, cell=cell))
    sentences = _sentences(12, seed=3, longest=11)
    sentences = [s + [1] for s in sentences]  # two tokens at least: one to predict
    assert_batch_matches_loop(model.loss, sentences, params=model.parameters())


def test_generation_stops_where_each_example_chooses(device):
    torch.manual_seed(0)
    model = _on(device, SequencePredictor(VOCAB, embed_dim=8, hidden_dim=10, eos_id=3))
    prefixes = _sentences(8, seed=4, longest=4)
    with torch.no_grad():
        batched = model.generate.batch(prefixes, max_len=12)
        with dynnet.run_eagerly():
            one_by_one = [model.generate(p, max_len=12) for p in prefixes]
    assert batched == one_by_one


def test_data_dependent_loop(device):
    weight = torch.randn(5, 5, device=device, requires_grad=True)

    @dynnet.function
    def shrink(x):
        steps = 0
        while x.norm() > 0.5 and steps < 20:
            x = torch.tanh(x @ weight) * 0.7
            steps += 1
        return x, steps

    xs = [torch.randn(5, device=device) * (1 + k) for k in range(9)]
    assert_batch_matches_loop(shrink, xs, params=[weight])


@pytest.mark.skipif(not can_fork(), reason="workers need the fork start method")
def test_batches_planned_in_a_worker(device):
    """The worker plans on the CPU (it cannot touch the card after the fork); the plans
    run here on the model's device."""
    torch.manual_seed(0)
    model = _on(device, NaryTreeLSTM(VOCAB, embed_dim=8, hidden_dim=12))
    trees = random_trees(30, max_depth=7, seed=5)
    batches = [trees[i:i + 6] for i in range(0, len(trees), 6)]
    with dynnet.profile() as p:
        got = list(model.loss.batches(batches, workers=1))
    assert p.planned_batches == len(batches) - 1, p.fallbacks
    with dynnet.run_eagerly():
        want = [torch.stack([model.loss(t) for t in b]) for b in batches]
    for g, w in zip(got, want):
        assert g.device.type == torch.device(device).type
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)
    grads_got = torch.autograd.grad(sum(g.sum() for g in got), list(model.parameters()))
    grads_want = torch.autograd.grad(sum(w.sum() for w in want), list(model.parameters()))
    for g, w in zip(grads_got, grads_want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-3)
