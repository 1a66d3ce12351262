"""Exceptions raised while converted code runs keep their type and point at the
user's file and line; try/except/finally around pauses behave as in Python."""

import traceback

import pytest
import torch

import dynnet
from tests.converter._oracle import batch_matches, line_of

HERE = __file__


def lookup(table, x):
    if x.sum() > 0:  # pauses before raising
        return table["missing"]
    return x


@dynnet.function
def uses_lookup(x):
    return lookup({}, x)


def test_exception_keeps_type_and_names_user_line_and_example():
    with pytest.raises(KeyError) as info:
        uses_lookup.batch([-torch.ones(2), torch.ones(2)])
    notes = "\n".join(info.value.__notes__)
    assert "example 1" in notes
    assert f"{HERE}:{line_of(lookup, 'table[')}" in notes
    frames = [f.filename for f in traceback.extract_tb(info.value.__traceback__)]
    assert HERE in frames  # the traceback shows the user's file, not generated code


def test_op_error_inside_a_branch_names_the_line():
    @dynnet.function
    def f(x):
        if x.sum() > 0:
            return x @ torch.ones(5)
        return x

    with pytest.raises(RuntimeError) as info:
        f.batch([torch.ones(3), -torch.ones(3)])
    text = str(info.value) + "\n".join(getattr(info.value, "__notes__", []))
    assert f"{HERE}:{line_of(f, 'x @ torch.ones(5)')}" in text


events = []


@dynnet.function
def guarded(x):
    try:
        events.append("try")
        if x.sum() > 0:
            raise ValueError("positive")
        y = x * 2
    except ValueError as e:
        y = -x if str(e) == "positive" else x
    else:
        events.append("else")
    finally:
        events.append("finally")
    return y


def test_try_except_else_finally_around_pauses():
    xs = [torch.tensor([1.0], requires_grad=True), torch.tensor([-1.0], requires_grad=True)]
    events.clear()
    batch_matches(guarded, xs)
    assert events.count("finally") == 4 and events.count("else") == 2  # eager + batched


def test_exception_from_a_paused_callee_reaches_the_callers_except():
    def inner(x):
        if x.sum() > 0:
            raise IndexError("deep")
        return x

    @dynnet.function
    def f(x):
        try:
            return inner(x) * 2
        except IndexError:
            return x * 10

    batch_matches(f, [torch.tensor([1.0], requires_grad=True),
                      torch.tensor([-1.0], requires_grad=True)])
