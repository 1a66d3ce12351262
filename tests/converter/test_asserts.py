"""The asserts pass: `assert` on a lazy value pauses; failures name the message,
the example and the user's line.

PYTEST_DONT_REWRITE: the originals must raise plain AssertionErrors, as users see them.
"""

import pytest
import torch

import dynnet
from tests.converter._oracle import line_of, same_as_original

HERE = __file__


def checked(x, msg):
    assert x > 0, msg
    assert x < 100
    return x


@pytest.mark.parametrize("x", [5, -1, 200])
def test_python_values_raise_as_python_does(x):
    same_as_original(checked, x, "must be positive")


def test_message_is_evaluated_only_on_failure():
    calls = []

    def message():
        calls.append(1)
        return "bad"

    @dynnet.function
    def f(x):
        assert x > 0, message()
        return x

    assert f(3) == 3 and not calls
    with pytest.raises(AssertionError, match="bad"):
        f(-3)


@dynnet.function
def positive(x):
    assert x.sum() > 0, "the sum must be positive"
    return x * 2


def test_lazy_failure_names_message_example_and_line():
    xs = [torch.ones(2), torch.ones(2), -torch.ones(2), torch.ones(2)]
    with pytest.raises(AssertionError) as info:
        positive.batch(xs)
    text = str(info.value)
    assert "the sum must be positive" in text
    assert "example 2" in text
    assert f"{HERE}:{line_of(positive, 'assert x.sum()')}" in text


def test_lazy_assert_without_message():
    @dynnet.function
    def f(x):
        assert x.sum() > 0
        return x

    with pytest.raises(AssertionError, match="example 1"):
        f.batch([torch.ones(1), -torch.ones(1)])


def test_passing_lazy_asserts_change_nothing():
    xs = [torch.ones(2) * k for k in (1.0, 2.0, 3.0)]
    assert torch.equal(positive.batch(xs), torch.stack(xs) * 2)


def test_lazy_multi_element_condition_raises_torchs_error():
    @dynnet.function
    def f(x):
        assert x > 0
        return x

    with pytest.raises(RuntimeError, match="more than one value"):
        f.batch([torch.ones(2)])


def test_assert_stays_an_assert_statement():
    assert "assert " in dynnet.to_code(positive)


def test_a_failed_assert_on_a_lazy_value_says_where_once():
    import torch

    import dynnet

    @dynnet.function
    def f(x):
        assert x.sum() < 1, "too big"
        return x

    try:
        f.batch([torch.zeros(2), torch.ones(2)])
    except AssertionError as e:
        assert "too big (example 1 of the batch, at " in str(e)
        assert not getattr(e, "__notes__", None)  # not again in a note
    else:
        raise AssertionError("the assert must fail for example 1")
