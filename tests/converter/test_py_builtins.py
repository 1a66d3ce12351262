"""Builtins where Python would need a lazy value: they pause (once) and then
decide as Python does, returning the original items so gradients flow."""

import pytest
import torch

import dynnet
from tests.converter._oracle import batch_matches, same_as_original


def python_uses(xs):
    return (max(xs), min(xs), max(*xs), min(xs, key=lambda v: -v), sorted(xs),
            sorted(xs, key=abs, reverse=True), any(v > 2 for v in xs), all(xs),
            sum(xs), abs(xs[0]), len(xs), list(enumerate(xs)), list(zip(xs, xs[1:])),
            list(reversed(xs)), round(2.567, 1), str(xs), repr(xs), format(3.14159, ".2f"),
            type(xs).__name__, max([], default=None), list(filter(lambda v: v > 0, xs)),
            list(filter(None, xs)), _sorted_in_place(xs), list(map(abs, xs)),
            list(map(lambda a, b: a * b, xs, xs[::-1])), xs[0] in xs, 99 not in xs,
            xs[0] in {xs[0]: 1}, (lambda v: v in xs)(xs[-1]))


def _sorted_in_place(xs):
    ys = list(xs)
    ys.sort(key=lambda v: -v)
    ys.sort()
    return ys


@pytest.mark.parametrize("xs", [[3, -1, 2], [0.5, 0.5, -7.0, 4]])
def test_python_values_unchanged(xs):
    same_as_original(python_uses, xs)


def test_empty_max_raises_as_python():
    def f(xs):
        return max(xs)

    same_as_original(f, [])


@dynnet.function
def extremes(x):
    rows = list(x)  # rows of a lazy tensor
    big = max(rows)
    small = min(rows, key=lambda r: r.abs())
    two = max(x[0], x[1])
    ordered = torch.stack(sorted(rows, key=lambda r: -r))
    return big * 2, small, two, ordered, any(r > 1 for r in rows), all(r > -1 for r in rows)


def test_extremes_on_lazy_rows_match_and_carry_gradients():
    torch.manual_seed(0)
    xs = [torch.randn(n, requires_grad=True) for n in (4, 4, 4)]
    batch_matches(extremes, xs)


def test_builtins_on_ragged_lazy_rows():
    torch.manual_seed(0)
    xs = [torch.randn(n, 2, requires_grad=True) for n in (1, 3, 5)]

    @dynnet.function
    def f(x):
        best = max(x, key=lambda r: r.sum())
        total = sum(r.sum() for r in x)
        pairs = [a * b for a, b in zip(x, reversed(x))]
        return best, total, torch.stack(pairs).sum(0), len(x)

    batch_matches(f, xs)


def test_filter_and_list_sort_on_lazy_rows():
    """filter() and list.sort(key=) test values Python's C code asks for: they wait
    once for every lazy answer, then decide as Python does, on the original rows."""
    torch.manual_seed(0)
    xs = [torch.randn(n, 3, requires_grad=True) for n in (2, 4, 5)]

    @dynnet.function
    def f(x):
        rows = list(x)
        kept = list(filter(lambda r: r.sum() > 0, rows)) or rows[:1]
        nonzero = list(filter(None, [r.max() > 0.5 for r in rows]))
        rows.sort(key=lambda r: r.sum())
        rows.sort(key=lambda r: r[0], reverse=True)
        return torch.stack(kept).sum(0), torch.stack(rows), len(nonzero)

    batch_matches(f, xs)


def test_map_calls_as_converted_code_calls():
    """map(fn, rows) over lists: a function of the user's that tests values, and str of
    lazy values, wait for them; over an endless iterator map stays Python's lazy one."""
    import itertools

    def flip_negative(r):
        return r if r.sum() > 0 else -r

    @dynnet.function
    def f(x):
        rows = list(x)
        flipped = torch.stack(list(map(flip_negative, rows)))
        scaled = list(map(lambda r, k: r * k, rows, range(len(rows))))
        first = next(map(lambda k: x[0] * k, itertools.count(2)))
        print(" ".join(map(str, rows)))
        return flipped.sum(0) + sum(scaled) + first

    batch_matches(f, [torch.randn(n, 2, requires_grad=True) for n in (1, 3, 4)])


