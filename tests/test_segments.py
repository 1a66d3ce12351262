"""Segments: straight-line tensor code (and simple while loops) recorded as one node."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dynnet
from dynnet.data import Tree
from tests.helpers import assert_batch_matches_loop
from tests.strategies import VOCAB, random_trees

D = 6


class Shrink(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(D, D)
        with torch.no_grad():
            self.cell.weight.mul_(0.3)

    @dynnet.function
    def run(self, x):
        steps = x.sum() * 0
        while x.norm() > 0.5:
            x = torch.tanh(self.cell(x)) * 0.9
            steps = steps + 1
        return x, steps


def _starts(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(D, generator=g) * (1 + k % 7)).requires_grad_() for k in range(n)]


def test_while_loop_runs_as_one_masked_loop_and_matches():
    model = Shrink()
    xs = _starts(12)
    model.run.batch(xs[:2])  # captures the loop
    with dynnet.profile() as prof:
        out = assert_batch_matches_loop(model.run, xs, model.parameters())
    loops = [n for sig, sizes in prof.group_sizes.items() if sig.kind == "loop" for n in sizes]
    assert loops == [len(xs)]  # one node per example, one group
    assert prof.rounds == 1
    assert len(set(out[1].tolist())) > 1  # the trip counts differ between examples


def test_loop_that_changes_shape_runs_as_python():
    @dynnet.function
    def grow(x):
        while x.shape[0] < 4:
            x = torch.cat([x, x[:1] * 2])
        return x

    xs = [torch.randn(n, requires_grad=True) for n in (1, 2, 3)]
    assert_batch_matches_loop(grow, xs)


def test_per_example_python_object_among_inputs_runs_op_by_op():
    class Box:
        def __init__(self, scale):
            self.scale = scale

    w = torch.randn(D, requires_grad=True)

    @dynnet.function
    def f(x, box):
        y = torch.tanh(x * w) * box.scale
        return torch.sigmoid(y) + y * 0.5

    xs = [torch.randn(D) for _ in range(4)]
    assert_batch_matches_loop(f, [(x, Box(k + 1.0)) for k, x in enumerate(xs)], [w])


def test_segment_with_per_example_data():
    embed = nn.Embedding(10, D)
    lin = nn.Linear(D, D)

    @dynnet.function
    def f(i, j):
        a = lin(embed(torch.tensor(i)))
        b = embed(torch.tensor(j))
        return torch.tanh(a) * torch.sigmoid(b)

    pairs = [(k % 10, (3 * k) % 10) for k in range(9)]
    f.batch(*zip(*pairs[:1]))  # capture
    with dynnet.profile() as prof:
        assert_batch_matches_loop(f, pairs, list(embed.parameters()) + list(lin.parameters()))
    assert prof.nodes == len(pairs)


def test_segment_with_one_value_under_two_names():
    w = torch.randn(D, requires_grad=True)

    @dynnet.function
    def f(x, same):
        y = torch.tanh(x * w)
        z = y if same else torch.sigmoid(x)
        return torch.tanh(y) * z + z  # a segment of (z, y): the same value twice when same

    xs = [torch.randn(D, requires_grad=True) for _ in range(6)]
    # the first example must not capture a template that reads one value for both
    # inputs; later ones replay the template captured from distinct values
    assert_batch_matches_loop(f, [(x, k % 2 == 0) for k, x in enumerate(xs)], [w])
    assert_batch_matches_loop(f, [(x, k % 3 != 1) for k, x in enumerate(xs)], [w])


def test_segment_site_with_several_keys_records_each_with_its_own_template():
    w = torch.randn(D, requires_grad=True)

    @dynnet.function
    def f(x, scale, flag):
        y = torch.tanh(x[:D] * w) * scale + x.sum() * flag
        return torch.sigmoid(y) * scale

    g = torch.Generator().manual_seed(1)
    # neighbours differ in one part of the key: the shape of x, scale or flag
    examples = [(torch.randn(D + k // 4 % 2, generator=g, requires_grad=True), 1.0 + k % 3,
                 k % 5 == 0) for k in range(12)]
    f.batch(*zip(*examples))  # capture every key
    with dynnet.profile() as prof:
        assert_batch_matches_loop(f, examples, [w])
    assert prof.nodes == 2 * len(examples)  # per example: its input x and one segment
    examples = examples[-1:] + examples
    with torch.no_grad(), dynnet.profile() as prof:  # another grad mode, other templates
        out = f.batch(*zip(*examples))  # (the first example has the last one's key else)
    assert not any(sig.grad_enabled for sig in prof.group_sizes if sig.kind == "segment")
    with dynnet.run_eagerly():
        expected = torch.stack([f(*ex) for ex in examples])
    torch.testing.assert_close(out, expected.detach())


class Mixed(nn.Module):
    """Straight-line code full of order-sensitive ops: every one is replayed batched."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(D, D)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, D))

    @dynnet.function
    def run(self, x, y):
        a = self.lin(x) - y                      # sub: tensor - tensor
        b = (y + 2.0) / (x.abs() + 1.0)          # div: tensor / tensor
        c = 3.0 - a * self.scale                 # scalar - tensor, shared parameter
        d = torch.where(a > b, a, b) ** 2        # where: order of branches
        e = torch.cat([d, c])[: D] - torch.cat([c, d])[: D]
        f = torch.atan2(e, b) + torch.maximum(a, c) - torch.pow(b.abs() + 1.0, x.tanh())
        g = torch.stack([f, e], dim=0)[1] @ self.lin.weight  # matmul by a shared matrix
        return (g - f).sum() / (a.sum().abs() + 1.0), g


