"""`dynnet.function(reuse_traces=True)`: an example seen before is replayed from its
recorded trace (dynnet/example_traces.py), with the values and gradients of running
the code again."""

import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import dynnet
from dynnet.data import Tree
from dynnet.workers import can_fork
from tests.helpers import assert_batch_matches_loop
from tests.strategies import VOCAB, chain_tree, random_trees


class TreeModel(nn.Module):
    """A tree-LSTM-like recursion; leaves on per-example data (shared per word)."""

    def __init__(self, dim=6):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.leaf = nn.Linear(dim, 2 * dim)
        self.internal = nn.Linear(2 * dim, 2 * dim)
        self.out = nn.Linear(dim, 5)

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            h, c = torch.chunk(self.leaf(self.embed(torch.tensor(tree.word_id))), 2)
            return torch.tanh(h), c
        (hl, cl), (hr, cr) = [self.encode(child) for child in tree.children]
        h, f = torch.chunk(self.internal(torch.cat([hl, hr])), 2)
        c = torch.sigmoid(f) * (cl + cr)
        return torch.tanh(h) * torch.tanh(c), c

    @dynnet.function(reuse_traces=True)
    def loss(self, tree):
        h, c = self.encode(tree)
        return F.cross_entropy(self.out(h), torch.tensor(tree.label)), c.sum()


def _profiled(fn, batch):
    with dynnet.profile() as p:
        out = fn.batch(batch)
    return out, p


def test_replays_equal_running_the_code_in_batches_of_any_mix():
    torch.manual_seed(0)
    model = TreeModel()
    pool = random_trees(24, max_depth=7, seed=1) + [chain_tree(8)]
    rng = random.Random(2)
    replayed = 0
    for _ in range(4):  # batches overlap: part replayed, part traced
        batch = rng.sample(pool, 10)
        with dynnet.profile() as p:
            assert_batch_matches_loop(model.loss, batch, params=model.parameters())
        replayed += p.replayed
    assert replayed >= 15


def test_a_replayed_batch_records_the_traced_graph():
    """Same nodes (leaves shared per word across examples), same groups."""
    model = TreeModel()
    batch = random_trees(12, max_depth=6, seed=3)
    model.loss.batch(batch)  # makes the segments: not kept (see the next test)
    model.loss.batch(batch)  # kept
    traced = [random_trees(12, max_depth=6, seed=3)]  # equal trees, other objects
    out, p_traced = _profiled(model.loss, traced[0])
    again, p_replayed = _profiled(model.loss, batch)
    assert p_traced.replayed == 0 and p_replayed.replayed == 12
    assert p_replayed.nodes == p_traced.nodes
    assert {s.name: v for s, v in p_replayed.group_sizes.items()} == \
        {s.name: v for s, v in p_traced.group_sizes.items()}
    torch.testing.assert_close(again, out)


def test_examples_traced_while_signatures_were_new_are_not_kept():
    """A segment's first call records its ops one by one: not worth replaying."""
    model = TreeModel()
    batch = random_trees(4, max_depth=4, seed=4)
    _, first = _profiled(model.loss, batch)
    _, second = _profiled(model.loss, batch)
    _, third = _profiled(model.loss, batch)
    assert first.replayed == 0 and third.replayed == 4
    assert second.replayed >= 1  # those traced after the segments existed


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=8), st.integers(0, 3))
def test_any_batch_from_a_pool_of_trees(picks, seed):
    torch.manual_seed(seed)
    model = TreeModel(dim=4)
    pool = random_trees(16, max_depth=5, seed=seed)
    for start in (0, 1):
        batch = [pool[(i + start) % 16] for i in picks]
        assert_batch_matches_loop(model.loss, batch, params=model.parameters())


class ModeModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    @dynnet.function(reuse_traces=True)
    def f(self, n):
        x = self.lin(torch.full((3,), float(n), dtype=self.lin.weight.dtype))
        if self.training:  # Python control flow on the model's state
            x = x * 2
        print("n =", n)
        return x


