"""The control_flow pass: `if`/`while` tests pause the example when lazy."""

import inspect

import pytest
import torch

import dynnet
from tests.converter._oracle import batch_matches, same_as_original


def classify(x):
    if x > 1:
        return "big"
    elif x < -1:
        return "small"
    else:
        return "medium"


def collatz_steps(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def loop_else(xs, target):
    i = 0
    while i < len(xs):
        if xs[i] == target:
            break
        i += 1
    else:
        return -1
    return i


def nested_break_continue(n):
    out = []
    for i in range(n):
        if i % 2:
            continue
        j = 0
        while True:
            j += 1
            if j > i:
                break
        out.append(j)
    else:
        out.append("done")
    return out


@pytest.mark.parametrize("x", [-3, -1, 0, 1, 2.5])
def test_if_elif_else_on_python_values(x):
    same_as_original(classify, x)


@pytest.mark.parametrize("n", [1, 6, 7, 27])
def test_while_on_python_values(n):
    same_as_original(collatz_steps, n)


@pytest.mark.parametrize("target", [3, 9])
def test_while_else_and_break_on_python_values(target):
    same_as_original(loop_else, [1, 3, 5], target)


def test_for_else_continue_break_on_python_values():
    same_as_original(nested_break_continue, 7)


@dynnet.function
def branchy(x):
    if x.sum() > 1:
        y = x * 2
    elif x.sum() < -1:
        y = torch.tanh(x)
    else:
        y = -x
    return y


def test_if_on_lazy_values_takes_each_examples_branch():
    xs = [torch.full((3,), v, requires_grad=True) for v in (-2.0, -0.1, 0.2, 3.0)]
    batch_matches(branchy, xs)


def test_only_the_taken_branch_is_computed():
    @dynnet.function
    def f(x):
        if x.sum() > 0:
            return torch.exp(x)
        return torch.sin(x)

    with dynnet.profile() as p:
        f.batch([torch.ones(2), -torch.ones(2), torch.ones(2)])
    # per example: input, sum, > ; then exp (2 examples) or sin (1): 3 * 3 + 3
    assert p.nodes == 12


@dynnet.function
def halve_until_small(x):
    steps = 0
    while x.norm() > 1:
        x = x * 0.5
        steps += 1
    return x, steps


def test_while_on_lazy_values_runs_each_example_its_own_trip_count():
    xs = [torch.randn(4, requires_grad=True) * s for s in (0.1, 1.0, 5.0, 40.0)]
    out = batch_matches(halve_until_small, xs)
    assert len(set(out[1])) > 1


def test_test_of_a_multi_element_lazy_raises_torchs_error():
    @dynnet.function
    def f(x):
        if x > 0:
            return x
        return -x

    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value"):
        f.batch([torch.ones(3)])


def test_converted_code_keeps_statements_and_stays_short():
    source = dynnet.to_code(branchy)
    assert source.count("dn__.test(") == 2
    assert "if " in source and "elif " in source and "else:" in source
    compile(source, "<to_code>", "exec")
    original = inspect.getsource(branchy.fn).strip().splitlines()
    assert len(source.strip().splitlines()) <= 2 * len(original)


def test_constant_tests_are_left_alone():
    @dynnet.function
    def f(x):
        while True:
            if x.sum() > 0:
                break
            x = x + 1
        return x

    assert "while True:" in dynnet.to_code(f)
    batch_matches(f, [torch.tensor([-2.5]), torch.tensor([0.5])])