def test_segment_replay_keeps_the_order_of_every_argument():
    """Values and gradients of a segment of non-commutative ops equal the loop's: a
    replay that swapped any two arguments (x - y vs y - x) would fail here."""
    model = Mixed()
    g = torch.Generator().manual_seed(3)
    examples = [(torch.randn(D, generator=g).requires_grad_(),
                 torch.randn(D, generator=g).requires_grad_()) for _ in range(9)]
    model.run.batch(*zip(*examples[:2]))  # capture the segments
    with dynnet.profile() as prof:
        assert_batch_matches_loop(model.run, examples, params=list(model.parameters()))
    segments = [sizes for sig, sizes in prof.group_sizes.items() if sig.kind == "segment"]
    assert segments == [[len(examples)]]  # the whole body (its comparison too), batched


class Stacked(nn.Module):
    """Layers picked by index (`self.layers[k]`, `self.heads[name]`): common in real
    models, and each call must join its statement's segment like `self.lin(x)` does."""

    def __init__(self, depth=3):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(D, D) for _ in range(depth))
        self.heads = nn.ModuleDict({"a": nn.Linear(D, 2), "b": nn.Linear(D, 2)})

    @dynnet.function
    def run(self, x, head):
        for k in range(len(self.layers)):
            x = torch.tanh(self.layers[k](x)) * 0.5 + x
        y = torch.sigmoid(self.heads[head](x)) * 2.0 - 1.0
        return y, x


def test_calls_of_indexed_submodules_are_recorded_in_segments():
    model = Stacked()
    g = torch.Generator().manual_seed(4)
    examples = [(torch.randn(D, generator=g).requires_grad_(), "ab"[k % 3 == 0])
                for k in range(10)]
    model.run.batch(*zip(*examples[:4]))  # capture the segments
    with dynnet.profile() as prof:
        assert_batch_matches_loop(model.run, examples, params=list(model.parameters()))
    segments = [sizes for sig, sizes in prof.group_sizes.items() if sig.kind == "segment"]
    # one segment per layer (each layer's own template, all examples at once) and one
    # per head (the examples that use it); no op recorded outside a segment
    assert sorted(sum(s) for s in segments) == sorted([len(examples)] * 3 + [4, 6])
    assert prof.nodes == len(examples) * (1 + 3 + 1)  # its input x, then 4 segments


def test_a_replaced_indexed_submodule_is_not_replayed_stale():
    model = Stacked()
    x = torch.randn(D)
    model.run.batch([x, x], ["a", "b"])
    model.layers[1] = nn.Linear(D, D)  # the segment of layer 1 must use the new one
    model.heads["a"] = nn.Linear(D, 2)
    out = model.run.batch([x, x], ["a", "b"])
    with dynnet.run_eagerly():
        expected = [model.run(x, "a"), model.run(x, "b")]
    torch.testing.assert_close(out[0], torch.stack([e[0] for e in expected]).detach())
    torch.testing.assert_close(out[1], torch.stack([e[1] for e in expected]).detach())


