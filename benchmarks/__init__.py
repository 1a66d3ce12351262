"""Benchmarks that compare dynnet with naive and hand-batched PyTorch.

Run them with ``python -m benchmarks.run``; see ``benchmarks/README.md``.
"""
