"""Engine behaviours that once broke, each against the example-by-example oracle."""

import torch

import dynnet
from tests.helpers import assert_batch_matches_loop


def count_down(x, n):
    return x if n == 0 else count_down(x * 2, n - 1)


def test_function_calling_itself_by_name():
    f = dynnet.function(lambda x: count_down(x, 3))
    assert_batch_matches_loop(f, [torch.randn(2, requires_grad=True) for _ in range(3)])


def test_lambda_defined_and_called_in_converted_code():
    @dynnet.function
    def f(x):
        h = lambda v: v.sum() * 2  # noqa: E731
        return h(x)

    assert_batch_matches_loop(f, [torch.randn(3, requires_grad=True) for _ in range(3)])


def test_no_grad_around_a_pause_holds_for_that_example_only():
    w = torch.randn(3, requires_grad=True)

    @dynnet.function
    def f(x):
        with torch.no_grad():
            frozen = x * w
            if frozen.sum() > 0:  # a pause inside no_grad
                frozen = frozen * 2
        return frozen + x * w

    xs = [torch.randn(3) for _ in range(4)]
    out = assert_batch_matches_loop(f, xs, [w])
    assert out.requires_grad and torch.is_grad_enabled()


def test_containers_passed_in_are_not_copied():
    @dynnet.function
    def f(x, seen):
        seen.append(1)
        return x * len(seen)

    logs = [[], []]
    f.batch([torch.ones(2), torch.ones(2)], logs)
    assert logs == [[1], [1]]


def test_shape_inference_leaves_the_random_stream_alone():
    @dynnet.function
    def f(x):
        return torch.nn.functional.dropout(x, 0.5, training=True) * 1.5

    from dynnet import tracing

    tracing._signatures.clear()  # a cold cache: the signatures are inferred in this batch
    torch.manual_seed(3)
    cold = f.batch([torch.ones(4)] * 2)
    torch.manual_seed(3)
    warm = f.batch([torch.ones(4)] * 2)
    torch.testing.assert_close(cold, warm)


def test_segments_see_replaced_modules_and_changed_attributes():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)
            self.scale = 2.0

        @dynnet.function
        def forward_one(self, x):
            y = torch.tanh(self.lin(x)) * self.scale
            return torch.sigmoid(y) + y * 0.5

    model = Scaled()
    xs = [torch.randn(3) for _ in range(4)]
    model.forward_one.batch(xs)  # captures the segment
    model.scale = -1.0
    model.lin = torch.nn.Linear(3, 3)
    assert_batch_matches_loop(model.forward_one, xs, model.parameters())


def test_lists_of_python_values_are_kept_per_example():
    @dynnet.function
    def ids(x, n):
        return [n, n + 1], x * 2

    out = ids.batch([torch.ones(2)] * 3, [1, 2, 3])
    assert out[0] == [[1, 2], [2, 3], [3, 4]]
    assert out[1].shape == (3, 2)


def test_minus_zero_is_not_zero():
    """-0.0 == 0.0 for Python, so an op called with 0.0 once shared its signature (and
    a segment its template) with calls on -0.0: copysign and 1 / x gave the wrong sign."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4)

    @dynnet.function
    def signed(x, s):
        return torch.copysign(lin(x), s)

    @dynnet.function
    def divided(x, s):
        y = lin(x)
        return torch.tanh(y) / s + y * 0  # a segment of several ops

    x = torch.randn(4)
    for f in (signed, divided):
        for signs in ([0.0], [-0.0], [0.0, -0.0, -0.0, 0.0]):
            out = f.batch([x] * len(signs), signs)
            with dynnet.run_eagerly():
                expected = torch.stack([f(x, s) for s in signs])
            assert torch.equal(torch.signbit(out), torch.signbit(expected)), (f, signs)
            torch.testing.assert_close(out, expected)


def test_torch_tensor_of_lazy_values_copies_them_as_pytorch_does():
    """torch.tensor([y[0], y[1]]): their values, without their gradient, in the dtype
    asked for (it used to fail under vmap, which cannot call .item())."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4)

    @dynnet.function
    def f(x):
        y = lin(x)
        copied = torch.tensor([[y[0], y[1]], [y[2], y[3]]], dtype=torch.float64)
        return copied * 2 + y[:2].sum()

    out = assert_batch_matches_loop(f, [torch.randn(4) for _ in range(3)],
                                    params=list(lin.parameters()))
    assert out.dtype == torch.float64 and out.shape == (3, 2, 2)

    @dynnet.function
    def mixed(x):
        return torch.tensor([lin(x)[0], 1.0])

    try:
        mixed.batch([torch.randn(4)])
    except dynnet.BatchingError as e:
        assert "torch.stack" in str(e) and "float" in str(e)
    else:
        raise AssertionError("mixing lazy values and numbers in torch.tensor must fail")


@dynnet.function
def _late_binding(x):
    k = 1
    g = (x * k for _ in range(2))  # Python reads k when sum() reads g
    if x.sum() > 100:  # a pause between
        k = 3
    k = 5
    return sum(g)


@dynnet.function
def _short_circuit(x):
    d = {"a": 1}
    return x * any(d[k] > 0 for k in ["a", "b"])  # stops at "a"


@dynnet.function
def _first(x):
    g = (r * 2 for r in [x, -x])
    return next(g)


@dynnet.function
def _walrus(x):
    rows = [x, -x, x * 2]
    found = any((m := r).sum() > 0 for r in rows)  # m: the row where any stopped
    kept = [last := r for r in rows if r.sum() < 0]
    return m * found + last * len(kept)


