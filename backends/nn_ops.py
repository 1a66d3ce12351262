"""Neural-network functions: products with shared weights, embeddings, losses."""

import operator

import torch
import torch.nn.functional as F

from dynnet.backends.elementwise import aligned
from dynnet.backends.rules import def_rule, flat_call, vmap_rule
from dynnet.tracing import SLOT


def first_batched_rule(call):
    """Ops that are row-wise in their first argument when the others are shared:
    x @ W, F.linear(x, W, b), F.embedding(idx, W), F.layer_norm(x, shape, w, b)."""
    if not call.only_first_batched():
        return vmap_rule(call)
    args, kwargs = call.args()
    return call.fn(*args, **kwargs)


def _prepare_first_batched(sig):
    args, _ = sig.template
    if len(sig.in_avals) != 1 or not args or args[0] is not SLOT:
        return None
    return flat_call(sig.fn, sig.template)


first_batched_rule.prepare = _prepare_first_batched

def_rule([torch.matmul, torch.Tensor.matmul, operator.matmul, torch.Tensor.__matmul__,
          torch.mm, torch.Tensor.mm, torch.mv, torch.Tensor.mv, F.linear, F.bilinear,
          F.embedding, F.layer_norm, F.rms_norm if hasattr(F, "rms_norm") else None],
         first_batched_rule)


def _reduce(loss, reduction, count=None):
    """Per-example reduction of an unreduced batched loss [B, ...]."""
    if reduction == "none":
        return loss
    flat = loss.reshape(loss.shape[0], -1)
    if reduction == "sum":
        return flat.sum(1)
    if count is None:
        return flat.mean(1)
    return flat.sum(1) / count


def _reduction(args, kwargs, pos):
    reduction = kwargs.pop("reduction", None)
    if reduction is None and len(args) > pos:
        reduction, args = args[pos], args[:pos]
    return args, kwargs, reduction or "mean"


def class_loss_rule(call):
    """cross_entropy / nll_loss on per-example [C] or [N, C] scores."""
    args, kwargs = call.args()
    kwargs = dict(kwargs)
    if len(args) > 2 or kwargs.get("weight") is not None or len(call.slots) != 2:
        return vmap_rule(call)
    scores, target = args
    per_example = call.sig.in_avals[0].shape
    if len(per_example) == 2 and len(call.sig.in_avals[1].shape) == 1:
        B, N, C = scores.shape
        scores, target = scores.reshape(B * N, C), target.reshape(B * N)
    elif len(per_example) != 1 or target.dim() != 1 or target.dtype.is_floating_point:
        return vmap_rule(call)
    reduction = kwargs.pop("reduction", "mean")
    loss = call.fn(scores, target, reduction="none", **kwargs).reshape(call.size, -1)
    count = None
    if reduction == "mean":
        ignore = kwargs.get("ignore_index", -100)
        count = (target.reshape(call.size, -1) != ignore).sum(1).to(loss.dtype)
    return _reduce(loss, reduction, count)


def pointwise_loss_rule(call):
    """mse_loss, l1_loss, smooth_l1_loss, huber_loss, binary cross-entropies."""
    args, kwargs = call.args(aligned(max(len(a.shape) for a in call.sig.in_avals)))
    kwargs = dict(kwargs)
    reduction = kwargs.pop("reduction", "mean")
    if reduction not in ("mean", "sum", "none") or len(args) > 2:
        return vmap_rule(call)
    return _reduce(call.fn(*args, reduction="none", **kwargs), reduction)


def_rule([F.cross_entropy, F.nll_loss], class_loss_rule)
def_rule([F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.binary_cross_entropy,
          F.binary_cross_entropy_with_logits, F.soft_margin_loss], pointwise_loss_rule)