def test_a_change_of_the_models_mode_dtype_or_grad_mode_is_seen(capsys):
    torch.manual_seed(0)
    model = ModeModel()
    xs = [1, 2, 3]

    def expected():
        with dynnet.run_eagerly():
            return torch.stack([model.f(n) for n in xs])

    for _ in range(3):
        with dynnet.profile() as p:
            torch.testing.assert_close(model.f.batch(xs), expected())
    assert p.replayed == 3
    model.eval()
    torch.testing.assert_close(model.f.batch(xs), expected())
    model.double()
    out = model.f.batch(xs)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected())
    with torch.no_grad():
        assert not model.f.batch(xs).requires_grad
    assert model.f.batch(xs).requires_grad
    printed = capsys.readouterr().out
    # every batch printed, replayed or not, in example order
    assert printed.count("n = 1\nn = 2\nn = 3\n") == 7 + 5  # 7 batches, 5 eager loops


def test_shared_keyword_arguments_are_part_of_the_key():
    @dynnet.function(reuse_traces=True)
    def scaled(n, k=1):
        return torch.tensor(float(n)) * k if k > 1 else torch.tensor(float(n))

    for _ in range(3):
        assert scaled.batch([1, 2]).tolist() == [1.0, 2.0]
    assert scaled.batch([1, 2], k=3).tolist() == [3.0, 6.0]
    with dynnet.profile() as p:
        assert scaled.batch([1, 2]).tolist() == [1.0, 2.0]
    assert p.replayed == 0  # the cache was emptied by the change


def test_clear_traces_after_changing_an_example():
    model = TreeModel()
    batch = random_trees(3, max_depth=4, seed=5)
    for _ in range(3):
        model.loss.batch(batch)
    batch[0].label = (batch[0].label + 1) % 5
    model.loss.clear_traces()
    with dynnet.profile() as p:
        assert_batch_matches_loop(model.loss, batch, params=model.parameters())
    assert p.replayed == 0


class PausingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    @dynnet.function(reuse_traces=True)
    def f(self, n):
        y = self.lin(torch.full((2,), float(n)))
        for _ in range(int(y.abs().sum() * 3) % 4):  # a Python int: the example pauses
            y = torch.tanh(y) + 1
        return y


def test_examples_that_pause_or_read_tensors_are_traced_every_time():
    torch.manual_seed(0)
    model = PausingModel()
    for _ in range(3):
        with dynnet.profile() as p:
            assert_batch_matches_loop(model.f, [1, 2, 3, 4], params=model.parameters())
        assert p.replayed == 0
    assert any("4 examples not kept" in line and "paused for a value" in line
               for line in p.fallbacks), p.fallbacks

    @dynnet.function(reuse_traces=True)
    def scaled(x):
        return torch.tanh(x) * 2

    xs = [torch.randn(2) for _ in range(4)]
    for _ in range(3):
        with dynnet.profile() as p:
            assert_batch_matches_loop(scaled, xs)
        assert p.replayed == 0
    assert any("read a lazy value made before it ran" in line for line in p.fallbacks)


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 4)
        self.cell = nn.LSTMCell(4, 3)

    @dynnet.function(reuse_traces=True)
    def last(self, ids):
        h = torch.zeros(3)
        c = torch.zeros(3)
        for word in ids:
            h, c = self.cell(self.embed(torch.tensor(word)), (h, c))
        return h