def test_segment_reading_lazy_values_inside_lists_and_tuples():
    """`states[0][1]` and `torch.stack(hs)` read lazy values through Python lists and
    tuples: the containers' structure joins the key and their lazy values are the
    segment's inputs, so the run still records one node (it used to run op by op)."""
    lin = nn.Linear(D, D)

    @dynnet.function
    def f(xs):
        states = [(torch.tanh(x), x * 2) for x in xs]  # per-example count of states
        hs = [h for h, _ in states]
        first = states[0][1]
        y = torch.sigmoid(lin(torch.stack(hs).sum(0))) * first - states[-1][0]
        return y * 3 + torch.stack(hs).mean()

    g = torch.Generator().manual_seed(5)
    examples = [([torch.randn(D, generator=g).requires_grad_() for _ in range(1 + k % 3)],)
                for k in range(9)]
    f.batch(*zip(*examples))  # capture one template per number of states
    with dynnet.profile() as prof:
        assert_batch_matches_loop(f, examples, params=list(lin.parameters()))
    segments = sorted(sum(s) for sig, s in prof.group_sizes.items() if sig.kind == "segment")
    assert segments == [3, 3, 3]  # the last statements: one node per example


def test_segment_template_is_not_replayed_on_another_list_structure():
    @dynnet.function
    def f(pair, k):
        y = torch.tanh(pair[0]) * pair[1] + pair[0] * 0.5
        return y * k

    x, z = torch.randn(D), torch.randn(D)
    f.batch([(x, z), (x, z)], [1.0, 1.0])
    # a list instead of a tuple, and a three-item tuple: each its own key
    out = f.batch([[x, z], (x, z, x), (x, z)], [1.0, 1.0, 2.0])
    expected = torch.stack([(torch.tanh(x) * z + x * 0.5) * k for k in (1.0, 1.0, 2.0)])
    torch.testing.assert_close(out, expected)


def test_values_shared_between_lists_key_the_template():
    """A template captured where `hs[0]` is `pairs[0][0]` must not be replayed where they
    differ (and the other way round)."""

    @dynnet.function
    def f(x, y, share):
        pairs = [(torch.tanh(x), y)]
        hs = [pairs[0][0] if share else torch.tanh(y)]
        out = torch.sigmoid(pairs[0][0]) * hs[0] + pairs[0][1] * 0.5
        return out * 2

    g = torch.Generator().manual_seed(6)
    examples = [(torch.randn(D, generator=g).requires_grad_(),
                 torch.randn(D, generator=g).requires_grad_(), k % 2 == 0) for k in range(8)]
    assert_batch_matches_loop(f, examples[:1] + examples, [])
    assert_batch_matches_loop(f, examples[1:2] + examples, [])


class ChildSum(nn.Module):
    """Child-sum style: comprehensions and `sum` over a per-example number of children,
    with a comprehension variable (`c`) that the run also assigns afterwards."""

    def __init__(self):
        super().__init__()
        self.leaf = nn.Linear(D, 2 * D)
        self.iou = nn.Linear(D, 2 * D)

    @dynnet.function
    def encode(self, tree):
        if isinstance(tree, torch.Tensor) or not isinstance(tree, list):
            h, c = torch.chunk(self.leaf(tree), 2)
            return torch.tanh(h), c
        states = [self.encode(child) for child in tree]
        h_sum = sum(h for h, _ in states)
        c_sum = sum([c * 0.5 for _, c in states])
        gate, c = torch.chunk(self.iou(h_sum), 2)
        c = torch.sigmoid(gate) * c_sum + torch.tanh(c) * len(states)
        return torch.tanh(c) * torch.stack([h for h, _ in states]).mean(0), c


def test_comprehensions_and_sums_over_children_run_inside_segments():
    model = ChildSum()
    g = torch.Generator().manual_seed(7)

    def tree(depth):
        if depth == 0:
            return torch.randn(D, generator=g).requires_grad_()
        n = 1 + int(torch.randint(3, (), generator=g))
        return [tree(max(0, depth - 1 - int(torch.randint(2, (), generator=g))))
                for _ in range(n)]

    trees = [tree(2 + k % 2) for k in range(8)]
    model.encode.batch(trees)  # capture one template per number of children
    with dynnet.profile() as prof:
        assert_batch_matches_loop(model.encode, trees, params=list(model.parameters()))
    n_inner = sum(_count_lists(t) for t in trees)
    n_leaves = sum(_count_leaves(t) for t in trees)
    assert sum(prof.groups_of(model.iou)) == n_inner
    # per leaf its input and one segment; per inner node ONE segment, sums included
    assert prof.nodes == 2 * n_leaves + n_inner


