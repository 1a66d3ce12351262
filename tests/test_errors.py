"""Bad input gets a clear error naming what and where, never an internal traceback."""

import inspect

import pytest
import torch

import dynnet

HERE = __file__


def _line_of(fn, text):
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


def test_shape_error_names_op_line_and_example():
    @dynnet.function
    def f(x):
        return x + torch.ones(3)  # fails for the example of length 4

    with pytest.raises(RuntimeError) as info:
        f.batch([torch.ones(3), torch.ones(4)])
    msg = str(info.value)
    assert "operator.add" in msg and f"{HERE}:{_line_of(f.fn, 'x + torch.ones')}" in msg
    assert "example 1" in msg


def test_value_dependent_shape_is_a_batching_error():
    @dynnet.function
    def f(x):
        return torch.nonzero(x)

    with pytest.raises(dynnet.BatchingError) as info:
        f.batch([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])])
    msg = str(info.value)
    assert "torch.nonzero" in msg and f"{HERE}:{_line_of(f.fn, 'torch.nonzero')}" in msg


def test_boolean_mask_indexing_is_a_batching_error_with_advice():
    @dynnet.function
    def f(x):
        h = x * 2
        return h[h > 0].sum()

    with pytest.raises(dynnet.BatchingError) as info:
        f.batch([torch.tensor([1.0, -1.0]), torch.tensor([2.0, 3.0])])
    msg = str(info.value)
    assert f"{HERE}:" in msg and "(example " in msg
    assert "depends on the values" in msg and "torch.where(mask, x, 0)" in msg


def test_user_exception_keeps_type_and_points_at_user_code():
    @dynnet.function
    def f(x):
        if x.shape[0] > 2:
            raise KeyError("too long")
        return x * 2

    with pytest.raises(KeyError) as info:
        f.batch([torch.ones(2), torch.ones(3)])
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "example 1" in notes and f"{HERE}:{_line_of(f.fn, 'raise KeyError')}" in notes


def test_function_without_source_is_a_conversion_error():
    namespace = {}
    exec("def g(x):\n    return x * 2\n", namespace)
    f = dynnet.function(namespace["g"])
    with pytest.raises(dynnet.ConversionError) as info:
        f.batch([torch.ones(2)])
    assert "<string>:1" in str(info.value) and "source code is not available" in str(info.value)


def test_generators_are_conversion_errors():
    @dynnet.function
    def f(x):
        yield x

    with pytest.raises(dynnet.ConversionError) as info:
        f.batch([torch.ones(2)])
    assert f"{HERE}:{_line_of(f.fn, 'yield x')}" in str(info.value)
    assert "yield" in str(info.value)
    # the traceback ends where the converter gives up, not in its passes' visitors
    frames = [str(entry.path) for entry in info.traceback]
    assert not any("converter/passes" in path or path.endswith("ast.py") for path in frames)


def test_concretizing_in_unconverted_code_explains_the_fix():
    def helper(x):  # library-like code dynnet does not convert
        return bool(x.sum() > 0)

    helper.__module__ = "numpy.fake"  # treated as library code

    @dynnet.function
    def f(x):
        return helper(x)

    with pytest.raises(dynnet.ConcretizationError) as info:
        f.batch([torch.ones(2)])
    msg = str(info.value)
    assert "bool()" in msg and "torch.where" in msg and HERE in msg


def test_in_place_assignment_is_refused():
    @dynnet.function
    def f(x):
        x[0] = 1.0
        return x

    with pytest.raises(dynnet.BatchingError, match="in-place"):
        f.batch([torch.ones(2)])


def test_mismatched_argument_lengths():
    @dynnet.function
    def f(x, y):
        return x + y

    with pytest.raises(ValueError, match="different lengths"):
        f.batch([torch.ones(2)] * 3, [torch.ones(2)] * 2)


def test_lazy_value_used_after_its_batch():
    kept = []

    @dynnet.function
    def f(x):
        y = x * 2
        kept.append(y)
        return y

    f.batch([torch.ones(2)])
    with pytest.raises(dynnet.ConcretizationError, match="outside of a batched call"):
        kept[0] + 1


def test_in_place_methods_are_refused():
    @dynnet.function
    def f(x):
        y = x * 2
        y.relu_()
        return y

    with pytest.raises(dynnet.BatchingError, match="relu_ .* out-of-place Tensor.relu"):
        f.batch([torch.ones(2)])


def test_an_error_in_code_that_never_pauses_names_the_example():
    """A function with no pause runs to its end when its example starts: an op that
    fails there (an empty stack for one example) still gets the example index and the
    user's file:line."""

    @dynnet.function
    def f(xs):
        hs = [x * 2 for x in xs]
        return torch.stack(hs).sum()

    with pytest.raises(RuntimeError) as info:
        f.batch([[torch.randn(3)], [], [torch.randn(3)]])
    note = "\n".join(getattr(info.value, "__notes__", []))
    assert "example 1 of the batch" in note
    assert f"{HERE}:{_line_of(f.fn, 'torch.stack(hs)')}" in note


def test_a_c_function_asking_for_a_lazy_value_gets_its_own_advice():
    import math

    @dynnet.function
    def f(x):
        h = x * 2
        return torch.tensor(math.exp(h[0]))

    with pytest.raises(dynnet.ConcretizationError) as info:
        f.batch([torch.randn(3), torch.randn(3)])
    message = str(info.value)
    assert f"{HERE}:{_line_of(f.fn, 'math.exp')}" in message and "(example 0)" in message
    assert "v = float(x)" in message and "torch.exp(x)" in message

    @dynnet.function
    def g(x):
        return torch.tensor(math.exp(float(x[0] * 2)))  # the value, taken where it can wait

    torch.testing.assert_close(g.batch([torch.ones(3), torch.zeros(3)]),
                               torch.tensor([math.exp(2.0), 1.0]))


