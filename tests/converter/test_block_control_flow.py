"""Block level: a module whose forward has `if`/`while` on tensors, called on lazy
values, runs as one node on the stacked batch; `if` selects per row, `while` is a
masked loop; results equal per-example eager execution (values and gradients)."""

import pytest
import torch
import torch.nn as nn

import dynnet
from dynnet.backends.blocks import block_source
from tests.converter._oracle import batch_matches

DIM = 4


def apply(module):
    @dynnet.function
    def f(x):
        return module(torch.tanh(x) * 3)

    return f


def examples(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(DIM, generator=g).requires_grad_() for _ in range(n)]


class Branches(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(DIM, DIM)
        self.b = nn.Linear(DIM, DIM)
        self.calls = {"a": 0, "b": 0}

    def forward(self, x):
        if x.sum() > 0:
            self.calls["a"] += 1
            y = self.a(x)
            z = 1.0
        elif x.max() > 2:
            y = torch.relu(self.b(x))
            z = 2.0
        else:
            self.calls["b"] += 1
            y = self.b(x) * 2
            z = 3.0
        return y * z


def test_if_selects_per_row():
    m = Branches()
    batch_matches(apply(m), examples(), params=list(m.parameters()))


def test_if_runs_one_branch_when_every_row_agrees():
    m = Branches()
    xs = [torch.full((DIM,), v) for v in (0.5, 1.0, 2.0)]
    apply(m).batch(xs)  # the first call also infers the output shape (one eager call)
    m.calls.update(a=0, b=0)
    apply(m).batch(xs)
    assert m.calls == {"a": 1, "b": 0}


class Loop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.Linear(DIM, DIM)

    def forward(self, x):
        steps = 0
        while x.norm() > 1:
            x = torch.tanh(self.cell(x)) * 0.8 * x.norm() / (1 + steps)
            steps = steps + 1
            if steps > 20:
                x = x * 0
        else:
            x = x + 0.1
        return x * (1 + 0.1 * steps)


def test_while_is_a_masked_loop_with_per_row_trip_counts():
    m = Loop()
    with torch.no_grad():
        m.cell.weight.copy_(torch.eye(DIM))
    xs = [torch.full((DIM,), v, requires_grad=True) for v in (0.1, 0.3, 0.6, 1.0, -2.0)]
    batch_matches(apply(m), xs + examples(5), params=list(m.parameters()))


class Returns(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(DIM, DIM)

    def forward(self, x):
        h = self.lin(x)
        if h.sum() > 1:
            if h.max() > 2:
                return h * 3
            h = h + 1
        elif h.sum() < -1:
            return -h
        h = torch.sigmoid(h)
        return h


def test_returns_inside_branches():
    m = Returns()
    batch_matches(apply(m), examples(12), params=list(m.parameters()))
    source = block_source(Returns.forward)
    assert source.strip().endswith("return dn__retval_1")
    compile(source, "<block>", "exec")


def gate(x, w):
    """A user function with its own data-dependent branch, called from a forward."""
    return x * w if (x * w).sum() > 0 else x - w


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(DIM))

    def forward(self, x):
        while x.abs().max() > 1.5:
            x = x / 2
        return gate(x, self.w)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()
        self.seq = nn.Sequential(nn.Linear(DIM, DIM), Inner(), nn.Tanh())

    def forward(self, x):
        y = self.inner(x)
        if y.mean() > 0 and not y.min() < -1 or -0.5 < y.sum() < 0.5:
            y = self.seq(y)
        scale = 2.0 if y.sum() > 0 else 0.5
        assert y.abs().max() < 1e6, "diverged"
        return y * scale


def test_nested_modules_functions_sequential_and_expressions():
    m = Outer()
    batch_matches(apply(m), examples(16, seed=3), params=list(m.parameters()))


class Pythonic(nn.Module):
    """Python conditions (flags, shapes, loop counters) keep Python's control flow."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(DIM, DIM)
        self.double = True

    def forward(self, x):
        if self.double and x.shape[0] == DIM:
            x = self.lin(x)
        for i in range(3):
            if i % 2 == 0 and x.sum() > 0:
                x = x * 0.5
            else:
                x = x + i
        return x


def test_python_conditions_stay_python():
    m = Pythonic()
    batch_matches(apply(m), examples(), params=list(m.parameters()))


class Jumps(nn.Module):
    """break/continue in tensor-dependent loops, lowered to flags."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(DIM, DIM)

    def forward(self, x):
        k = 0
        while x.sum() > 0:
            x = x - 1
            k = k + 1
            if x.max() < 0.5:
                break
            if x.min() < -0.5:
                continue
            x = self.lin(x) * 0.5 + x
        else:
            x = x * 10
        for i in range(4):
            if x.mean() > 0.1 * i:
                continue
            x = x + i
            if x.norm() > 5:
                break
            x = x * 0.9
        else:
            x = x - 1
        return x * (k + 1)


def test_break_and_continue_in_tensor_dependent_loops():
    m = Jumps()
    xs = [torch.randn(DIM, generator=torch.Generator().manual_seed(s)).mul(s).requires_grad_()
          for s in range(1, 9)]
    batch_matches(apply(m), xs, params=list(m.parameters()))
    source = block_source(Jumps.forward)
    assert "dn__.while_stmt(" in source and "dn__break_1 = True" in source
    assert "dn__continue_1 = True" in source and "dn__.all_true(dn__break_2)" in source


class ReturnInLoop(nn.Module):
    def forward(self, x):
        for _ in range(3):
            if x.sum() > 0:
                return x * 2
            x = x + 1
        return x


def test_return_in_a_loop_runs_while_rows_agree_and_is_reported_otherwise():
    f = apply(ReturnInLoop())
    batch_matches(f, [torch.ones(DIM) * 2, torch.ones(DIM) * 3])  # rows agree throughout
    with pytest.raises(dynnet.BatchingError, match="return inside a loop"):
        f.batch([torch.ones(DIM), -torch.ones(DIM)])


def test_block_source_is_readable_python():
    source = block_source(Loop.forward)
    assert "dn__.while_stmt(" in source and "nonlocal x, steps" in source
    compile(source, "<block>", "exec")


def python_jumps(n, stop):
    total, log = 0, []
    i = 0
    while i < n:
        i += 1
        if i % 3 == 0:
            continue
        if i == stop:
            log.append("stop")
            break
        total += i
    else:
        log.append("exhausted")
    for j in range(n):
        if j == stop:
            break
        if j % 2:
            continue
        total -= j
    else:
        total *= 2
    if total > 10:
        return total, log
    elif total < 0:
        if n > 5:
            return -total, log
        total = 0
    return total + 1, log


@pytest.mark.parametrize("n, stop", [(0, 0), (4, 2), (7, 5), (9, 20), (12, 6)])
def test_block_conversion_keeps_python_semantics(n, stop):
    from dynnet.backends.blocks import converted

    assert converted(python_jumps)(n, stop) == python_jumps(n, stop)


class AugmentedSteps(nn.Module):
    """`+=`, `*=` on numbers and tensors inside a masked loop and a branch; a list
    extended with `+=` keeps Python's in-place meaning."""

    def __init__(self):
        super().__init__()
        self.log = []

    def forward(self, x):
        steps = 0
        total = x * 0
        while x.norm() > 1.0:
            x = x * 0.5
            steps += 1
            total += x
        y = x * 1
        if x.sum() > 0:
            y += 1
            y *= 2
        seen = self.log
        seen += [1]
        return torch.stack([x.sum(), total.sum(), y.sum(), x.new_tensor(0.0) + steps])


def test_augmented_assignments_change_only_the_rows_that_run_them():
    m = AugmentedSteps()
    xs = [torch.full((DIM,), v).requires_grad_() for v in (0.1, -0.2, 3.0, 40.0, -7.0)]
    batch_matches(apply(m), xs, params=[])
    assert "augmented_assign" in block_source(AugmentedSteps.forward)
    assert m.log and set(m.log) == {1}  # the list grew in place


class _CountingGrow(nn.Module):
    def forward(self, y):
        k = 0
        while y.norm() < 5 and k < 4:
            y = y * 1.5
            k += 1
        return y, k


def test_a_python_number_a_masked_loop_changes_and_the_forward_returns():
    """It holds one value per row once batched: the error says to return a tensor."""
    m = _CountingGrow()

    @dynnet.function
    def f(x):
        return m(x)

    with pytest.raises(dynnet.BatchingError, match=r"return it as a tensor"):
        f.batch([torch.ones(2), torch.full((2,), 3.0)])