def _count_lists(tree):
    return 0 if not isinstance(tree, list) else 1 + sum(_count_lists(c) for c in tree)


def _count_leaves(tree):
    return 1 if not isinstance(tree, list) else sum(_count_leaves(c) for c in tree)


def test_per_example_data_read_inside_a_comprehension_stays_correct():
    emb = nn.Embedding(10, D)

    @dynnet.function
    def f(ids):
        rows = torch.stack([emb(torch.tensor(ids[k])) for k in range(2)])
        return torch.tanh(rows).sum(0) * 2.0 + rows[0]

    examples = [[k % 10, (3 * k) % 10] for k in range(7)]
    assert_batch_matches_loop(f, examples, params=list(emb.parameters()))


def test_lists_of_numbers_do_not_key_segments():
    """A sentence's word ids are per-example data: keying a segment by them would make
    one template, hence one group, per sentence."""
    emb = nn.Embedding(50, D)

    @dynnet.function
    def f(ids):
        total = 0.0
        for t in range(len(ids) - 1):
            total = total + torch.tanh(emb(torch.tensor(ids[t]))).sum()
        return total / (len(ids) - 1)

    def groups(n):
        examples = [[(7 * k + j) % 50 for j in range(4)] for k in range(n)]
        f.batch(examples)
        with dynnet.profile() as prof:
            assert_batch_matches_loop(f, examples, params=list(emb.parameters()))
        return prof.groups

    assert groups(12) == groups(3)


def test_a_number_per_example_runs_op_by_op_in_few_groups():
    """`x * w` with a float per example: a template per value would make a group per
    example; past a few values the code runs op by op, where the ops with a number
    join into one group whatever the number."""
    lin = nn.Linear(D, D)

    @dynnet.function
    def f(x, w):
        y = torch.tanh(lin(x)) * w + x * (1 - w)
        return y.sum() * 2

    g = torch.Generator().manual_seed(8)
    xs = [torch.randn(D, generator=g).requires_grad_() for _ in range(40)]
    two = [(x, 0.25 if k % 2 else 0.75) for k, x in enumerate(xs)]
    f.batch(*zip(*two))  # capture
    with dynnet.profile() as prof:
        assert_batch_matches_loop(f, two, params=list(lin.parameters()))
    assert {sig.kind for sig in prof.group_sizes} == {"stack", "segment"}  # two templates
    many = [(x, float(torch.rand((), generator=g))) for x in xs]
    f.batch(*zip(*many))
    with dynnet.profile() as prof:
        assert_batch_matches_loop(f, many, params=list(lin.parameters()))
    assert prof.groups <= 10  # not one per example


def test_range_of_a_lazy_count_is_not_captured_into_a_segment():
    """`range(n)` needs n's value: inside a segment capture it could not pause for it.
    Such a statement stays ordinary converted code (it pauses and batches), while
    `range(len(...))` and constant ranges may be part of a segment."""

    @dynnet.function
    def f(x):
        n = (x.sum() > 0).long() + 1
        ys = torch.stack([torch.tanh(x) * (k + 1) for k in range(n)]).sum(0) * 2 + x
        zs = torch.stack([x * k for k in range(len(ys))]).sum(0) + ys * 0.5
        return zs

    g = torch.Generator().manual_seed(9)
    examples = [torch.randn(D, generator=g).requires_grad_() for _ in range(8)]
    assert_batch_matches_loop(f, examples)


class Decoder(nn.Module):
    """Teacher forcing over a target sequence: the token of each step is a loop variable
    (`w`), the previous one a local (`prev`), both per-example data."""

    def __init__(self, vocab=12):
        super().__init__()
        self.emb = nn.Embedding(vocab, D)
        self.cell = nn.GRUCell(D, D)
        self.out = nn.Linear(D, vocab)

    @dynnet.function
    def loss(self, h, targets):
        total = 0.0
        prev = 0
        for w in targets:
            h = self.cell(self.emb(torch.tensor(prev)), h)
            total = total + F.cross_entropy(self.out(h), torch.tensor(w))
            prev = w
        return total / len(targets)