def test_a_template_held_in_a_variable_is_an_error_not_a_placeholder():
    """'{:.2f}'.format on a template held in a variable printed a LazyTensor
    placeholder (or failed on the spec) where the original printed the value."""

    @dynnet.function
    def f(x):
        template = "{:.2f}"
        print(template.format(x.sum()))
        return x

    with pytest.raises(dynnet.ConcretizationError) as info:
        f.batch([torch.ones(2), torch.zeros(2)])
    assert f"{HERE}:{_line_of(f.fn, 'template.format')}" in str(info.value)


def test_text_from_a_library_or_an_exception_never_fails():
    """str() of a lazy value from logging or an exception's message is the placeholder:
    formatting a log record or an error must not raise."""
    import logging

    @dynnet.function
    def f(x):
        h = x * 2
        logging.getLogger("dynnet-test").warning("h=%s", h)
        raise ValueError(h)

    with pytest.raises(ValueError) as info:
        f.batch([torch.ones(2), torch.zeros(2)])
    assert "LazyTensor(" in str(info.value)


@pytest.mark.parametrize("body", ["index", "slice"])
def test_operations_of_python_that_cannot_wait_say_what_to_do(body):
    """A lazy value needed inside an operation of Python's in converted code (a list
    indexed by it, a slice bound) was blamed on a 'generator function' or on code not
    converted."""

    @dynnet.function
    def f(x):
        if body == "index":
            return [x, -x][x.argmax()]
        return x[:x.argmax() + 1].sum()

    with pytest.raises(dynnet.ConcretizationError) as info:
        f.batch([torch.tensor([1.0, 3.0]), torch.tensor([5.0, 0.0])])
    message = str(info.value)
    assert "generator function" not in message and "did not convert" not in message
    assert "int(" in message and "(example 0)" in message


def test_a_module_reached_through_a_closure_and_converted_after_its_first_batch():
    """dynnet cannot see a module the function reaches through a closure: after
    `double()`, its stale signatures would feed float rows to double weights; the
    batch says what happened instead."""
    embed, cell = torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4)

    @dynnet.function
    def f(words):
        h = embed(torch.tensor(words[0]))
        for w in words[1:]:
            h = torch.tanh(cell(h) + embed(torch.tensor(w)))
        return h

    batch = [[1, 2, 1], [3, 1]]
    f.batch(batch)
    embed.double()
    cell.double()
    with pytest.raises(dynnet.BatchingError, match="changed its dtype or device after"):
        f.batch(batch)


def test_a_module_returning_a_number_says_what_to_return():
    class WithCount(torch.nn.Module):
        def forward(self, x):
            return x * 2, 3

    module = WithCount()

    @dynnet.function
    def f(x):
        return module(x)[0]

    for n in (1, 3):
        with pytest.raises(dynnet.BatchingError, match="must return tensors"):
            f.batch([torch.randn(2) for _ in range(n)])


def test_tensor_properties_of_lazy_values():
    """Static facts answer as for the example's tensor; what only the batched value
    has (requires_grad, grad, is_leaf) is a clear error, not a truthy stand-in that
    sends `if y.requires_grad:` down the wrong branch."""
    lin = torch.nn.Linear(4, 4)

    @dynnet.function
    def facts(x):
        y = lin(x)
        assert not y.is_sparse and y.layout == torch.strided and y.get_device() == -1
        return y.data * 2 + y, y.itemsize, y.nbytes, y.element_size()

    xs = [torch.randn(4), torch.randn(4)]
    out, itemsize, nbytes, element_size = facts.batch(xs)
    torch.testing.assert_close(out, torch.stack([lin(x) * 3 for x in xs]))
    assert itemsize == [4, 4] and nbytes == [16, 16] and element_size == [4, 4]

    @dynnet.function
    def branches(x):
        y = lin(x)
        if y.requires_grad:
            y = y * 2
        return y

    with pytest.raises(dynnet.ConcretizationError, match="Tensor.requires_grad of a lazy"):
        branches.batch(xs)


def test_an_op_error_says_its_place_is_the_first_call_with_those_shapes():
    """A module called at two places with the same argument shapes shares one
    signature, which keeps the first place: the error says so rather than naming it as
    the failing call."""
    embed = torch.nn.Embedding(10, 3)

    @dynnet.function
    def first(i):
        return embed(torch.tensor(i))

    @dynnet.function
    def second(i):
        return embed(torch.tensor(i))

    first.batch([1, 2])
    with pytest.raises(IndexError) as info:
        second.batch([1, 99])
    message = str(info.value)
    place = f"{HERE}:{_line_of(first.fn, 'return embed')}"
    assert f"first called with these argument shapes at {place}" in message
    assert "(example 1)" in message


def _positives(rows):
    for r in rows:
        if r.sum() > 0:
            yield r


def test_a_test_inside_a_generator_function_of_the_users_says_so():
    @dynnet.function
    def f(x):
        return sum(_positives([x, -x, x * 2]))

    with pytest.raises(dynnet.ConcretizationError, match="generator function _positives"):
        f.batch([torch.ones(2), -torch.ones(2)])
