"""print and f-strings print, per example and in order, what the original prints."""

import torch

import dynnet


@dynnet.function
def chatty(x):
    total = x.sum()
    print("example with", x.shape[0], "items, total", total)
    print(f"total={total:.3f} first={x[0]} x={x}")
    if total > 0:
        print(f"positive: {[x.max(), 1]}", str(total), repr(x.min()), format(total, ".2f"))
    print("%.4f and %s" % (total, x[0]), "{:.2f}|{last}".format(total, last=x[-1]))
    text = "%5.1f" % total  # a statement of its own (a segment would not wait)
    print(text, "{}".format(x.max()))
    parts, named = (total, x[0]), {"t": total}
    print("{:.1f}/{}".format(*parts), "{t:.3f}".format(**named), "%.1f|%s" % parts)
    return total


def test_prints_match_the_original_example_by_example(capsys):
    xs = [torch.tensor([1.0, 2.0]), torch.tensor([-1.0, 0.5, 0.25]), torch.tensor([3.0])]
    with torch.no_grad():
        for x in xs:
            chatty.fn(x)
        expected = capsys.readouterr().out
        chatty.batch(xs)
        got = capsys.readouterr().out
    assert got == expected
    assert "LazyTensor" not in got


def test_fstrings_of_python_values_are_untouched(capsys):
    @dynnet.function
    def f(n):
        print(f"{n:>4}|{n!r}|{'s'}")
        return n

    f.fn(7)
    expected = capsys.readouterr().out
    f(7)
    assert capsys.readouterr().out == expected


def test_converted_fstring_formats_the_value():
    assert "dn__.value_of(" in dynnet.to_code(chatty)
