"""The logical_expressions pass: `and`/`or`/`not` keep Python's short circuit and
results; each truth test of a lazy value pauses."""

import pytest
import torch

import dynnet
from tests.converter._oracle import batch_matches, same_as_original


def values(a, b, c):
    return (a and b, a or b, a and b or c, not a, not (a or b), a and b and c, a or b or c)


@pytest.mark.parametrize("a,b,c", [(0, 2, 3), (1, 0, ""), ([], [1], None), ("x", "", 0.0)])
def test_results_are_operands_as_in_python(a, b, c):
    same_as_original(values, a, b, c)


LOG = []


def short_circuit(flag):
    def side(v):
        LOG.append(v)
        return v

    return (flag and side("and"), flag or side("or"))


@pytest.mark.parametrize("flag", [True, False])
def test_short_circuit(flag):
    LOG.clear()
    same_as_original(short_circuit, flag)
    assert LOG == (["and", "and"] if flag else ["or", "or"])


def test_left_operand_is_evaluated_once():
    calls = []

    def left():
        calls.append(1)
        return 5

    @dynnet.function
    def f():
        return left() and 7, left() or 7

    assert f() == (7, 5)
    assert len(calls) == 2


@dynnet.function
def logical(x, y):
    both = x.sum() > 0 and y.sum() > 0
    either = (x.sum() > 0) or y.sum()
    if x.sum() > 0 and not y.sum() > 0 or x.max() > 2:
        z = x + y
    else:
        z = x - y
    return both, z, not x.sum() > 0, either


def test_lazy_operands_batched_vs_one_by_one():
    torch.manual_seed(1)
    xs = [torch.randn(3, requires_grad=True) for _ in range(6)]
    ys = [torch.randn(3, requires_grad=True) for _ in range(6)]
    batch_matches(logical, list(zip(xs, ys)))


def test_value_of_and_is_the_lazy_operand_itself():
    @dynnet.function
    def f(x):
        return (x.sum() > 0) and x.sum() * 2

    out = batch_matches(f, [torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -2.0])])
    assert isinstance(out, list)  # a bool tensor for one example, a float for the other


def test_tests_are_expanded_per_operand():
    source = dynnet.to_code(logical)
    if_line = next(line for line in source.splitlines() if line.lstrip().startswith("if "))
    assert if_line.count("dn__.test(") == 3 and " and " in if_line and " or " in if_line


def test_in_lambdas_operands_become_functions():
    @dynnet.function
    def f(x):
        return list(map(lambda v: v.sum() > 0 and v * 2 or -v, [x, x * 3]))

    assert "dn__.and_(lambda" in dynnet.to_code(f)
    batch_matches(f, [torch.tensor([1.0], requires_grad=True),
                      torch.tensor([-1.0], requires_grad=True)])