def test_tokens_from_loop_variables_are_segment_data():
    """`torch.tensor(w)` of a loop variable or local is per-example data, as for a
    parameter's attribute: the step is one node whatever the token (it was keyed by
    the token's value, one template per token), and `prev = w` stays out of it."""
    model = Decoder()
    g = torch.Generator().manual_seed(10)
    examples = [(torch.randn(D, generator=g).requires_grad_(),
                 [int(v) for v in torch.randint(12, (2 + k % 4,), generator=g)])
                for k in range(10)]
    assert_batch_matches_loop(model.loss, examples, params=list(model.parameters()))
    with dynnet.profile() as prof:
        model.loss.batch(*zip(*examples))
    steps = sum(len(t) for _, t in examples)
    # one node per step, plus per example its input h and the division by its length
    # (the steps of one example then run as one fused call: dynnet/recurrences.py)
    assert prof.nodes == steps + 2 * len(examples)
    assert len([sig for sig in prof.group_sizes if sig.kind == "segment"]) <= 2


def test_data_computed_in_the_same_run_is_not_read_early():
    emb = nn.Embedding(10, D)

    @dynnet.function
    def f(x, j):
        k = j + 1
        y = torch.tanh(emb(torch.tensor(k))) * x + x.sum()
        return y * 2

    g = torch.Generator().manual_seed(11)
    examples = [(torch.randn(D, generator=g).requires_grad_(), k % 9) for k in range(12)]
    assert_batch_matches_loop(f, examples, params=list(emb.parameters()))


def test_modules_picked_inside_a_comprehension():
    """`[self.layers[k](x) for k in range(3)]`: the callee's index is the
    comprehension's own variable, so the call cannot be hoisted out of it (it raised
    NameError); a replaced layer is used at once."""
    model = Stacked()

    @dynnet.function
    def run(x):
        ys = [torch.tanh(model.layers[k](x)) for k in range(len(model.layers))]
        return torch.stack(ys).sum(0) * 2 + x

    xs = [torch.randn(D).requires_grad_() for _ in range(5)]
    assert_batch_matches_loop(run, xs, params=list(model.parameters()))
    model.layers[1] = nn.Linear(D, D)
    assert_batch_matches_loop(run, xs, params=list(model.parameters()))


class _Box:
    def __init__(self, scale):
        self.scale = scale

    def get(self):
        return self.scale


def test_profile_names_segments_that_ran_op_by_op_and_why():
    """`dynnet.profile().fallbacks`: file:line of each segment whose calls ran op by op,
    with the reason, so that a user can see where code falls off the fast path."""
    lin = nn.Linear(D, D)

    @dynnet.function
    def f(x, box, w):
        a = torch.tanh(lin(x)) * box.get() + x  # a per-example object
        if a.sum() > -1e9:
            b = torch.sigmoid(a) * w + a * 2  # a number per example
        if b.sum() > -1e9:
            c = torch.tanh(b) + torch.rand(D) * 0 + b  # random numbers
        return c.sum()

    g = torch.Generator().manual_seed(12)
    xs = [torch.randn(D, generator=g) for _ in range(12)]
    args = (xs, [_Box(2.0)] * 12, [0.1 * k for k in range(12)])
    f.batch(*args)
    with dynnet.profile() as prof:
        out = f.batch(*args)
    with dynnet.run_eagerly():
        expected = torch.stack([f(*a) for a in zip(*args)])
    torch.testing.assert_close(out, expected)
    lines = prof.fallbacks
    line = f.fn.__code__.co_firstlineno
    where = {int(s.split(":")[1]) - line: s for s in lines}  # line: the decorator's
    assert "`box` is a per-example Python object (_Box) (12 calls)" in where[2]
    assert "`w` differs per example" in where[4] and "torch.tensor(...)" in where[4]
    assert "draws random numbers (torch.rand)" in where[6]
    assert "3 fallbacks: see .fallbacks" in repr(prof)
    with dynnet.profile() as prof:
        Stacked().run.batch([torch.randn(D)] * 3, ["a", "b", "a"])
    assert prof.fallbacks == []


