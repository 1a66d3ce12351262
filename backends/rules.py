"""The registry of batching rules: how to run one op on a stacked batch.

A rule takes a `BatchedCall` (the op's signature, one stacked tensor per lazy slot
with the batch on dim 0, and the batch size) and returns the op's output structure
with every tensor leaf batched on dim 0. Rules are registered per callable with
`def_rule`; family helpers live in the sibling modules. An op without a rule runs
under `torch.func.vmap`, so per-example semantics hold by construction.
"""

import torch
import torch.nn.functional as F
from torch import nn

from dynnet.tracing import SLOT, rebuild

batching_rules = {}  # callable -> rule
module_rules = {}  # nn.Module subclass -> rule


def def_rule(fns, rule):
    """Registers `rule` for each callable in `fns`."""
    for fn in fns:
        if fn is not None:
            batching_rules[fn] = rule


def def_module_rule(classes, rule):
    """Registers `rule` for calls of modules of each class in `classes` (exact type)."""
    for cls in classes:
        module_rules[cls] = rule


class BatchedCall:
    """One group's op applied to stacked inputs.

    Attributes:
      sig: the group's `Signature` (op, static template, in/out avals).
      slots: one stacked tensor per lazy slot, shape [B, *in_aval.shape].
      size: the batch size B.
    """

    __slots__ = ("sig", "slots", "size")

    def __init__(self, sig, slots, size):
        self.sig = sig
        self.slots = slots
        self.size = size

    @property
    def fn(self):
        return self.sig.fn

    def args(self, prep=None):
        """`(args, kwargs)` of the op with slots filled by the stacked tensors.

        `prep(tensor, aval)`, if given, transforms each stacked slot first.
        """
        values = self.slots
        if prep is not None:
            values = [prep(x, a) for x, a in zip(values, self.sig.in_avals)]
        return rebuild(self.sig.template, iter(values))

    def only_first_batched(self):
        """True when the only lazy slot is the first positional argument."""
        args, _ = self.sig.template
        return len(self.slots) == 1 and len(args) > 0 and args[0] is SLOT


def vmap_rule(call):
    """Fallback: the op under torch.func.vmap over dim 0 of every slot."""
    sig = call.sig

    def per_example(*slots):
        args, kwargs = rebuild(sig.template, iter(slots))
        return sig.fn(*args, **kwargs)

    return torch.func.vmap(per_example, randomness="different")(*call.slots)


def prepare(sig):
    """`run(slots, size)`: the group call of `sig`, with its static work done once.

    A rule may offer `rule.prepare(sig)`, returning such a function (or None when
    the signature needs the general path); otherwise `run` builds a BatchedCall.
    Segment templates prepare each of their ops once and replay them many times.
    """
    rule = sig.rule
    make = getattr(rule, "prepare", None)
    run = make(sig) if make is not None else None
    if run is None:
        def run(slots, size):
            return rule(BatchedCall(sig, slots, size))
    return run


def flat_call(fn, template):
    """`run(slots, size)` calling `fn` with the slots put in `template`, or None
    when a slot is nested (in a list, tuple or keyword argument)."""
    args, kwargs = template
    if any(_holds_slot(v) for v in kwargs.values()) or \
            any(a is not SLOT and _holds_slot(a) for a in args):
        return None
    positions = [i for i, a in enumerate(args) if a is SLOT]
    if not kwargs and len(positions) == len(args):
        if len(args) == 1:
            return lambda slots, size: fn(slots[0])
        if len(args) == 2:
            return lambda slots, size: fn(slots[0], slots[1])
        return lambda slots, size: fn(*slots)
    base = list(args)

    def run(slots, size):
        filled = base.copy()
        for p, value in zip(positions, slots):
            filled[p] = value
        return fn(*filled, **kwargs)

    return run


def _holds_slot(value):
    if value is SLOT:
        return True
    cls = value.__class__
    if cls is tuple or cls is list:
        return any(_holds_slot(v) for v in value)
    if cls is dict:
        return any(_holds_slot(v) for v in value.values())
    return False


def rule_for(sig):
    """The rule that runs groups of `sig`: registered, else the vmap fallback."""
    fn = sig.fn
    if isinstance(fn, torch.nn.Module):
        rule = module_rules.get(type(fn))
        if rule is None:
            from dynnet.backends.modules import module_rule

            rule = module_rule(fn)
        return rule
    try:
        return batching_rules.get(fn, vmap_rule)
    except TypeError:
        return vmap_rule


# -------------------- which ops compute the same value from the same inputs --------------------

RANDOM_OPS = {F.dropout, F.alpha_dropout, F.feature_alpha_dropout, F.dropout1d, F.dropout2d,
              F.dropout3d, F.rrelu, F.gumbel_softmax, torch.dropout, torch.alpha_dropout,
              torch.feature_dropout, torch.feature_alpha_dropout, torch.rrelu, torch.bernoulli,
              torch.Tensor.bernoulli, torch.normal, torch.poisson, torch.multinomial,
              torch.Tensor.multinomial, torch.rand_like, torch.randn_like, torch.randint_like,
              torch.Tensor.random_, torch.Tensor.uniform_, torch.Tensor.normal_}
DETERMINISTIC_MODULES = {nn.Linear, nn.Bilinear, nn.Embedding, nn.LayerNorm, nn.Identity,
                         nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU,
                         nn.SELU, nn.CELU, nn.LeakyReLU, nn.Softplus, nn.Softsign, nn.Mish,
                         nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.LogSigmoid,
                         nn.Tanhshrink, nn.GLU, nn.LSTMCell, nn.GRUCell, nn.RNNCell,
                         nn.Softmax, nn.LogSoftmax}


def deterministic(sig, guards=True):
    """True when the op of `sig` (kind "op") computes the same value from the same
    inputs, so that equal calls in a batch may share one row: an op with a batching
    rule that draws no random numbers, or a module of a known class. A module class may
    say so itself with a method `dynnet_deterministic()` (True when, in its current
    state, its call is deterministic: a dropout of 0 or in eval mode, say); `guards`
    False ignores those (for decisions kept beyond the current call)."""
    fn = sig.fn
    if isinstance(fn, nn.Module):
        return deterministic_module(fn, guards)
    try:
        return fn in batching_rules and fn not in RANDOM_OPS
    except TypeError:  # unhashable
        return False


def deterministic_module(module, guards=True):
    """`deterministic` for a call of `module`: a known class, or one whose
    `dynnet_deterministic()` says so (only asked when `guards`)."""
    cls = type(module)
    if cls in DETERMINISTIC_MODULES:
        return True
    said = getattr(cls, "dynnet_deterministic", None) if guards else None
    return said is not None and bool(said(module))