@pytest.mark.parametrize("grad", [True, False])
def test_replayed_loops_still_fuse(grad):
    torch.manual_seed(0)
    model = Recurrent()
    rng = random.Random(0)
    sentences = [[rng.randrange(20) for _ in range(rng.randrange(2, 7))] for _ in range(6)]
    with torch.set_grad_enabled(grad):
        for _ in range(2):
            model.last.batch(sentences)
        traced_out, traced = _profiled(model.last, [list(s) for s in sentences])
        if grad:
            with dynnet.profile() as replayed:
                assert_batch_matches_loop(model.last, sentences, params=model.parameters())
        else:
            out, replayed = _profiled(model.last, sentences)
            with dynnet.run_eagerly():
                expected = torch.stack([model.last(s) for s in sentences])
            torch.testing.assert_close(out, expected)
    assert replayed.replayed == 6
    assert replayed.groups_of(model.cell) == traced.groups_of(model.cell) == [6]  # fused


def test_workers_send_back_the_traces_they_record_and_replay_them_next_epoch():
    torch.manual_seed(0)
    model = TreeModel()
    pool = random_trees(12, max_depth=5, seed=6)
    batches = [pool[:4], pool[4:8], pool[8:]]
    replayed, planned = [], []
    for _ in range(3):
        with dynnet.profile() as p:
            losses = [loss for loss, _ in model.loss.batches(batches, workers=1)]
        replayed.append(p.replayed)
        planned.append(p.planned_batches)
        with dynnet.run_eagerly():
            expected = [model.loss(t)[0] for t in pool]
        torch.testing.assert_close(torch.cat(losses), torch.stack(expected))
    if not dynnet.workers.can_fork():
        pytest.skip("no worker processes here")
    # the first epoch: the first batch here (it makes the segments), the others in the
    # worker, which records their traces and sends them back; then every example
    # replays, here or in the worker
    assert planned == [2, 2, 2]
    assert replayed[0] == 0 and replayed[2] >= 11