def test_lists_of_numbers_are_segment_data():
    """`torch.tensor(targets)` of a per-example list of token ids (or floats) is data of
    the segment: examples with lists of one length share a node group; the values
    are the examples' own (it used to run op by op)."""
    emb = nn.Embedding(20, D)

    @dynnet.function
    def f(x, targets, weights):
        logits = torch.tanh(emb.weight @ x).repeat(len(targets), 1)
        nll = F.cross_entropy(logits, torch.tensor(targets), reduction="none")
        return (nll * torch.tensor(weights)).sum()

    g = torch.Generator().manual_seed(13)
    examples = [(torch.randn(D, generator=g).requires_grad_(),
                 [int(v) for v in torch.randint(20, (1 + k % 3,), generator=g)],
                 [0.5 + j for j in range(1 + k % 3)]) for k in range(9)]
    f.batch(*zip(*examples))
    with dynnet.profile() as prof:
        assert_batch_matches_loop(f, examples, params=list(emb.parameters()))
    assert prof.fallbacks == []
    assert sorted(sum(s) for sig, s in prof.group_sizes.items()
                  if sig.kind == "segment") == [3, 3, 3]  # one node per example


def test_profile_names_a_length_that_varies_per_example():
    emb = nn.Embedding(30, D)

    @dynnet.function
    def f(ids):
        total = 0.0
        for t in range(len(ids)):
            total = total + torch.tanh(emb(torch.tensor(ids[t]))).sum()
        return total * 2 / (len(ids) - 1)  # a per-example length in a segment

    examples = [[(k * j) % 30 for j in range(2 + k)] for k in range(12)]
    f.batch(examples)
    with dynnet.profile() as prof:
        assert_batch_matches_loop(f, examples, params=list(emb.parameters()))
    assert len(prof.fallbacks) == 1 and "a len(...) differs per example" in prof.fallbacks[0]


def test_profile_names_tensors_computed_per_example_from_python_values():
    """`emb.weight[i]` with a Python int computes eagerly per example; added to a lazy
    value it is a new static argument per call: the profile names the op's line."""
    emb = nn.Embedding(30, D)

    @dynnet.function
    def f(ids):
        total = torch.zeros(D)
        for i in ids:
            total = total + emb.weight[i]
        return total.tanh()

    examples = [[(k * j + 1) % 30 for j in range(2 + k % 3)] for k in range(12)]
    f.batch(examples)
    with dynnet.profile() as prof:
        assert_batch_matches_loop(f, examples, params=list(emb.parameters()))
    line = f.fn.__code__.co_firstlineno + 4  # (the decorator) total = total + emb.weight[i]
    assert any(f":{line}: operator.add ran with" in s and "as a static argument" in s
               for s in prof.fallbacks), prof.fallbacks


def test_outside_autograd_segments_compute_into_the_arenas():
    """Under no_grad a segment's last elementwise ops write their results straight into
    the arena rows of their group (no copy); values must be those of eager PyTorch,
    through the arenas (a later level reads them there) and in the outputs."""
    from dynnet import segments
    from tests.strategies import random_trees
    from tests.test_arena import TreeLSTM  # inline ops; its segments end in tanh and +

    torch.manual_seed(0)
    model = TreeLSTM()
    trees = random_trees(12, max_depth=7, seed=2)
    with torch.no_grad():
        h, c = model.encode.batch(trees)
        with dynnet.run_eagerly():
            want = [model.encode(t) for t in trees]
    torch.testing.assert_close(h, torch.stack([w[0] for w in want]))
    torch.testing.assert_close(c, torch.stack([w[1] for w in want]))
    code = TreeLSTM.encode.fn.__code__
    ours = [t for t in segments._templates.values()
            if isinstance(t, segments.SegmentTemplate) and t.sig.origin[0] == code.co_filename
            and code.co_firstlineno < t.sig.origin[1] < code.co_firstlineno + 12]
    assert ours and all(len(t.writes) == 2 for t in ours)  # h and c of both segments


class WordTree(nn.Module):
    """Leaves from a word alone: a call on data."""

    def __init__(self, vocab=6, dim=5):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.leaf = nn.Linear(dim, dim)
        self.mix = nn.Linear(2 * dim, dim)

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            return torch.tanh(self.leaf(self.embed(torch.tensor(tree.word_id))))
        left, right = [self.encode(c) for c in tree.children]
        return torch.tanh(self.mix(torch.cat([left, right])))


class DropoutWordTree(WordTree):
    """The same, with dropout on the leaves: random numbers per leaf."""

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            x = self.embed(torch.tensor(tree.word_id))
            return torch.tanh(self.leaf(F.dropout(x, 0.5, self.training)))
        left, right = [self.encode(c) for c in tree.children]
        return torch.tanh(self.mix(torch.cat([left, right])))


