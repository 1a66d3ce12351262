"""The conditional_expressions pass: `a if c else b` with a test that can pause."""

import pytest
import torch

import dynnet
from tests.converter._oracle import batch_matches, same_as_original


def sign(x):
    return 1 if x > 0 else (-1 if x < 0 else 0)


LOG = []


def only_chosen_operand_runs(x):
    return LOG.append("a") or "a" if x else LOG.append("b") or "b"


@pytest.mark.parametrize("x", [-2, 0, 3.5])
def test_python_values(x):
    same_as_original(sign, x)


def test_only_the_chosen_operand_is_evaluated():
    LOG.clear()
    same_as_original(only_chosen_operand_runs, True)
    assert LOG == ["a", "a"]  # once by the original, once converted


def test_lazy_tests_pick_per_example():
    @dynnet.function
    def f(x):
        y = x * 3 if x.sum() > 0 else torch.tanh(x)
        return y + (1.0 if x.max() > 1 else 0.0)

    batch_matches(f, [torch.tensor([0.5, 2.0], requires_grad=True),
                      torch.tensor([-0.5, -2.0], requires_grad=True),
                      torch.tensor([0.2, 0.1], requires_grad=True)])


def test_in_a_lambda_the_test_waits_at_once():
    @dynnet.function
    def f(x):
        return list(map(lambda v: v * 2 if v.sum() > 0 else v, [x, -x]))

    batch_matches(f, [torch.tensor([1.0], requires_grad=True),
                      torch.tensor([-1.0], requires_grad=True)])


def test_pause_points_are_not_wrapped_twice():
    @dynnet.function
    def f(x):
        return x if x.sum() > 0 else -x

    assert dynnet.to_code(f).count("dn__.test(") == 1
