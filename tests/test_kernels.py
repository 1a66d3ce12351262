"""The faster kernels group calls run instead of an op (backends/kernels.py)."""

import numpy as np
import pytest
import torch

import dynnet
from dynnet.backends import kernels


@pytest.fixture
def numpy_calls(monkeypatch):
    """Counts the calls of numpy's tanh, chosen as the faster kernel (whatever this
    machine's timing says; `test_the_choice_is_measured_once` covers that)."""
    monkeypatch.setattr(kernels, "_numpy_faster", True)
    calls = []
    real = np.tanh

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels.np, "tanh", counted)
    return calls


def _close(got, want, dtype):
    # within a few ulps of torch's own tanh (both are about 1 ulp from exact)
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(got, want, rtol=4 * ulp, atol=4 * ulp * torch.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tanh_matches_torch_values_and_special_values(dtype, numpy_calls):
    torch.manual_seed(0)
    x = torch.cat([torch.randn(4000, dtype=dtype) * 3,
                   torch.logspace(-30, 2, 1000, dtype=dtype),
                   -torch.logspace(-30, 2, 1000, dtype=dtype),
                   torch.tensor([0.0, -0.0, float("inf"), -float("inf")], dtype=dtype)])
    got = kernels.tanh(x)
    assert numpy_calls, "a large CPU float tensor goes through numpy"
    assert got.dtype == dtype and got.shape == x.shape
    _close(got, torch.tanh(x), dtype)
    assert torch.signbit(got[-3]) and not torch.signbit(got[-4])  # -0.0 stays -0.0
    assert torch.isnan(kernels.tanh(torch.full((2048,), float("nan"), dtype=dtype))).all()


def test_tanh_writes_into_a_strided_out_and_reads_a_strided_input(numpy_calls):
    gates = torch.randn(64, 5, 128)
    out_rows = torch.zeros(100, 2, 128)
    dest = out_rows[10:74, 1]  # a strided view, like a group's rows in an arena
    result = kernels.tanh(gates[:, 4], out=dest)
    assert result is dest and numpy_calls
    _close(out_rows[10:74, 1], torch.tanh(gates[:, 4]), torch.float32)
    assert (out_rows[:10] == 0).all() and (out_rows[10:74, 0] == 0).all()


def test_tanh_keeps_torch_where_numpy_does_not_apply(numpy_calls):
    small = torch.randn(8, 16)
    assert torch.equal(kernels.tanh(small), torch.tanh(small))
    half = torch.randn(64, 64).half()
    assert torch.equal(kernels.tanh(half), torch.tanh(half))
    ints_out = torch.empty(64, 64, dtype=torch.float64)
    x = torch.randn(64, 64)
    kernels.tanh(x, out=ints_out)  # dtype differs from x: torch's out= semantics
    torch.testing.assert_close(ints_out, torch.tanh(x).double())
    assert not numpy_calls


def test_tanh_under_autograd_uses_torch_and_differentiates(numpy_calls):
    x = torch.randn(64, 128, requires_grad=True)
    y = kernels.tanh(x)
    assert y.grad_fn is not None and not numpy_calls
    y.sum().backward()
    torch.testing.assert_close(x.grad, 1 - torch.tanh(x.detach()) ** 2)
    with torch.no_grad():
        assert kernels.tanh(x).grad_fn is None
    assert numpy_calls, "outside autograd a parameter-like input still takes numpy"


def test_the_choice_is_measured_once(monkeypatch):
    monkeypatch.setattr(kernels, "_numpy_faster", None)
    faster = kernels.numpy_tanh_is_faster()
    assert faster in (True, False) and kernels._numpy_faster is faster
    monkeypatch.setattr(kernels.np, "tanh", None)  # a second measurement would fail
    assert kernels.numpy_tanh_is_faster() is faster


def test_torch_keeps_tanh_where_it_measured_faster(monkeypatch):
    monkeypatch.setattr(kernels, "_numpy_faster", False)
    monkeypatch.setattr(kernels.np, "tanh", None)  # would fail if called
    x = torch.randn(64, 128)
    assert torch.equal(kernels.tanh(x), torch.tanh(x))
    out = torch.empty(64, 128)
    assert kernels.tanh(x, out=out) is out and torch.equal(out, torch.tanh(x))


class _TanhTree(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(10, 128)
        self.mix = torch.nn.Linear(256, 128)

    @dynnet.function
    def encode(self, tree):
        if tree.is_leaf:
            return torch.tanh(self.embed(torch.tensor(tree.word_id)))
        left, right = [self.encode(c) for c in tree.children]
        return torch.tanh(self.mix(torch.cat([left, right]))).tanh()


def _trees(n):
    from dynnet.data import Tree

    rng = np.random.default_rng(0)

    def grow(depth):
        if depth == 0 or rng.random() < 0.3:
            t = Tree(label=0, word="w")
            t.word_id = int(rng.integers(10))
            return t
        return Tree(label=0, children=[grow(depth - 1), grow(depth - 1)])

    return [grow(int(rng.integers(1, 6))) for _ in range(n)]


def test_batched_inference_takes_numpy_and_equals_per_example_runs(numpy_calls):
    torch.manual_seed(0)
    model = _TanhTree()
    trees = _trees(40)
    with torch.no_grad():
        batched = model.encode.batch(trees)
        assert numpy_calls, "the batched group calls go through numpy"
        with dynnet.run_eagerly():
            one_by_one = torch.stack([model.encode(t) for t in trees])
    torch.testing.assert_close(batched, one_by_one)  # matrix products round differently


def test_reference_models_use_the_kernel_on_stacked_batches(numpy_calls):
    """The row-wise modules of dynnet.models run on stacked batches and call `tanh`
    themselves: numpy's there, torch's on one example's vectors."""
    from dynnet.models import NaryTreeLSTM, RecursiveNN

    trees = _trees(40)
    for cls in (NaryTreeLSTM, RecursiveNN):
        torch.manual_seed(0)
        model = cls(10, embed_dim=16, hidden_dim=64).eval()
        numpy_calls.clear()
        with torch.no_grad():
            batched = model.predict.batch(trees)
            assert numpy_calls, cls.__name__
            numpy_calls.clear()
            with dynnet.run_eagerly():
                one_by_one = torch.stack([model.predict(t) for t in trees])
            assert not numpy_calls  # 64 values per example: below the kernel's size
        torch.testing.assert_close(batched, one_by_one)


def test_measuring_the_kernels_draws_no_random_numbers(monkeypatch):
    monkeypatch.setattr(kernels, "_numpy_faster", None)
    torch.manual_seed(3)
    want = torch.rand(5)
    torch.manual_seed(3)
    kernels.numpy_tanh_is_faster()
    assert torch.equal(torch.rand(5), want)  # the user's random stream is untouched