def _word_trees(n, seed):
    trees = random_trees(n, max_depth=5, seed=seed)
    for t in trees:
        for node in t.nodes():
            if node.is_leaf:
                node.word_id %= 6  # few words: many leaves share one
    return trees


def _leaf_rows(model, trees):
    with dynnet.profile() as prof:
        out = model.encode.batch(trees)
    return sum(prof.groups_of(model.leaf)), out


def test_calls_on_equal_data_share_one_node_in_a_batch():
    torch.manual_seed(0)
    model = WordTree()
    trees = _word_trees(12, seed=5)
    words = {n.word_id for t in trees for n in t.nodes() if n.is_leaf}
    leaves = sum(1 for t in trees for n in t.nodes() if n.is_leaf)
    assert len(words) < leaves
    model.encode.batch(trees[:2])  # capture
    rows, _ = _leaf_rows(model, trees)
    assert rows == len(words)
    # values and gradients (the shared rows' gradients summed) as example by example
    assert_batch_matches_loop(model.encode, trees, params=list(model.parameters()))
    with torch.no_grad():  # and a new batch makes its own nodes
        assert _leaf_rows(model, trees[:3])[0] == len(
            {n.word_id for t in trees[:3] for n in t.nodes() if n.is_leaf})


def test_calls_with_random_ops_or_lazy_inputs_are_not_shared():
    torch.manual_seed(1)
    trees = _word_trees(10, seed=6)
    leaves = sum(1 for t in trees for n in t.nodes() if n.is_leaf)
    model = DropoutWordTree()  # in training mode: each leaf draws its own mask
    model.encode.batch(trees[:2])
    assert _leaf_rows(model, trees)[0] == leaves
    model.eval()  # the same code, dropout off: F.dropout is still a random op
    model.encode.batch(trees[:2])
    assert _leaf_rows(model, trees)[0] == leaves
    # internal nodes (lazy inputs) of equal subtrees are not shared either
    plain = WordTree()
    twins = [Tree(0, [Tree(0, word="a"), Tree(0, word="b")]) for _ in range(3)]
    for t in twins:
        t.children[0].word_id, t.children[1].word_id = 1, 2
    plain.encode.batch(twins)
    with dynnet.profile() as prof:
        plain.encode.batch(twins)
    assert sum(prof.groups_of(plain.mix)) == 3 and sum(prof.groups_of(plain.leaf)) == 2


@dynnet.function
def scaled(x, k):
    return torch.tensor(x) * torch.tensor(k)  # data alone, floats among it


def test_float_data_is_not_shared():
    # -0.0 == 0.0 for Python, not for torch: float data never keys a shared node
    with dynnet.profile() as prof:
        out = scaled.batch([1.0, 1.0, -0.0, 0.0], [2.0, 2.0, 1.0, 1.0])
    assert prof.nodes >= 4
    assert torch.signbit(out[2]) and not torch.signbit(out[3])


@dynnet.function
def _weighted_sum(xs, w):
    total = torch.zeros(())
    for t in range(len(xs)):
        scaled = torch.tensor(xs[t]) * w  # made before it is read: not carried
        total = total + torch.tanh(scaled)
    return total


def test_a_loop_segment_returns_only_what_the_next_iteration_reads():
    source = dynnet.to_code(_weighted_sum)
    assert "total, = dn__.segment(" in source  # `scaled` is no output of the segment
    w = torch.tensor(0.7, requires_grad=True)
    sequences = [[0.1, 0.2, 0.3], [0.4], [0.5, -0.6], []]
    assert_batch_matches_loop(_weighted_sum, [(s, w) for s in sequences], params=[w])


def test_inputs_that_share_a_word_node_keep_their_positions():
    """Embeddings of one word are one node in a batch but separate lazy objects: a
    segment captured where a list holds the same word twice reads each position from
    its own object, so a call whose words differ there gets the right rows (forward
    and gradients)."""
    torch.manual_seed(0)
    embed = nn.Embedding(10, 4)
    pos = nn.Parameter(torch.randn(3, 4))

    @dynnet.function
    def encode(ids):
        xs = []
        for w in ids:
            xs.append(embed(torch.tensor(w)))
        return (torch.stack(xs) * pos).sum() + xs[0].sum() * 2

    params = [embed.weight, pos]
    for batch in ([[1, 2, 1], [3, 4, 5]], [[3, 4, 5]], [[1, 2, 3], [6, 6, 7]],
                  [[2, 2, 2], [7, 8, 7], [0, 1, 2]]):
        assert_batch_matches_loop(encode, batch, params)


