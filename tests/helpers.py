"""Oracle helpers: batched results must equal running the function example by example."""

import torch

import dynnet
from dynnet.outputs import _flatten, _has_tensor


def _leaves(obj):
    leaves = []
    _flatten(obj, leaves)
    return leaves


def _per_example(fn, examples, kwargs):
    with dynnet.run_eagerly():
        return [fn(*ex, **kwargs) for ex in examples]


def _scalar_loss(outputs):
    """A loss touching every floating leaf with distinct weights (so grads differ)."""
    total = 0.0
    k = 1
    # k is the leaf's position among the floating leaves, whether it requires grad or not
    # (an example may return a zero state as it is where the others return a computed one)
    for leaf in _leaves(outputs):
        if isinstance(leaf, torch.Tensor) and leaf.dtype.is_floating_point:
            if leaf.requires_grad:
                w = torch.linspace(0.5, 1.5, leaf.numel(), device=leaf.device)
                total = total + k * (leaf * w.reshape(leaf.shape)).sum()
            k += 1
    return total


def assert_batch_matches_loop(fn, examples, params=(), kwargs=None, atol=1e-5, grad_atol=1e-4,
                              strategy=None):
    """Checks `fn.batch(*zip(*examples))` against running `fn` on each example.

    Compares every output leaf (values atol `atol`) and the gradients of `params` and
    of per-example input tensors that require grad (atol `grad_atol`) of a weighted sum
    of all outputs. Returns the batched outputs.
    """
    kwargs = kwargs or {}
    examples = [ex if isinstance(ex, tuple) else (ex,) for ex in examples]
    params = list(params)
    inputs = [t for ex in examples for t in _leaves(ex)
              if isinstance(t, torch.Tensor) and t.requires_grad]
    watched = params + inputs

    expected = _per_example(fn, examples, kwargs)
    grads_expected = _grads(_scalar_loss(expected), watched)

    if strategy is not None:
        old = dynnet.config.schedule
        dynnet.config.set(schedule=strategy)
    try:
        batched = fn.batch(*zip(*examples), **kwargs) if examples else fn.batch([])
    finally:
        if strategy is not None:
            dynnet.config.set(schedule=old)
    per_example = _unstack(batched, expected)
    assert len(per_example) == len(expected)
    for i, (got, want) in enumerate(zip(per_example, expected)):
        got_leaves, want_leaves = _leaves(got), _leaves(want)
        assert len(got_leaves) == len(want_leaves), f"example {i}: structure differs"
        for g, w in zip(got_leaves, want_leaves):
            if isinstance(w, torch.Tensor):
                assert isinstance(g, torch.Tensor), f"example {i}: {type(g)} vs tensor"
                assert g.shape == w.shape, f"example {i}: shape {g.shape} vs {w.shape}"
                assert g.dtype == w.dtype, f"example {i}: dtype {g.dtype} vs {w.dtype}"
                torch.testing.assert_close(g, w, atol=atol, rtol=1e-4,
                                           msg=lambda m: f"example {i}: {m}")
            else:
                assert g == w, f"example {i}: {g!r} vs {w!r}"
    grads_batched = _grads(_scalar_loss(per_example), watched)
    for k, (g, w) in enumerate(zip(grads_batched, grads_expected)):
        if w is None:
            assert g is None or torch.count_nonzero(g) == 0
            continue
        assert g is not None, f"gradient {k} missing in the batched run"
        torch.testing.assert_close(g, w, atol=grad_atol, rtol=1e-3)
    return batched


def _grads(loss, watched):
    if not watched or not isinstance(loss, torch.Tensor) or not loss.requires_grad:
        return [None] * len(watched)
    return list(torch.autograd.grad(loss, watched, allow_unused=True))


def _stackable(outputs):
    structures, columns = set(), []
    for out in outputs:
        leaves = []
        structures.add(_flatten(out, leaves))
        columns.append(leaves)
    if len(structures) != 1:
        return False
    for column in zip(*columns):
        kinds = {isinstance(x, torch.Tensor) for x in column}
        if len(kinds) > 1:
            return False
        if kinds == {True} and len({(tuple(x.shape), x.dtype) for x in column}) > 1:
            return False
    return True


def _unstack(batched, expected):
    """Per-example views of `fn.batch`'s result (a stacked structure or a list)."""
    n = len(expected)
    if n == 0:
        assert batched == []
        return []
    if not _stackable(expected):
        assert isinstance(batched, list) and len(batched) == n
        return batched
    return [_index(batched, expected[0], i) for i in range(n)]


def _index(batched, template, i):
    """Row `i` of a stacked result whose per-example structure is `template`."""
    if isinstance(template, dict):
        return {k: _index(batched[k], v, i) for k, v in template.items()}
    if isinstance(template, (tuple, list)) and _has_tensor(template):
        items = [_index(b, t, i) for b, t in zip(batched, template)]
        return type(template)(items) if not hasattr(template, "_fields") else \
            type(template)(*items)
    return batched[i]
