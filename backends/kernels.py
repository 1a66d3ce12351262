"""Faster kernels for group calls, chosen by measurement.

On the CPU, `torch.tanh` can be much slower than numpy's vectorized tanh on the sizes a
group call sees: on the 2-core x86 machine (torch 2.13, numpy 2.x), a 64 x 128 block
takes 26 µs against 3.4 µs (`torch.sigmoid` on the same block takes 4.6 µs). `tanh`
below calls numpy's for CPU float32/float64 tensors outside autograd when numpy's is
the faster of the two here: the first such call times both on a 64 x 128 block (about
a millisecond, once per process) and keeps the winner, since builds and processors
differ. numpy's result is within about one ulp of torch's (relative error 1.1e-7
against 5.9e-8 for float32, the same zeros, infinities and NaNs). Inside autograd the
saving is lost to the Python backward a custom `autograd.Function` needs (measured:
slower up to 32k elements), so recorded calls keep `torch.tanh`.

`batched_kernel(fn)` maps an op to the kernel its group calls use (the op itself when
none is faster); per-example runs always call the op itself. The reference models'
row-wise modules (dynnet.models), which run directly on stacked batches, call `tanh`
themselves; on one example's small tensors it is torch's.
"""

import time

import numpy as np
import torch
import torch.nn.functional as F

_NUMPY_MIN_NUMEL = 1024  # below it numpy's call overhead eats the gain
_NUMPY_DTYPES = (torch.float32, torch.float64)


_numpy_faster = None  # whether numpy's tanh beat torch's here (measured on first use)


def numpy_tanh_is_faster():
    """Times torch's and numpy's tanh on a 64 x 128 float32 block (best of 20 calls
    each) the first time it is asked; the answer holds for the process."""
    global _numpy_faster
    if _numpy_faster is None:
        block = torch.linspace(-3, 3, 64 * 128).reshape(64, 128)  # not the global RNG
        array, out = block.numpy(), np.empty((64, 128), np.float32)

        def best(run):
            times = []
            for _ in range(20):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            return min(times)

        _numpy_faster = best(lambda: np.tanh(array, out=out)) < best(lambda: torch.tanh(block))
    return _numpy_faster


def _numpy_ok(x):
    return (x.device.type == "cpu" and x.dtype in _NUMPY_DTYPES
            and x.numel() >= _NUMPY_MIN_NUMEL
            and not (x.requires_grad and torch.is_grad_enabled())
            and (_numpy_faster or (_numpy_faster is None and numpy_tanh_is_faster())))


def tanh(x, *, out=None):
    """`torch.tanh(x, out=out)`, through numpy's tanh where that is faster."""
    if x.__class__ is torch.Tensor and _numpy_ok(x) and (
            out is None or (out.__class__ is torch.Tensor and out.dtype == x.dtype
                            and out.device.type == "cpu" and out.shape == x.shape
                            and not out.requires_grad)):
        try:
            if out is None:
                return torch.from_numpy(np.tanh(x.detach().numpy()))
            np.tanh(x.detach().numpy(), out=out.numpy())
            return out
        except RuntimeError:  # no numpy view of it (a vmap or fake tensor): torch's
            pass
    if out is None:
        return torch.tanh(x)
    return torch.tanh(x, out=out)


_KERNELS = {torch.tanh: tanh, torch.Tensor.tanh: tanh, F.tanh: tanh}


def batched_kernel(fn):
    """The callable a group call of op `fn` runs: a faster kernel, or `fn` itself."""
    return _KERNELS.get(fn, fn)