class _Settings:
    temperature = 1.0


def test_settings_read_from_other_objects_are_part_of_the_key():
    """`model.temperature` of an argument and `cfg.SCALE` of a module of the user's,
    read inside straight-line code and a while loop, are inputs of the segment: a
    change is never replayed stale."""
    import types

    torch.manual_seed(0)
    net = nn.Linear(D, D)
    net.temperature = 1.0
    cfg = types.ModuleType("cfg")
    cfg.SCALE = 1.0

    @dynnet.function
    def score(model, x, settings):
        y = model(x)
        return torch.tanh(y / model.temperature) + y * settings.temperature

    def shrink(x):
        while x.norm() > cfg.SCALE:
            x = x * 0.5
        return x

    shrink.__globals__["cfg"] = cfg
    shrink = dynnet.function(shrink)
    xs = [torch.randn(D) for _ in range(3)]
    box = _Settings()
    for temperature, scale in [(1.0, 1.0), (1.0, 1.0), (10.0, 0.01), (0.5, 3.0)]:
        net.temperature = box.temperature = temperature
        cfg.SCALE = scale
        assert_batch_matches_loop(score, [(net, x, box) for x in xs], list(net.parameters()))
        assert_batch_matches_loop(shrink, [x * 10 for x in xs])


class _AliasBase(nn.Module):
    def __init__(self, dim=5):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, dim)
        self.lin = nn.Linear(2 * dim, dim)
        self.cells = nn.ModuleDict({"a": self.lin})
        self.kind = "a"


class _Plain(_AliasBase):
    @dynnet.function
    def enc(self, t):
        if t.is_leaf:
            return self.emb(torch.tensor(t.word_id))
        left, right = [self.enc(c) for c in t.children]
        h = torch.tanh(self.lin(torch.cat([left, right])))
        return h * 2 + 1


class _Aliased(_AliasBase):
    @dynnet.function
    def enc(self, t):
        emb, lin = self.emb, self.lin
        act = torch.tanh
        if t.is_leaf:
            return emb(torch.tensor(t.word_id))
        left, right = [self.enc(c) for c in t.children]
        h = act(lin(torch.cat([left, right])))
        return h * 2 + 1


class _GetAttrAndSetting(_AliasBase):
    @dynnet.function
    def enc(self, t):
        layer = getattr(self, "emb")
        if t.is_leaf:
            return layer(torch.tensor(t.word_id))
        left, right = [self.enc(c) for c in t.children]
        h = torch.tanh(self.cells[self.kind](torch.cat([left, right])))
        return h * 2 + 1


class _OtherReceiver(_AliasBase):
    @dynnet.function
    def enc(m, t):  # noqa: N805 - the receiver need not be called self
        if t.is_leaf:
            return m.emb(torch.tensor(t.word_id))
        left, right = [m.enc(c) for c in t.children]
        h = torch.tanh(m.lin(torch.cat([left, right])))
        return h * 2 + 1


class _MethodAlias(_AliasBase):
    @dynnet.function
    def enc(self, t):
        again = self.enc  # the class's own method: user code, never a segment callee
        if t.is_leaf:
            return self.emb(torch.tensor(t.word_id))
        left, right = [again(c) for c in t.children]
        h = torch.tanh(self.lin(torch.cat([left, right])))
        return h * 2 + 1


@pytest.mark.parametrize("cls", [_Aliased, _GetAttrAndSetting, _OtherReceiver, _MethodAlias])
def test_natural_spellings_of_the_same_model_record_the_same_segments(cls):
    """`lin = self.lin`, `act = torch.tanh`, `getattr(self, "emb")`,
    `self.cells[self.kind]` and a receiver named `m` ran their lines op by op (2.6x the
    nodes, 4x the groups) and the profile said nothing."""
    torch.manual_seed(0)
    plain, other = _Plain(), cls()
    other.load_state_dict(plain.state_dict())
    trees = random_trees(10, max_depth=6, seed=5)
    counts = []
    for model in (plain, other):
        model.enc.batch(trees)  # capture the segments
        with dynnet.profile() as p:
            model.enc.batch(trees)
        counts.append((p.nodes, p.groups, len(p.fallbacks)))
    assert counts[1] == counts[0]
    assert_batch_matches_loop(other.enc, trees, params=other.parameters())