def test_generator_expressions_stay_generators_unless_read_whole_at_once():
    """A generator expression made a list at once read variables too early, lost
    any()'s early stop and next(); `:=` in a comprehension bound in its local
    function."""
    xs = [torch.ones(2, requires_grad=True), -torch.ones(2, requires_grad=True),
          torch.tensor([3.0, -1.0], requires_grad=True)]
    for f in (_late_binding, _short_circuit, _first, _walrus):
        assert_batch_matches_loop(f, xs)


def test_not_of_a_lazy_value_in_tensor_code():
    """`not` needs the value: a statement holding it is not outlined into a segment,
    where it failed with a ConcretizationError."""

    @dynnet.function
    def f(x):
        y = x * (not x.sum() > 0)
        return y * 2

    assert_batch_matches_loop(f, [torch.ones(2, requires_grad=True),
                                  -torch.ones(2, requires_grad=True)])


def test_generator_expressions_that_test_values_can_still_pause():
    """A generator expression with a filter or a conditional on tensor values is made a
    list where it stands (a Python generator could not wait for the values), in a for
    loop, in enumerate, assigned, or given to any()."""

    @dynnet.function
    def f(x):
        rows = [x, -x, x * 2]
        total = x * 0
        for r in (r for r in rows if r.sum() > 0):
            total = total + r
        kept = (r if r.sum() > 0 else -r for r in rows)
        for i, r in enumerate(kept):
            total = total + r * i
        return total * any(r.sum() > 1 for r in rows if r.sum() > 0)

    assert_batch_matches_loop(f, [torch.ones(2, requires_grad=True),
                                  -torch.ones(2, requires_grad=True)])


def test_a_generator_expression_that_tests_values_given_to_next():
    """Made a list (it tests values), it was given to next() as a list: TypeError. It
    is read through an iterator over the list now, with next's default too."""

    @dynnet.function
    def f(x):
        rows = [x, -x, x * 2]
        first = next(r for r in rows if r.sum() > 0)
        fallback = next((r for r in rows if r.sum() > 100), rows[0])
        found = (r for r in rows if r.sum() < 0)
        return first + fallback + sum(found, x * 0)

    assert_batch_matches_loop(f, [torch.ones(2, requires_grad=True),
                                  -torch.ones(2, requires_grad=True),
                                  torch.tensor([3.0, -1.0], requires_grad=True)])


def test_a_comprehension_in_a_conditional_operand_runs_only_when_chosen():
    @dynnet.function
    def f(x, cached):
        ys = [c * 2 for c in cached] if cached is not None else []
        zs = cached or [x * k for k in range(3)]
        return x * len(ys) + sum(zs)

    assert_batch_matches_loop(f, [(torch.ones(2, requires_grad=True), None),
                                  (torch.ones(2, requires_grad=True), [torch.ones(2)])])


@dynnet.function
def _matched(x):
    match x.sum():
        case 2:
            return x * 2
        case s if s > 0:
            return x * s
        case _:
            pass
    match (x, x.sum()):
        case (t, total) if total < -1:
            return t * 3
        case _:
            return -x


def test_match_on_lazy_values_waits_for_them():
    """A lazy subject waits for its value; guards are truth tests that pause."""
    assert_batch_matches_loop(_matched, [torch.ones(2, requires_grad=True),
                                         torch.full((2,), 3.0, requires_grad=True),
                                         -torch.ones(2, requires_grad=True),
                                         torch.tensor([0.5, -0.5], requires_grad=True)])


def test_filters_of_comprehensions_that_stay_pythons_wait_for_values():
    """A comprehension kept as Python's own (in a lambda, holding `:=`, inside `or`)
    tested a lazy value in its filter with Python's bool(): an error. And an `and`
    whose first operand binds with `:=` read the name in a lambda of its own."""

    @dynnet.function
    def f(x):
        kept = [r for r in x if (s := r.sum()) > 0 and s < 4] or [x[0]]
        positive = (lambda rows: [r for r in rows if r.sum() > 0])(list(x))
        firsts = list(r for r in x if (m := r.max()) > 0 and m < 3)
        return torch.stack(kept).sum(0) + sum(positive, x[0] * 0) + sum(firsts, x[0] * 0)

    assert_batch_matches_loop(f, [torch.tensor([[1.0, 2.0], [-3.0, 1.0]], requires_grad=True),
                                  torch.tensor([[-1.0, -2.0], [3.0, -1.0]], requires_grad=True)])


def test_in_evaluates_its_item_first_and_lazy_readers_stay_lazy():
    """`x in xs` evaluated the container first (a := in the item was unbound);
    filter over an endless iterator read it whole; map(int, ...) made every call before
    next() took the first; `enc = self.encode` broke the segment it was called in."""
    import itertools

    order = []

    def noted(tag, value):
        order.append(tag)
        return value

    @dynnet.function
    def f(x):
        # an iterator Python's filter reads lazily (bounded: a regression must not
        # read an endless one until memory runs out)
        first = next(filter(lambda v: v > 0, itertools.islice(itertools.count(-2), 10**5)))
        three = next(map(int, ["3", "not a number"]))
        if (k := x.sum()) in [k, 4.0] and noted("item", 1) in noted("list", [1]):
            return x * first * three
        return x

    assert_batch_matches_loop(f, [torch.ones(2, requires_grad=True),
                                  torch.zeros(2, requires_grad=True)])
    assert order[:2] == ["item", "list"]
