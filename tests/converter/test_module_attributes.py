"""Module attribute reads in converted methods (`dn__.module_attr`)."""

import pytest
import torch
from torch import nn

import dynnet
from dynnet.converter.operators.attributes import module_attr


class Net(nn.Module):
    scale = 3.0  # a class attribute: found before Module.__getattr__

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.register_buffer("offset", torch.ones(4))
        self.register_parameter("unused", None)
        self.gain = nn.Parameter(torch.full((4,), 2.0))
        self.plain = 7  # an ordinary instance attribute

    @property
    def width(self):
        return self.lin.in_features

    @dynnet.function
    def forward_one(self, x):
        y = self.lin(x) * self.gain + self.offset
        if self.unused is None:
            y = y * self.scale + self.plain + self.width
        return y.sum() + self.lin.bias.sum()


class Shadowing(nn.Module):
    def __getattr__(self, name):  # a class with its own __getattr__ keeps it
        if name == "magic":
            return 42
        return super().__getattr__(name)


@pytest.mark.parametrize("name", ["lin", "offset", "unused", "gain", "plain", "width", "scale",
                                  "training", "forward", "_parameters"])
def test_module_attr_equals_getattr(name):
    net = Net()
    assert module_attr(net, name) is getattr(net, name) or \
        module_attr(net, name) == getattr(net, name)


def test_module_attr_follows_values_that_move_or_differ_between_instances():
    class Holder(nn.Module):
        pass

    a, b = Holder(), Holder()
    a.part = nn.Linear(2, 2)
    b.part = nn.Parameter(torch.ones(2))  # same name, another of the module's dicts
    for _ in range(2):
        assert module_attr(a, "part") is a.part
        assert module_attr(b, "part") is b.part
    a.part = None  # a submodule set to None stays in _modules
    assert module_attr(a, "part") is None
    del a.part
    a.part = 5  # now an instance attribute
    assert module_attr(a, "part") == 5
    b.register_buffer("part2", torch.zeros(1))
    assert module_attr(b, "part2") is b.part2
    with pytest.raises(AttributeError, match="part3"):
        module_attr(b, "part3")


def test_module_attr_falls_back_for_other_objects():
    assert module_attr(Shadowing(), "magic") == 42
    assert module_attr(torch.zeros(2), "shape") == (2,)
    with pytest.raises(AttributeError, match="nothing"):
        module_attr(Net(), "nothing")


def test_converted_method_reads_module_attributes_fast_and_equal():
    net = Net()
    source = dynnet.to_code(Net.forward_one)
    for name in ("lin", "gain", "offset", "unused", "plain"):
        assert f"dn__.module_attr(self, '{name}')" in source
    for name in ("scale", "width"):  # the class defines them: plain reads
        assert f"self.{name}" in source
    xs = [torch.randn(4) for _ in range(5)]
    batched = net.forward_one.batch(xs)
    with dynnet.run_eagerly():
        expected = torch.stack([net.forward_one(x) for x in xs])
    torch.testing.assert_close(batched, expected)


def test_method_that_rebinds_self_is_left_alone():
    class Rebinding(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        @dynnet.function
        def f(self, x):
            self = self.lin
            return self(x)

    assert "module_attr" not in dynnet.to_code(Rebinding.f)
    m = Rebinding()
    x = torch.randn(2)
    torch.testing.assert_close(m.f(x), m.lin(x))


class PositionWeights(nn.Module):
    """The N-ary tree-LSTM's per-position matrices as one Parameter: `self.U[k] @ h`,
    and a transposed weight, `h @ self.V.t()`. Each read makes a new view; as a static
    argument of an op it made a new signature per call, one group per node."""

    def __init__(self, dim=5):
        super().__init__()
        self.U = nn.Parameter(torch.randn(2, dim, dim) * 0.3)
        self.V = nn.Parameter(torch.randn(dim, dim) * 0.3)
        self.dim = dim

    @dynnet.function
    def encode(self, tree):
        if not isinstance(tree, list):
            return torch.tanh(tree)
        total = torch.zeros(self.dim)
        for k, child in enumerate(tree):
            h = self.encode(child)
            total = total + self.U[k] @ h + h @ self.V.t()
        return torch.tanh(total)


def _nested(g, depth, dim=5):
    if depth == 0 or torch.rand((), generator=g) < 0.3:
        return torch.randn(dim, generator=g).requires_grad_()
    return [_nested(g, depth - 1, dim) for _ in range(2)]


def _inner(tree):
    return 0 if not isinstance(tree, list) else 1 + sum(_inner(c) for c in tree)


def test_views_of_parameters_batch_and_follow_replaced_data():
    from tests.helpers import assert_batch_matches_loop

    model = PositionWeights()
    g = torch.Generator().manual_seed(3)
    trees = [_nested(g, 4) for _ in range(12)]
    assert sum(_inner(t) for t in trees) > 20

    def groups(batch):
        model.encode.batch(batch)
        with dynnet.profile() as prof:
            model.encode.batch(batch)
        return prof.groups

    assert groups(trees + trees) == groups(trees)  # per level, not per node
    assert_batch_matches_loop(model.encode, trees, model.parameters())
    model.U.data = torch.randn(2, 5, 5)  # new storage: the views must not be stale
    model.V.data = torch.randn(5, 5)
    assert_batch_matches_loop(model.encode, trees, model.parameters())
