"""Functions in every form users write them: nested, closures, lambdas, methods,
super(), mutual recursion, defaults, keyword and variadic arguments, global and
nonlocal; generators and async code are conversion errors naming file:line."""

import pytest
import torch
import torch.nn as nn

import dynnet
from tests.converter._oracle import batch_matches, line_of, same_as_original

HERE = __file__
SCALE = 0.5
calls = 0


def shrink(x, depth=0):
    """Mutual recursion with data-dependent depth (with grow)."""
    if x.norm() < 1 or depth > 30:
        return x, depth
    return grow(x * SCALE, depth + 1)


def grow(x, depth):
    if x.sum() > 0:
        return shrink(x * 0.9, depth + 1)
    return shrink(x, depth + 1)


@dynnet.function
def recursive(x):
    return shrink(x)


def test_mutual_recursion_with_value_dependent_depth():
    xs = [torch.full((3,), v, requires_grad=True) for v in (0.1, 2.0, -5.0, 40.0)]
    out = batch_matches(recursive, xs)
    assert len(set(out[1])) > 1


def closures_and_nonlocal(n):
    count = 0

    def bump(k=1):
        nonlocal count
        count += k

    add = lambda a, b=2: a + b  # noqa: E731
    for i in range(n):
        bump(add(i))
    return count


def variadic(*args, scale=1.0, **kwargs):
    def inner(a, /, b=10, *rest, c, **kw):
        return a + b + sum(rest) + c + sum(kw.values())

    return inner(*args, c=scale, **kwargs)


def with_global(x):
    global calls
    calls += 1
    return x * SCALE


def test_python_values():
    same_as_original(closures_and_nonlocal, 5)
    same_as_original(variadic, 1, 2, 3, 4, scale=2.0, d=5, e=6)
    same_as_original(variadic, 1, scale=3.0)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'a'"):
        dynnet.function(variadic)()
    before = calls
    same_as_original(with_global, 4)
    assert calls == before + 2


@dynnet.function
def keyword_heavy(x, w, *extra, bias=0.0, **options):
    def affine(v, scale=1.0, *, shift=0.0):
        return v * scale + shift

    y = affine(x, *extra[:1], shift=bias)
    if options.get("square") and y.sum() > 0:
        y = y * y
    return y


def test_defaults_keywords_and_variadics_on_lazy_values():
    torch.manual_seed(0)
    xs = [torch.randn(3, requires_grad=True) for _ in range(4)]
    ws = [torch.randn(3) for _ in range(4)]
    batch_matches(keyword_heavy, list(zip(xs, ws)), kwargs={"bias": 0.5, "square": True})


class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def step(self, x):
        return torch.tanh(self.lin(x))


class Derived(Base):
    def step(self, x):
        y = super().step(x)
        while y.norm() > 0.5:
            y = super().step(y) * 0.5
        return y

    @dynnet.function
    def run(self, x):
        return self.step(x) + self.helper(x)

    @staticmethod
    def helper(x):
        return x if x.sum() > 0 else -x


def test_methods_super_and_staticmethods():
    model = Derived()
    torch.manual_seed(1)
    xs = [torch.randn(3, requires_grad=True) * 3 for _ in range(5)]
    batch_matches(model.run, xs, params=list(model.parameters()))


def test_nested_function_closing_over_lazy_values():
    @dynnet.function
    def f(x):
        total = x.sum()

        def scaled(v):
            return v * total if total > 0 else v - total

        return [scaled(r) for r in x]

    batch_matches(f, [torch.tensor([1.0, 2.0], requires_grad=True),
                      torch.tensor([-3.0, 1.0], requires_grad=True)])


def test_top_level_lambda():
    f = dynnet.function(lambda x: x * 2 if x.sum() > 0 else -x)
    batch_matches(f, [torch.tensor([1.0], requires_grad=True),
                      torch.tensor([-1.0], requires_grad=True)])