class ZeroState(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(3, 3)

    @dynnet.function(reuse_traces=True)
    def f(self, trips):
        h = torch.zeros(3)  # a factory's value, kept in the trace as a tensor
        for _ in range(trips[0]):
            h = torch.tanh(self.cell(h) + 1)
        return h


def test_traces_that_hold_a_factory_value_travel_back_from_the_worker():
    """`torch.zeros(3)` is kept in the trace as its value, which the worker makes on
    the CPU (for any device) and sends back with the trace."""
    model = ZeroState()
    batches = [[[n] for n in b] for b in ([1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 1, 2])]
    planned, replayed = [], []
    for _ in range(3):
        with dynnet.profile() as p:
            out = torch.cat(list(model.f.batches(batches, workers=1)))
        planned.append(p.planned_batches)
        replayed.append(p.replayed)
        with dynnet.run_eagerly():
            expected = torch.stack([model.f(n) for b in batches for n in b])
        torch.testing.assert_close(out, expected)
    if dynnet.workers.can_fork():
        assert planned == [3, 3, 3] and replayed[0] == 0 and replayed[2] == 12


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    @dynnet.function(reuse_traces=True)
    def noise_made_while_tracing(self, n):
        return self.lin(torch.full((3,), float(n))) + torch.randn(3)

    @dynnet.function(reuse_traces=True)
    def dropout(self, n):
        return F.dropout(self.lin(torch.full((3,), float(n))), 0.5)


def test_random_numbers_are_drawn_anew_for_every_batch():
    model = Noisy()
    xs = list(range(8))
    for f, replayed in ((model.noise_made_while_tracing, 0), (model.dropout, 8)):
        outs = []
        for _ in range(4):
            with dynnet.profile() as p:
                outs.append(f.batch(xs))
        assert not torch.equal(outs[2], outs[3])
        assert p.replayed == replayed
        assert any("random numbers" in line for line in p.fallbacks) == (replayed == 0)


class Repeats(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.times = 1  # a plain setting the code loops on

    @dynnet.function(reuse_traces=True)
    def f(self, n):
        x = torch.full((2,), float(n))
        for _ in range(self.times):
            x = torch.tanh(self.lin(x))
        return x


def test_a_change_of_a_plain_setting_of_the_model_is_seen():
    model = Repeats()
    xs = [1, 2, 3]
    for times in (1, 1, 1, 3, 3):
        model.times = times
        with dynnet.run_eagerly():
            expected = torch.stack([model.f(n) for n in xs])
        torch.testing.assert_close(model.f.batch(xs), expected)


def test_two_models_keep_their_traces_side_by_side_and_free_them_with_the_model():
    import gc

    torch.manual_seed(0)
    first, second = TreeModel(), TreeModel()
    batch = random_trees(6, max_depth=5, seed=7)
    for _ in range(3):
        for model in (first, second):  # alternating: neither empties the other's
            with dynnet.profile() as p:
                assert_batch_matches_loop(model.loss, batch, params=model.parameters())
    assert p.replayed == 6
    traces = TreeModel.loss.traces
    assert len(traces.partitions) >= 2
    before = len(traces.partitions)
    del first, model
    gc.collect()
    assert len(traces.partitions) == before - 1  # the cache held no module


def test_shipped_tree_lstm_replays_its_leaves_shared_per_word():
    """NaryTreeLSTM's leaves are module calls on `torch.tensor(word_id)`, one node per
    word in a batch (`tracing._data_key`): a replay looks them up the same way."""
    from dynnet.models import NaryTreeLSTM

    class Replaying(NaryTreeLSTM):
        loss = dynnet.function(NaryTreeLSTM.loss, reuse_traces=True)

    torch.manual_seed(0)
    model = Replaying(VOCAB, embed_dim=6, hidden_dim=5, node_loss=True)
    pool = random_trees(20, max_depth=6, seed=8)
    for t in pool:  # few words: many leaves shared across trees
        for node in t.nodes():
            if node.is_leaf:
                node.word_id %= 5
    rng = random.Random(0)
    model.loss.batch(pool)
    model.loss.batch(pool)
    for _ in range(3):
        batch = rng.sample(pool, 8)
        with dynnet.profile() as p:
            assert_batch_matches_loop(model.loss, batch, params=model.parameters())
        assert p.replayed == 8
        with dynnet.profile() as traced:
            plain = NaryTreeLSTM.loss.__get__(model)
            plain.batch([t for t in batch])
        assert p.groups == traced.groups


def _leaf(word):
    t = Tree(1, word=f"w{word}")
    t.word_id = word
    return t


def _two_trees():
    """(a b) and (a (b c)): recorded in this order, the second shares a and b."""
    return (Tree(0, [_leaf(1), _leaf(2)]),
            Tree(1, [_leaf(1), Tree(2, [_leaf(2), _leaf(3)])]))


@pytest.mark.parametrize("shipped", [False, True])
def test_replayed_batches_are_the_same_bits_as_traced_ones(shipped):
    """Recorded after (a b), (a (b c)) reused the leaves of a and b. Replayed before
    (a b) in a batch, it makes them where its code called for them (before c), and a
    new tree in the batch is traced in its turn, so the leaves' rows, and the sums of
    their gradients, come in the order tracing gives: values and gradients are bit for
    bit those of tracing the same batch."""
    from dynnet.models import NaryTreeLSTM

    class Replaying(NaryTreeLSTM):
        loss = dynnet.function(NaryTreeLSTM.loss, reuse_traces=True)

    torch.manual_seed(0)
    model = Replaying(VOCAB, embed_dim=6, hidden_dim=5) if shipped else TreeModel()
    first, second = _two_trees()
    model.loss.batch([first, second])  # makes the segments
    model.loss.batch([first, second])  # keeps the traces
    params = list(model.parameters())
    outs = []
    # replayed but for a new tree first (traced in its turn), against all traced
    for batch in ([Tree(0, [_leaf(3), _leaf(2)]), second, first],
                  [Tree(0, [_leaf(3), _leaf(2)]), *reversed(_two_trees())]):
        with dynnet.profile() as p:
            loss = model.loss.batch(batch)
            loss = loss[0] if isinstance(loss, tuple) else loss
        outs.append((p.replayed, loss, torch.autograd.grad(loss.sum(), params)))
    (replayed, loss_r, grads_r), (traced, loss_t, grads_t) = outs
    assert replayed == 2 and traced == 0
    assert torch.equal(loss_r, loss_t)
    assert all(torch.equal(a, b) for a, b in zip(grads_r, grads_t))


@pytest.mark.parametrize("workers", [0, 1])
def test_trainer_reusing_traces_takes_the_same_steps(workers):
    from dynnet import synthetic
    from dynnet.models import NaryTreeLSTM
    from dynnet.train import Trainer, TreeTask
    from dynnet.vocab import Vocab

    trees = synthetic.sentiment_trees(48, seed=5)
    vocab = Vocab(synthetic.VOCABULARY)
    vocab.index_trees(trees)
    trainers, replayed = [], []
    for reuse in (False, True):
        torch.manual_seed(0)
        model = NaryTreeLSTM(len(vocab), embed_dim=6, hidden_dim=6)
        trainer = Trainer(model, TreeTask(), trees, batch_size=8, lr=0.01, progress=False,
                          log=None, workers=workers, reuse_traces=reuse)
        for _ in range(3):
            with dynnet.profile() as p:
                trainer.train_epoch()
            replayed.append(p.replayed)
        trainers.append(trainer)
    plain, reusing = (dict(t.model.named_parameters()) for t in trainers)
    assert all(torch.equal(plain[name], reusing[name]) for name in plain)
    # with a worker, an example first traced there (not kept) is traced every time
    assert replayed[:3] == [0, 0, 0] and replayed[5] >= len(trees) - workers


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_on_cuda_replays_here_and_in_the_worker_equal_tracing():
    """A factory's value on the device (the zero state) is kept in the trace; the forked
    worker, which must not touch the device, traces such examples instead."""
    torch.manual_seed(0)
    model = Recurrent().cuda()

    @dynnet.function(reuse_traces=True)
    def last(ids):
        h = torch.zeros(3, device="cuda")
        c = torch.zeros(3, device="cuda")
        for word in ids:
            h, c = model.cell(model.embed(torch.tensor(word, device="cuda")), (h, c))
        return h

    rng = random.Random(0)
    sentences = [[rng.randrange(20) for _ in range(rng.randrange(2, 7))] for _ in range(24)]
    batches = [sentences[i:i + 6] for i in range(0, 24, 6)]
    with dynnet.run_eagerly():
        expected = torch.stack([last(s) for s in sentences])
    for _ in range(3):
        out = torch.cat(list(last.batches(batches, workers=1)))
        torch.testing.assert_close(out, expected)


def test_a_count_bounds_the_examples_kept():
    @dynnet.function(reuse_traces=3)
    def double(n):
        return torch.tensor(float(n)) * 2

    xs = list(range(10))
    for _ in range(3):
        with dynnet.profile() as p:
            assert double.batch(xs).tolist() == [2.0 * x for x in xs]
    assert p.replayed == 3 and len(double.traces.current.entries) == 3
    with pytest.raises(ValueError, match="reuse_traces"):
        dynnet.function(lambda n: n, reuse_traces=0)


def test_examples_made_anew_for_every_batch_are_named_in_the_fallbacks():
    model = TreeModel()
    with dynnet.profile() as p:
        for _ in range(4):  # equal trees, but new objects every time
            model.loss.batch(random_trees(4, max_depth=4, seed=0))
    assert p.replayed == 0 and p.recorded > 0
    assert any("none replayed" in line and "same argument objects" in line
               for line in p.fallbacks), p.fallbacks


def test_a_shared_list_changed_in_place_is_seen():
    @dynnet.function(reuse_traces=True)
    def picked(n, skip=()):
        return torch.tensor(0.0 if n in skip else float(n))

    skip = [1]
    for _ in range(3):
        assert picked.batch([1, 2], skip=skip).tolist() == [0.0, 2.0]
    skip[0] = 2
    assert picked.batch([1, 2], skip=skip).tolist() == [1.0, 0.0]


class Configured(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.cfg = {"scale": 2.0, "layers": [1]}


@dynnet.function(reuse_traces=True)
def configured(values, model):
    h = model.lin(torch.tensor(values))
    if model.training:
        h = h * model.cfg["scale"]
    for _ in model.cfg["layers"]:
        h = torch.tanh(h)
    return h


def test_a_model_given_as_a_shared_keyword_argument_is_seen_in_full():
    """Its mode and its plain settings, here a dict changed in place and replaced."""
    torch.manual_seed(0)
    model = Configured()
    xs = [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]

    def check():
        with dynnet.run_eagerly():
            expected = torch.stack([configured(x, model=model) for x in xs])
        for _ in range(3):
            torch.testing.assert_close(configured.batch(xs, model=model), expected)

    check()
    model.eval()
    check()
    model.train()
    model.cfg["scale"] = 5.0
    check()
    model.cfg["layers"].append(2)
    check()
    model.cfg = {"scale": 1.0, "layers": []}
    check()


class _Config:
    def __init__(self, depth):
        self.depth = depth


@dynnet.function(reuse_traces=True)
def _deepened(t, *, cfg):
    x = torch.tensor(float(t))
    for _ in range(cfg.depth):
        x = torch.tanh(x * 2.0)
    return x


def test_a_new_object_as_a_shared_keyword_argument_is_seen():
    """Seen by identity, and held while seen, so that a new object cannot take a freed
    one's id."""
    xs = [1, 2, 3]
    for depth in [1, 1, 2, 3, 4, 5, 1]:
        out = _deepened.batch(xs, cfg=_Config(depth))  # a new object; the last one freed
        with dynnet.run_eagerly():
            expected = _deepened.batch(xs, cfg=_Config(depth))
        torch.testing.assert_close(out, expected)


class _Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = 1

    @dynnet.function(reuse_traces=True)
    def f(self, tokens, scale=None):
        return torch.tensor(tokens) * (self.scale if scale is None else scale)


@pytest.mark.parametrize("where", ["keyword", "attribute"])
@pytest.mark.parametrize("values", [[2, 2, 2.0, True, 2], [0.5, np.float64(1.0),
                                                           np.float64(1.5), np.int64(2)]])
def test_settings_are_seen_with_their_class(where, values):
    """2, 2.0 and True are equal for Python but give other dtypes; numpy's numbers
    (from np.linspace, say) are settings too: as shared keyword arguments and as the
    model's attributes."""
    model = _Scaled()
    xs = [[1, 2, 3], [4, 5, 6]]
    for value in values:
        kwargs = {"scale": value} if where == "keyword" else {}
        model.scale = value
        for _ in range(2):
            out = model.f.batch(xs, **kwargs)
        with dynnet.run_eagerly():
            expected = model.f.batch(xs, **kwargs)
        assert out.dtype == expected.dtype and torch.equal(out, expected)


def test_parameters_whose_memory_is_replaced_are_seen():
    """`vector_to_parameters` sets `p.data`: the parameter is the same object, but a
    view of it (`self.w.t()`) recorded in a trace shows the old memory."""
    from torch.nn.utils import parameters_to_vector, vector_to_parameters

    class Viewing(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Parameter(torch.randn(10, 4))
            self.w = nn.Parameter(torch.randn(4, 4))

        @dynnet.function(reuse_traces=True)
        def f(self, seq):
            h = self.embed[torch.tensor(seq[0])]
            for w in seq[1:]:
                h = torch.tanh(h @ self.w.t()) + self.embed[torch.tensor(w)]
            return h.sum()

    torch.manual_seed(0)
    model = Viewing()
    xs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    model.f.batch(xs)
    model.f.batch(xs)
    vector_to_parameters(torch.randn_like(parameters_to_vector(model.parameters())),
                         model.parameters())
    with dynnet.run_eagerly():
        expected = torch.stack([model.f(x) for x in xs])
    for _ in range(4):
        torch.testing.assert_close(model.f.batch(xs), expected)


class _TrainOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.lin = nn.Linear(4, 4)

    def _loss(self, seq):
        h = torch.zeros(4)
        for w in seq:
            h = torch.tanh(self.lin(h) + self.embed(torch.tensor(w)))
        if self.training:
            h = h * 0.5
        return h.sum()

    loss = dynnet.function(_loss, reuse_traces=True)


def test_traces_a_worker_recorded_before_a_change_are_not_kept():
    """The model goes to eval() and back in the middle of an epoch: the traces the
    worker recorded in training mode come back after the change and must not be kept
    as the traces of the state the cache saw meanwhile."""
    torch.manual_seed(0)
    model = _TrainOnly()
    train = [[[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 1]], [[2, 2], [3]]]
    for i, losses in enumerate(model.loss.batches(train, workers=1)):
        losses.sum().backward()
        if i == 0:  # an evaluation in the middle of the epoch
            model.eval()
            with torch.no_grad():
                model.loss.batch([[5, 6, 7]])
            model.train()
    model.eval()
    for batch in train:
        with dynnet.run_eagerly():
            expected = torch.stack([model.loss(s) for s in batch])
        torch.testing.assert_close(model.loss.batch(batch), expected)


class _BagOfWords(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 2)

    @dynnet.function(reuse_traces=True)
    def loss(self, pair):  # straight-line code: converted without a generator
        ids, label = pair
        h = self.embed(torch.tensor(ids)).sum(0)
        return F.cross_entropy(self.out(h), torch.tensor(label))


@pytest.mark.parametrize("workers", [0, 1])
def test_straight_line_functions_are_kept_and_replayed_too(workers):
    """A function with no pause point runs to its end when its example starts; its
    nodes are still the example's (it used to be never kept, 'returning something
    other than tensors')."""
    torch.manual_seed(0)
    model = _BagOfWords()
    pairs = [([1, 2, 3], 0), ([4, 5, 6], 1), ([7, 8, 9], 0), ([1, 5, 9], 1)]
    batches = [pairs[:2], pairs[2:]]
    with dynnet.run_eagerly():
        expected = torch.stack([model.loss(pair) for pair in pairs])
    for _ in range(4):
        with dynnet.profile() as p:
            out = torch.cat(list(model.loss.batches(batches, workers=workers)))
        torch.testing.assert_close(out, expected)
    assert p.replayed == 4 and not [f for f in p.fallbacks if "reuse_traces" in f]


def test_another_option_keeps_reuse_traces():
    """function(f, schedule=...) of a function that reuses traces keeps reusing them
    (with its bound); reuse_traces=False turns it off."""
    bounded = dynnet.function(TreeModel.loss.fn, reuse_traces=7)
    agenda = dynnet.function(bounded, schedule="agenda")
    assert agenda.schedule == "agenda" and agenda.traces.max_examples == 7
    assert dynnet.function(agenda, reuse_traces=False).traces is None
    assert dynnet.function(TreeModel.loss.fn, schedule="agenda").traces is None


def test_decoding_pauses_the_garbage_collector_and_restores_it():
    """Decoding many traces at once runs with Python's collector off (each collection
    would walk every object made so far); it is on again after, or stays off when the
    user had turned it off."""
    import gc

    from dynnet.example_traces import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("a decode that fails")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


class _ReadsItsParameters(nn.Module):
    """Decisions and numbers taken from parameter and buffer values while tracing."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.gate = nn.Parameter(torch.tensor(1.0))
        self.temp = nn.Parameter(torch.tensor(2.0), requires_grad=False)
        self.register_buffer("steps", torch.tensor(0))

    @dynnet.function(reuse_traces=True)
    def f(self, x):
        h = self.lin(torch.tensor(x))
        h = h if self.gate > 0 else -h
        h = h * self.temp.item() * (10 if self.steps >= 2 else 1)
        return h.sum()


def test_an_example_that_read_a_parameters_value_is_traced_again():
    """A replay repeated the branch and the number read from a parameter or buffer
    when the trace was recorded, though an in-place update (an optimizer step) had
    changed them since."""
    torch.manual_seed(0)
    model = _ReadsItsParameters()
    xs = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
    for _ in range(4):
        with dynnet.profile() as p:
            got = model.f.batch(xs)
        with dynnet.run_eagerly():
            want = torch.stack([model.f(x) for x in xs])
        torch.testing.assert_close(got, want)
        assert p.replayed == 0
        with torch.no_grad():
            model.gate.sub_(0.6)
            model.temp.add_(1.0)
            model.steps.add_(1)
    assert any("read the value of a tensor" in why for why in p.trace_misses), p.trace_misses


class _Mode:
    SUM, MAX = object(), object()  # stand for enum members: seen by identity


class _Settings(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self._depth = 1
        self.mode = _Mode.SUM
        self.cfg = {"extra": 0}

    @dynnet.function(reuse_traces=True)
    def f(self, x):
        h = torch.tensor(x)
        for _ in range(self._depth + self.cfg["extra"]):
            h = torch.tanh(self.lin(h))
        return h.sum() if self.mode is _Mode.SUM else h.max()


def test_private_attributes_and_objects_held_by_a_module_are_seen():
    """`self._depth` (a name with an underscore) and `self.mode = Mode.MAX` (an object
    other than a number or a string) were not seen: the old traces replayed."""
    torch.manual_seed(0)
    model = _Settings()
    xs = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]

    def check():
        for _ in range(2):
            got = model.f.batch(xs)
        with dynnet.run_eagerly():
            want = torch.stack([model.f(x) for x in xs])
        torch.testing.assert_close(got, want)

    check()
    model._depth = 2
    check()
    model.mode = _Mode.MAX
    check()
    model.cfg = {"extra": 1}
    check()


class _PlainEncode(nn.Module):
    """The tree model with a plain (not dynnet.function) encode, converted with loss."""

    def __init__(self, dim=6):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.cell = nn.Linear(2 * dim, dim)
        self.out = nn.Linear(dim, 5)

    def encode(self, tree):
        if tree.is_leaf:
            return self.embed(torch.tensor(tree.word_id))
        left, right = [self.encode(c) for c in tree.children]
        return torch.tanh(self.cell(torch.cat([left, right])))

    @dynnet.function(reuse_traces=True)
    def loss(self, tree):
        return F.cross_entropy(self.out(self.encode(tree)), torch.tensor(tree.label))


@pytest.mark.skipif(not can_fork(), reason="workers need the fork start method")
def test_clear_traces_in_a_loop_with_workers_keeps_none_of_their_older_traces():
    """Examples changed in place, then clear_traces(), mid-loop: the worker, forked
    before, sent back traces of the old examples, which were adopted into the cleared
    cache and replayed from then on."""
    torch.manual_seed(0)
    model = _PlainEncode()
    trees = random_trees(32, max_depth=5, seed=8)
    batches = [trees[i:i + 8] for i in range(0, 32, 8)]
    model.loss.batch(random_trees(16, max_depth=5, seed=9))  # the signatures, other trees
    with dynnet.profile() as profile:
        for i, _ in enumerate(model.loss.batches(batches, workers=1)):
            if i == 0:
                for t in trees:
                    t.label = (t.label + 1) % 5
                model.loss.clear_traces()
    assert profile.planned_batches == 3, profile.worker_misses
    got = torch.cat([model.loss.batch(b) for b in batches])
    with dynnet.run_eagerly():
        want = torch.stack([model.loss(t) for t in trees])
    torch.testing.assert_close(got, want)