def test_map_prints_what_the_original_prints(capsys):
    @dynnet.function
    def f(x):
        print(list(map(str, [x.sum(), x.max()])), *map(repr, [x[0]]))
        return x

    xs = [torch.tensor([1.0, 2.0]), torch.tensor([-3.0])]
    for x in xs:
        f.fn(x)
    expected = capsys.readouterr().out
    f.batch(xs)
    assert capsys.readouterr().out == expected


def test_in_and_not_in_on_lazy_values():
    """`s in [x[0], 6.0]` compared each element with Python's bool(): an error. The
    comparisons wait in one pause; Python's `is` comes first, as in Python."""

    @dynnet.function
    def f(x):
        s = x.sum()
        first = x[0]
        y = x * 2 if s in [first * 0 + 100, 6.0] else x
        y = y + 1 if first in (s, first) else y  # found by identity
        z = (lambda v: v not in [x[1]])(x[0])  # where code cannot pause
        return y * 3 if x.max() not in [0.0, 7.0] else y, z

    batch_matches(f, [torch.tensor([6.0, 0.0], requires_grad=True),
                      torch.tensor([1.0, 2.0], requires_grad=True),
                      torch.tensor([3.0, 7.0], requires_grad=True)])


def test_one_pause_for_all_items():
    @dynnet.function
    def f(x):
        return max(list(x))

    with dynnet.profile() as p:
        f.batch([torch.randn(6) for _ in range(4)])
    assert p.rounds == 1  # one wait for every key; the result is a computed row


def test_scalar_conversions():
    @dynnet.function
    def f(x):
        n = int(x.sum().abs()) % 3
        return float(x.max()) + n, bool(x.min() > 0), [float(v) for v in x]

    batch_matches(f, [torch.tensor([1.5, 2.5]), torch.tensor([-0.5, 3.0])])


@pytest.mark.parametrize("convert, error", [(int, ValueError), (float, ValueError),
                                            (bool, RuntimeError)])
def test_conversion_of_a_multi_element_lazy_raises_torchs_error(convert, error):
    @dynnet.function
    def f(x):
        return convert(x)

    with pytest.raises(error) as info:
        f.batch([torch.ones(2)])
    with pytest.raises(error) as eager:
        convert(torch.ones(2))
    assert str(eager.value) in str(info.value)


def test_range_of_a_lazy_value_and_type_and_isinstance():
    @dynnet.function
    def f(x):
        acc = x
        for _ in range(int(x.sum())):
            acc = acc * 0.5
        return acc, type(x) is torch.Tensor, isinstance(x, torch.Tensor)

    batch_matches(f, [torch.tensor([1.0, 2.0], requires_grad=True),
                      torch.tensor([0.0, 0.5], requires_grad=True)])


def test_round_of_a_lazy_value_raises_as_torch_does():
    @dynnet.function
    def f(x):
        return round(x)

    with pytest.raises(TypeError, match="type Tensor doesn't define __round__"):
        f.batch([torch.ones(())])


def test_tuples_of_lazy_keys_and_argument_errors():
    @dynnet.function
    def f(x):
        rows = list(x)
        best = max((r.sum(), i) for i, r in enumerate(rows))
        return best[0], best[1], sorted([(r.max(), -i) for i, r in enumerate(rows)])[0][1]

    batch_matches(f, [torch.randn(3, 2, requires_grad=True), torch.randn(4, 2, requires_grad=True)])

    def bad():
        return sorted(), max([1], bogus=1)

    same_as_original(bad)
