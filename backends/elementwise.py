"""Elementwise and broadcasting ops: align every stacked slot to the output rank.

A per-example argument of rank r under an output of rank R becomes
[B, 1 x (R - r), *shape], so broadcasting between examples' own dims is exactly
per-example broadcasting; shared tensors and Python scalars broadcast as usual.
"""

import operator

import torch
import torch.nn.functional as F

from dynnet.backends.kernels import batched_kernel, tanh
from dynnet.backends.rules import def_rule, flat_call
from dynnet.tracing import SLOT


def aligned(rank):
    def prep(x, aval):
        extra = rank - len(aval.shape)
        if extra > 0:
            return x.reshape(x.shape[0], *((1,) * extra), *aval.shape)
        return x

    return prep


def elementwise_rule(call):
    rank = len(call.sig.out_avals[0].shape)
    args, kwargs = call.args(aligned(rank))
    return batched_kernel(call.fn)(*args, **kwargs)


def _prepare_elementwise(sig):
    """Without rank alignment (every slot has the output's rank) the op runs as is."""
    rank = len(sig.out_avals[0].shape)
    if any(len(a.shape) != rank for a in sig.in_avals):
        return None
    return flat_call(batched_kernel(sig.fn), sig.template)


elementwise_rule.prepare = _prepare_elementwise


# The ops whose group call can write its result into a given tensor (`out=`).
_OUT_VARIANTS = {operator.add: torch.add, operator.sub: torch.sub, operator.mul: torch.mul,
                 operator.truediv: torch.div, torch.add: torch.add, torch.sub: torch.sub,
                 torch.mul: torch.mul, torch.div: torch.div, torch.sigmoid: torch.sigmoid,
                 torch.tanh: tanh, torch.relu: torch.relu, torch.exp: torch.exp}


def _prepare_elementwise_out(sig):
    """`run(slots, size, out)`: the group call writing into `out` (no autograd), for
    an op of `_OUT_VARIANTS` on tensors of the output's rank only; else None."""
    fn = _OUT_VARIANTS.get(sig.fn)
    args, kwargs = sig.template
    rank = len(sig.out_avals[0].shape)
    if fn is None or kwargs or any(a is not SLOT for a in args) or \
            any(len(a.shape) != rank for a in sig.in_avals):
        return None
    return lambda slots, size, out: fn(*slots, out=out)


elementwise_rule.prepare_out = _prepare_elementwise_out


def expand_rule(call):
    """Tensor.expand / broadcast_to: align, then expand with the batch dim."""
    out_shape = call.sig.out_avals[0].shape
    x = aligned(len(out_shape))(call.slots[0], call.sig.in_avals[0])
    return x.expand(call.size, *out_shape)


_NAMES = """add sub subtract mul multiply div divide true_divide floor_divide remainder fmod pow
float_power maximum minimum fmax fmin atan2 hypot where clamp clip clamp_min clamp_max lerp
addcmul addcdiv sigmoid tanh relu exp exp2 expm1 log log1p log2 log10 sqrt rsqrt abs absolute neg
negative sin cos tan asin acos atan sinh cosh asinh acosh atanh sign sgn floor ceil round trunc frac
erf erfc erfinv reciprocal square isnan isinf isfinite nan_to_num logical_and logical_or
logical_not logical_xor bitwise_and bitwise_or bitwise_xor bitwise_not eq ne lt le gt ge
greater less greater_equal less_equal not_equal zeros_like ones_like full_like rand_like
randn_like empty_like clone detach positive xlogy logit heaviside copysign
deg2rad rad2deg""".split()

_F_NAMES = """relu relu6 elu selu celu gelu silu mish softplus softsign hardtanh hardswish
hardsigmoid leaky_relu logsigmoid tanhshrink softshrink hardshrink sigmoid tanh dropout
alpha_dropout threshold""".split()

_METHOD_ONLY = """float double half bfloat16 long int short bool byte char type_as to cpu cuda
contiguous requires_grad_ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __truediv__
__rtruediv__ __pow__ __rpow__ __neg__ __abs__ __and__ __or__ __xor__ __invert__ __lt__ __le__
__gt__ __ge__ __eq__ __ne__ __floordiv__ __rfloordiv__ __mod__ __rmod__ masked_fill""".split()

_fns = []
for _n in _NAMES:
    _fns.append(getattr(torch, _n, None))
    _fns.append(getattr(torch.Tensor, _n, None))
for _n in _F_NAMES:
    _fns.append(getattr(F, _n, None))
for _n in _METHOD_ONLY:
    _fns.append(getattr(torch.Tensor, _n, None))
_fns += [operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
         operator.mod, operator.pow, operator.neg, operator.pos, operator.abs, operator.invert,
         operator.and_, operator.or_, operator.xor, operator.lt, operator.le, operator.gt,
         operator.ge, operator.eq, operator.ne, operator.lshift, operator.rshift]
def_rule(_fns, elementwise_rule)
def_rule([torch.Tensor.expand, torch.broadcast_to, torch.Tensor.broadcast_to,
          torch.Tensor.expand_as], expand_rule)
