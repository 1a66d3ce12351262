"""The central oracle: batched results equal running the function example by example."""

import collections
import dataclasses
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings

import dynnet
from tests.helpers import assert_batch_matches_loop
from tests.strategies import VOCAB, chain_tree, random_trees, sequence_batches, tree_batches

DIM = 8


class TreeReduce(nn.Module):
    """The simplest recursive model: leaves are embeddings, a node sums and squashes."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.w = nn.Parameter(torch.randn(DIM) * 0.5)

    @dynnet.function
    def reduce(self, tree):
        if tree.is_leaf:
            return self.embed(torch.tensor(tree.word_id))
        total = sum(self.reduce(child) for child in tree.children)
        return torch.tanh(total * self.w + 0.1)


class ModuleTreeLSTM(nn.Module):
    """Binary tree-LSTM whose cells are modules (Linear, Embedding)."""

    def __init__(self, dim=DIM):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.leaf = nn.Linear(dim, 3 * dim)
        self.internal = nn.Linear(2 * dim, 5 * dim)
        self.out = nn.Linear(dim, 5)

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            word = torch.tensor(tree.word_id, device=self.embed.weight.device)
            i, o, u = self.leaf(self.embed(word)).chunk(3)
            c = torch.sigmoid(i) * torch.tanh(u)
            return torch.sigmoid(o) * torch.tanh(c), c
        (hl, cl), (hr, cr) = [self.encode(child) for child in tree.children]
        i, fl, fr, o, u = self.internal(torch.cat([hl, hr])).chunk(5)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * cl + torch.sigmoid(fr) * cr
        return torch.sigmoid(o) * torch.tanh(c), c

    @dynnet.function
    def loss(self, tree):
        h, _ = self.encode(tree)
        return F.cross_entropy(self.out(h), torch.tensor(tree.label))


class InlineTreeLSTM(nn.Module):
    """The same tree-LSTM written with raw parameters and inline torch ops."""

    def __init__(self, dim=DIM):
        super().__init__()
        self.E = nn.Parameter(torch.randn(VOCAB, dim) * 0.3)
        self.W_leaf = nn.Parameter(torch.randn(dim, 3 * dim) * 0.3)
        self.W = nn.Parameter(torch.randn(2 * dim, 5 * dim) * 0.3)
        self.b = nn.Parameter(torch.zeros(5 * dim))

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            x = self.E[tree.word_id]
            gates = x @ self.W_leaf
            i, o, u = gates[:DIM], gates[DIM:2 * DIM], gates[2 * DIM:]
            c = i.sigmoid() * u.tanh()
            return o.sigmoid() * c.tanh(), c
        left, right = tree.children
        hl, cl = self.encode(left)
        hr, cr = self.encode(right)
        gates = torch.matmul(torch.cat((hl, hr), dim=-1), self.W) + self.b
        i, fl, fr, o, u = torch.split(gates, DIM)
        c = i.sigmoid() * u.tanh() + fl.sigmoid() * cl + fr.sigmoid() * cr
        h = o.sigmoid() * torch.tanh(c)
        return h, c


class SequenceLSTM(nn.Module):
    def __init__(self, dim=4, hidden=6):
        super().__init__()
        self.cell = nn.LSTMCell(dim, hidden)
        self.out = nn.Linear(hidden, 3)

    @dynnet.function
    def run(self, xs):
        h = torch.zeros(self.cell.hidden_size)
        c = torch.zeros(self.cell.hidden_size)
        outputs = []
        for x in xs:
            h, c = self.cell(x, (h, c))
            outputs.append(self.out(h))
        return torch.stack(outputs).log_softmax(-1).sum(0), h


@settings(max_examples=15, deadline=None)
@given(tree_batches())
def test_recursive_tree_reduction(trees):
    model = TreeReduce()
    assert_batch_matches_loop(model.reduce, trees, model.parameters())


@settings(max_examples=15, deadline=None)
@given(tree_batches())
def test_tree_lstm_with_modules(trees):
    model = ModuleTreeLSTM()
    assert_batch_matches_loop(model.loss, trees, model.parameters())


@settings(max_examples=15, deadline=None)
@given(tree_batches())
def test_tree_lstm_inline_ops(trees):
    model = InlineTreeLSTM()
    assert_batch_matches_loop(model.encode, trees, model.parameters())


class ChildSumLists(nn.Module):
    """A child-sum tree-LSTM over any number of children, written with the containers
    and builtins that segments take: the states in a list, comprehensions, `sum`,
    `zip`, `len`, indexing, and its layers in a ModuleDict."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleDict({"iou": nn.Linear(DIM, 3 * DIM),
                                     "forget": nn.Linear(DIM, DIM)})

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            h = torch.tanh(self.embed(torch.tensor(tree.word_id)))
            return h, h * 0.5
        states = [self.encode(child) for child in tree.children]
        h_sum = sum(h for h, _ in states)
        i, o, u = torch.chunk(self.layers["iou"](h_sum), 3)
        forgets = [torch.sigmoid(self.layers["forget"](h)) for h, _ in states]
        c = torch.sigmoid(i) * torch.tanh(u) + sum(f * c for f, (_, c) in zip(forgets, states))
        h = torch.sigmoid(o) * torch.tanh(c) + states[0][0] / len(states)
        return h, c