def test_generator_function_is_a_conversion_error():
    @dynnet.function
    def f(x):
        def rows():
            yield from x

        return list(rows())

    with pytest.raises(dynnet.ConversionError) as info:
        f.batch([torch.ones(2)])
    assert f"{HERE}:{line_of(f, 'yield from x')}" in str(info.value)
    assert "yield from" in str(info.value)


def test_async_function_is_a_conversion_error():
    @dynnet.function
    async def f(x):
        return x

    with pytest.raises(dynnet.ConversionError) as info:
        f.batch([torch.ones(2)])
    assert f"{HERE}:{line_of(f, 'async def f')}" in str(info.value) and "async" in str(info.value)


def test_await_in_nested_code_is_a_conversion_error():
    @dynnet.function
    def f(x):
        async def g():
            await something()  # noqa: F821

        return x

    with pytest.raises(dynnet.ConversionError, match="async"):
        f.batch([torch.ones(2)])


class Gate:
    """A plain class of the user's (not a module) whose calls branch on values."""

    def __init__(self, weight):
        self.weight = weight

    def __call__(self, x, scale=1.0):
        y = x @ self.weight
        if y.sum() > 0:
            return torch.tanh(y) * scale
        return -y

    def __add__(self, other):
        return other * 2 if other.sum() > 0 else other


def test_call_of_a_plain_class_of_the_users_is_converted():
    torch.manual_seed(3)
    gate = Gate(torch.randn(3, 3, requires_grad=True))

    @dynnet.function
    def f(x):
        return gate(x) + gate(x * -1, scale=0.5)

    batch_matches(f, [torch.randn(3) for _ in range(6)], params=[gate.weight])


def test_an_operator_of_the_users_class_that_tests_a_value_says_so():
    gate = Gate(torch.randn(3, 3))

    @dynnet.function
    def f(x):
        return gate + x

    with pytest.raises(dynnet.ConcretizationError) as info:
        f.batch([torch.randn(3), torch.randn(3)])
    message = str(info.value)
    assert f"{HERE}:{line_of(Gate.__add__, 'if other.sum()')}" in message
    assert "tested in __add__" in message and "operator" in message


def twice(fn):
    """A user's decorator that keeps the function's name (functools.wraps)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args):
        return fn(*args) * 2

    return wrapper


@twice
def _shifted(y):
    return y + 1 if y.sum() > 0 else y - 1


class _Tripler:
    @twice
    def apply(self, y):
        return y * 3


def test_a_decorator_made_with_functools_wraps_keeps_its_wrapper():
    """inspect.getsourcelines follows __wrapped__: the wrapper was converted as the
    function it wraps (its `* 2` silently lost), and a second function under the same
    decorator got the first one's conversion."""

    @dynnet.function
    def f(x):
        return _shifted(x) + _Tripler().apply(x)

    batch_matches(f, [torch.ones(2, requires_grad=True), -torch.ones(2, requires_grad=True)])


class _StaticCall:
    @staticmethod
    def __call__(y):
        return y * 2 if y.sum() > 0 else y


def _scaled(y, factor):
    if y.sum() > 0:
        return y * factor
    return y - factor


def test_static_call_methods_and_partials_of_the_users_functions():
    """A staticmethod __call__ got the instance as an extra argument; a
    functools.partial of a function of the user's ran unconverted (its test on a value
    failed)."""
    import functools

    part = functools.partial(_scaled, factor=3.0)

    @dynnet.function
    def f(x):
        return _StaticCall()(x) + part(x) + functools.partial(_scaled, x)(2.0)

    batch_matches(f, [torch.ones(2, requires_grad=True), -torch.ones(2, requires_grad=True)])


def test_two_lambdas_on_one_line_inside_a_converted_function():
    """Lambdas made by converted code were converted again from their source line,
    which could not tell two apart: a ConversionError where Python ran fine."""

    @dynnet.function
    def f(x):
        flip, double = (lambda y: y if y.sum() > 0 else -y), (lambda y: y * 2)
        return flip(x) + double(x)

    batch_matches(f, [torch.ones(2, requires_grad=True), -torch.ones(2, requires_grad=True)])
