"""A batch seen before, whose examples all replay their traces, runs from the plan
kept for it (dynnet/replayed_batches.py): the same bits as running it as usual."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dynnet
from dynnet import replayed_batches
from dynnet.plans import PlanMiss
from tests.helpers import assert_batch_matches_loop
from tests.strategies import random_trees
from tests.test_example_traces import TreeModel


class Plain(TreeModel):
    """The same model, without reused traces: runs every batch as usual."""
    loss = dynnet.function(TreeModel.loss.fn)


class Printing(TreeModel):
    @dynnet.function(reuse_traces=True)
    def loss(self, tree):
        h, c = self.encode(tree)
        print("label", tree.label)
        return torch.nn.functional.cross_entropy(self.out(h), torch.tensor(tree.label)), c.sum()


def _pair(cls=TreeModel):
    """A model that reuses traces and one that does not, with the same weights."""
    torch.manual_seed(0)
    planned = cls()
    plain = Plain()
    plain.load_state_dict(planned.state_dict())
    return planned, plain


def _warm(model, batch):
    """The first batch makes the segments (its ops run one by one, in other groups:
    other bits); compare the batches after it."""
    model.loss.batch(batch)
    return model


def _traces(model):
    return type(model).loss.traces


def _run(model, batch):
    with dynnet.profile() as p:
        loss, extra = model.loss.batch(batch)
        total = (loss * torch.arange(1.0, len(batch) + 1)).sum() + extra.sum()
        grads = torch.autograd.grad(total, list(model.parameters()))
    return (loss, extra, grads), p


def _same_bits(a, b):
    (loss_a, extra_a, grads_a), (loss_b, extra_b, grads_b) = a, b
    return (torch.equal(loss_a, loss_b) and torch.equal(extra_a, extra_b)
            and all(torch.equal(x, y) for x, y in zip(grads_a, grads_b)))


@pytest.mark.parametrize("grad", [True, False])
def test_a_batch_seen_before_runs_from_its_plan_with_the_same_bits(grad):
    planned, plain = _pair()
    batch = random_trees(16, max_depth=7, seed=4)
    with torch.set_grad_enabled(grad):
        runs = []
        for _ in range(5):  # segments, kept traces, all replayed (seen), planned, plan reused
            if grad:
                runs.append(_run(planned, batch))
            else:
                with dynnet.profile() as p:
                    runs.append((planned.loss.batch(batch), p))
        assert [p.replayed_batches for _, p in runs] == [0, 0, 0, 1, 1]
        assert [p.replayed for _, p in runs][2:] == [16, 16, 16]
        _warm(plain, batch)
        if grad:
            want, _ = _run(plain, batch)
            assert all(_same_bits(out, want) for out, _ in runs[1:])
        else:
            want = plain.loss.batch(batch)
            assert all(torch.equal(a, b) for (out, _) in runs[1:] for a, b in zip(out, want))


def test_printed_text_comes_in_example_order_from_a_plan(capsys):
    model = Printing()
    batch = random_trees(5, max_depth=4, seed=6)
    expected = "".join(f"label {t.label}\n" for t in batch)
    for _ in range(5):
        with dynnet.profile() as p:
            model.loss.batch(batch)
        assert capsys.readouterr().out == expected
    assert p.replayed_batches == 1


def test_reshuffled_batches_keep_no_plans():
    model = TreeModel()
    pool = random_trees(24, max_depth=6, seed=7)
    rng = random.Random(0)
    planned = 0
    for _ in range(6):
        rng.shuffle(pool)
        for start in range(0, 24, 8):
            with dynnet.profile() as p:
                model.loss.batch(pool[start:start + 8])
            planned += p.replayed_batches
    assert planned == 0
    assert not _traces(model).current.plans


def test_a_change_the_traces_see_forgets_the_plans():
    planned, plain = _pair()
    batch = random_trees(8, max_depth=5, seed=8)
    for _ in range(4):
        _run(planned, batch)
    assert _traces(planned).current.plans
    planned.eval()  # empties the traces of this model, and its plans with them
    _warm(plain, batch).eval()
    out, p = _run(planned, batch)
    assert p.replayed_batches == 0 and p.replayed == 0
    assert _same_bits(out, _run(plain, batch)[0])


def test_a_plan_that_fails_runs_the_batch_as_usual(monkeypatch):
    planned, plain = _pair()
    batch = random_trees(8, max_depth=5, seed=9)
    for _ in range(3):
        _run(planned, batch)

    def failing(*args, **kwargs):
        raise PlanMiss("a batched call failed")

    _warm(plain, batch)
    monkeypatch.setattr(replayed_batches, "execute_plan", failing)
    out, p = _run(planned, batch)
    assert p.replayed_batches == 0 and p.replayed == 8
    assert _same_bits(out, _run(plain, batch)[0])
    monkeypatch.undo()
    out, p = _run(planned, batch)  # a plan that failed once is not tried again
    assert p.replayed_batches == 0


def test_plans_count_against_the_bound_on_kept_examples(monkeypatch):
    class Bounded(TreeModel):
        loss = dynnet.function(TreeModel.loss.fn, reuse_traces=12)

    model = Bounded()
    first, second = random_trees(8, max_depth=4, seed=10), random_trees(4, max_depth=4, seed=11)
    for _ in range(4):
        model.loss.batch(first)
        model.loss.batch(second)
    part = _traces(model).current
    assert part.planned == 12 and len(part.plans) == 2
    planned = []
    making = replayed_batches.plan_batch
    monkeypatch.setattr(replayed_batches, "plan_batch",
                        lambda *a, **k: planned.append(1) or making(*a, **k))
    for _ in range(4):
        with dynnet.profile() as p:
            model.loss.batch(first[:4])  # kept traces, a new batch: past the bound
    assert p.replayed == 4 and p.replayed_batches == 0
    assert part.planned == 12 and not planned  # not even planned, to be dropped


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(1, 6), min_size=1, max_size=3))
def test_batches_that_come_back_equal_running_examples_one_by_one(seed, sizes):
    """Batches from a pool, each coming back several times among others: every run,
    planned or not, equals the unconverted code example by example."""
    torch.manual_seed(seed)
    model = TreeModel()
    pool = random_trees(sum(sizes) + 2, max_depth=6, seed=seed)
    rng = random.Random(seed)
    batches, start = [], 0
    for n in sizes:
        batches.append(pool[start:start + n])
        start += n
    planned = 0
    for _ in range(4):
        rng.shuffle(batches)
        for batch in batches:
            with dynnet.profile() as p:
                assert_batch_matches_loop(model.loss, batch, params=model.parameters())
            planned += p.replayed_batches
    assert planned > 0


def test_an_evaluation_set_over_epochs_with_a_worker_ends_up_run_from_kept_plans():
    """`f.batches` over the same batches every epoch: a worker's plan of a batch it
    replayed whole is kept the second time the batch comes, and once every batch has
    a kept plan, the epoch runs here from them, without a worker."""
    torch.manual_seed(0)
    model = TreeModel()
    pool = random_trees(12, max_depth=5, seed=13)
    batches = [pool[:4], pool[4:8], pool[8:]]
    with dynnet.run_eagerly():
        expected = torch.stack([model.loss(t)[0] for t in pool])
    runs = []
    for _ in range(6):
        with torch.no_grad(), dynnet.profile() as p:
            losses = [loss for loss, _ in model.loss.batches(batches, workers=1)]
        runs.append((p.planned_batches, p.replayed_batches))
        torch.testing.assert_close(torch.cat(losses), expected)
    if not dynnet.workers.can_fork():
        pytest.skip("no worker processes here")
    # epoch 1 traces (the first batch here, the others in the worker, which sends their
    # traces back), 2 replays them all (the worker's batches seen once), 3 keeps the
    # worker's plans and sees the first batch once, 4 plans that one here, and from
    # then on every batch runs from its kept plan here
    assert runs == [(2, 0), (2, 0), (2, 0), (2, 1), (0, 3), (0, 3)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_kept_plan_equals_running_the_code():
    torch.manual_seed(0)
    embed = torch.nn.Embedding(20, 5).cuda()
    cell = torch.nn.LSTMCell(5, 5).cuda()

    @dynnet.function(reuse_traces=True)
    def last(ids):
        h = torch.zeros(5, device="cuda")
        c = torch.zeros(5, device="cuda")
        for word in ids:
            h, c = cell(embed(torch.tensor(word, device="cuda")), (h, c))
        return h

    rng = random.Random(0)
    batch = [[rng.randrange(20) for _ in range(rng.randrange(1, 7))] for _ in range(12)]
    params = [embed.weight, *cell.parameters()]
    for k in range(5):
        with dynnet.profile() as p:
            assert_batch_matches_loop(last, batch, params=params)
    assert p.replayed_batches == 1