@settings(max_examples=15, deadline=None)
@given(tree_batches(nary=True))
def test_child_sum_over_lists_and_comprehensions(trees):
    model = ChildSumLists()
    assert_batch_matches_loop(model.encode, trees, model.parameters())


@pytest.mark.parametrize("strategy", ["depth", "agenda"])
def test_tree_lstm_schedules_agree(strategy):
    model = ModuleTreeLSTM()
    assert_batch_matches_loop(model.loss, random_trees(30, max_depth=7), model.parameters(),
                              strategy=strategy)


@settings(max_examples=15, deadline=None)
@given(sequence_batches())
def test_lstm_over_variable_length_sequences(seqs):
    model = SequenceLSTM()
    seqs = [s.requires_grad_() for s in seqs]
    assert_batch_matches_loop(model.run, seqs, model.parameters())


def test_outputs_tensors_tuples_dicts_and_ragged():
    lin = nn.Linear(3, 3)

    @dynnet.function
    def many(x, n):
        y = torch.relu(lin(x))
        return {"y": y, "pair": (y.sum(), y * 2), "rows": x[:n] * 1.0, "n": n}

    xs = [torch.randn(3, requires_grad=True) for _ in range(4)]
    ns = [1, 3, 2, 3]
    ragged = assert_batch_matches_loop(many, list(zip(xs, ns)), lin.parameters())
    assert isinstance(ragged, list) and len(ragged) == 4  # rows differ in length
    same = assert_batch_matches_loop(many, [(x, 2) for x in xs], lin.parameters())
    assert same["y"].shape == (4, 3) and same["pair"][0].shape == (4,)
    assert same["n"] == [2, 2, 2, 2]


def test_deep_chain_beyond_recursion_limit():
    model = ModuleTreeLSTM()
    tree = chain_tree(sys.getrecursionlimit() + 200)
    with torch.no_grad():
        got = model.loss(tree)
        h, c = None, None
        # the eager oracle, iteratively (the recursive original would overflow)
        node_stack, values = [tree], {}
        order = []
        while node_stack:
            t = node_stack.pop()
            order.append(t)
            node_stack.extend(t.children)
        for t in reversed(order):
            if t.is_leaf:
                i, o, u = model.leaf(model.embed(torch.tensor(t.word_id))).chunk(3)
                c = torch.sigmoid(i) * torch.tanh(u)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                (hl, cl), (hr, cr) = values[id(t.children[0])], values[id(t.children[1])]
                i, fl, fr, o, u = model.internal(torch.cat([hl, hr])).chunk(5)
                c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * cl + \
                    torch.sigmoid(fr) * cr
                h = torch.sigmoid(o) * torch.tanh(c)
            values[id(t)] = (h, c)
        want = F.cross_entropy(model.out(values[id(tree)][0]), torch.tensor(tree.label))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_single_call_and_empty_batch():
    model = TreeReduce()
    tree = random_trees(1)[0]
    with dynnet.run_eagerly():
        want = model.reduce(tree)
    torch.testing.assert_close(model.reduce(tree), want)
    assert model.reduce.batch([]) == []


def test_batch_reads_iterables_without_a_length_as_map_does():
    @dynnet.function
    def f(x, k):
        return x * k

    xs = [torch.randn(3) for _ in range(4)]
    want = torch.stack([x * k for x, k in zip(xs, range(4))])
    torch.testing.assert_close(f.batch((x for x in xs), range(4)), want)
    torch.testing.assert_close(f.batch(iter(xs), map(int, "0123")), want)
    model = TreeReduce()
    trees = random_trees(3, max_depth=3, seed=0)
    torch.testing.assert_close(model.reduce.batch(t for t in trees), model.reduce.batch(trees))


