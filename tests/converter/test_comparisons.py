"""The comparisons pass: chains `a < b < c` test each link, evaluate each operand once."""

import pytest
import torch

import dynnet
from tests.converter._oracle import batch_matches, same_as_original


def chains(a, b, c):
    return (a < b < c, a <= b == c, a < b > c != a, a is not b is not c, a in [b, c] in [[b, c]])


@pytest.mark.parametrize("a,b,c", [(1, 2, 3), (3, 2, 1), (1, 1, 1), (0, 5, 5)])
def test_python_values(a, b, c):
    same_as_original(chains, a, b, c)


def test_each_operand_is_evaluated_once_and_in_order():
    log = []

    def v(x):
        log.append(x)
        return x

    @dynnet.function
    def f():
        return v(1) < v(2) < v(0) < v(5)

    assert f() is False
    assert log == [1, 2, 0]


def test_chain_on_lazy_values():
    @dynnet.function
    def f(x):
        s = x.sum()
        inside = -1 < s < 1
        return x * 2 if -1 < s <= 1 else x, inside

    xs = [torch.tensor([v], requires_grad=True) for v in (-3.0, -0.5, 0.5, 1.0, 2.0)]
    batch_matches(f, xs)


def test_single_comparisons_are_left_alone():
    @dynnet.function
    def f(x):
        return x < 1

    assert "dn__.test" not in dynnet.to_code(f)


def test_chain_in_a_lambda():
    @dynnet.function
    def f(x):
        return sorted([x, x - 1, x + 1], key=lambda v: 0 < v.sum() < 2)

    assert "compare_chain" in dynnet.to_code(f)
    batch_matches(f, [torch.tensor([1.0], requires_grad=True),
                      torch.tensor([3.0], requires_grad=True)])