def test_shared_tensors_are_not_copied_per_example():
    weight = torch.randn(4, 4, requires_grad=True)

    @dynnet.function
    def f(x):
        return torch.tanh(x @ weight)

    xs = [torch.randn(4) for _ in range(6)]
    with dynnet.profile() as prof:
        assert_batch_matches_loop(f, xs, [weight])
    assert prof.groups <= 3  # stack inputs, matmul, tanh


def test_cuda_matches_cpu(device):
    model = ModuleTreeLSTM().to(device)
    trees = random_trees(12)

    @dynnet.function
    def loss(tree):
        h, _ = model.encode(tree)
        return F.cross_entropy(model.out(h), torch.tensor(tree.label, device=device))

    assert_batch_matches_loop(loss, trees, model.parameters())


def test_profile_splits_time_into_trace_schedule_and_execute():
    model = ModuleTreeLSTM()
    trees = random_trees(10, seed=2)
    with dynnet.profile() as prof, torch.no_grad():
        model.loss.batch(trees)
    assert prof.batches == 1 and prof.nodes > 0 and prof.groups > 0
    parts = (prof.trace_seconds, prof.schedule_seconds, prof.execute_seconds)
    assert all(p > 0 for p in parts)
    assert abs(sum(parts) - prof.total_seconds) < 1e-9
    assert "us/node" in repr(prof) and "schedule=" in repr(prof)


def test_a_model_converted_after_its_first_batch_runs_in_its_new_dtype():
    """`model.double()` after a batch: the signatures of its calls held float32
    outputs (an embedding's output dtype changes with no change of its int input);
    they are forgotten when the model's parameters change dtype."""
    torch.manual_seed(0)
    model = ModuleTreeLSTM()
    trees = random_trees(6, max_depth=5, seed=3)  # words repeat: leaves shared per word
    model.loss.batch(trees)
    for convert in (model.double, model.float, model.double):
        convert()
        dtype = next(model.parameters()).dtype
        out = assert_batch_matches_loop(model.loss, trees, params=model.parameters())
        assert out.dtype == dtype


def test_batches_under_autocast_and_without_it_alternate():
    """Signatures inferred without autocast hold float32 outputs; a batch under
    torch.autocast (and the next one without) infers them again, in the dtypes eager
    PyTorch gives."""
    torch.manual_seed(0)
    model = ModuleTreeLSTM()
    trees = random_trees(6, max_depth=5, seed=4)
    for autocast in (False, True, True, False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model.encode.batch(trees)
            with dynnet.run_eagerly():
                expected = [model.encode(t) for t in trees]
        for got, want in zip(out, zip(*expected)):
            want = torch.stack(want)
            assert got.dtype == want.dtype
            torch.testing.assert_close(got.float(), want.float(), atol=2e-2, rtol=2e-2)


@dataclasses.dataclass
class _Encoded:
    h: torch.Tensor
    size: int = 0


def test_outputs_in_ordered_dicts_and_dataclasses():
    """Dict subclasses and dataclasses come back with computed tensors, stacked (their
    non-tensor fields as the list of the examples' values), not with lazy values."""
    torch.manual_seed(0)
    lin = nn.Linear(4, 4)

    @dynnet.function
    def ordered(x):
        return collections.OrderedDict(h=torch.tanh(lin(x)), c=x * 2)

    @dynnet.function
    def encoded(x):
        return _Encoded(torch.tanh(lin(x)), x.shape[0])

    xs = [torch.randn(4, requires_grad=True) for _ in range(3)]
    out = ordered.batch(xs)
    assert type(out) is collections.OrderedDict and list(out) == ["h", "c"]
    torch.testing.assert_close(out["h"], torch.stack([torch.tanh(lin(x)) for x in xs]))
    out["h"].sum().backward()
    enc = encoded.batch(xs)
    assert type(enc) is _Encoded and enc.size == [4, 4, 4]
    torch.testing.assert_close(enc.h, out["h"])
    single = encoded(xs[0])
    assert type(single.h) is torch.Tensor and single.size == 4
    assert_batch_matches_loop(ordered, xs, params=list(lin.parameters()))
