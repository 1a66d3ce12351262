"""Whole epochs, wall clock: dynnet with a worker process against hand-batched PyTorch.

    python -m benchmarks.pipelined [--trees N] [--sentences N] [--batch-sizes 64 256]
                                   [--repeats K] [--threads T] [--only tree seq]
                                   [--device cpu|cuda] [--data DIR] [--workers 1 3]

`f.batches(batches)` traces the next batches in a forked worker process while this
process computes (dynnet/workers.py), so its cost shows in wall time only: the
per-variant CPU clock of `benchmarks.run --clock process` would not count the worker.
Each variant starts from the same weights and takes one warm-up step on the first
batch; then, per repeat and in a rotating order, every variant runs one training epoch
(zero grads, forward, backward, Adam step per batch) and one inference epoch over all
examples. Training reshuffles: each repeat cuts a new permutation of the examples into
batches (the same for every variant), so no training batch comes twice; inference runs
the same batches every time, as an evaluation set does (with reused traces, dynnet runs
a batch seen before from the plan it kept: dynnet/replayed_batches.py). Figures are
medians over the repeats, in examples per second.

Variants: the hand-batched baselines of `benchmarks.run` (tree-LSTM: level-wise with
autograd and with a hand-written backward; LM: `nn.LSTM` on a `PackedSequence`), dynnet
one batch at a time (`f.batch`), and dynnet over the epoch with worker processes
(`f.batches(batches, workers=n)`, one variant per count given to `--workers`); each
dynnet variant also with `reuse_traces=True` (dynnet/example_traces.py), whose
examples replay from their second epoch on (with workers: in the workers, once this
process has traced and kept every example), after two untimed epochs that record
and adopt the traces (`REUSE_WARM_EPOCHS`). The
machine's load average is printed before and after: wall time on a shared machine
moves with it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random

import torch

from benchmarks import common, sequence_lm, tree_lstm

# untimed epochs of the variants that reuse traces, so that the timed ones are those of
# a long training run: the first traces every example (the workers send the traces
# here), the second decodes them here before the workers are forked (one-time costs:
# on the whole SST training set, 3 s and 1.4 s on the 2-core CPU, mostly Python's
# collector walking the new objects, and decoding)
REUSE_WARM_EPOCHS = 2


def _reuses(name):
    return name.startswith("replay") or name == "dynnet-replay"


def _workers(name):
    """The worker count of an `f.batches` variant's name, or None."""
    digits = name.split("workers")[-1]
    return int(digits) if "workers" in name and digits.isdigit() else None


def _label(bench, name):
    n = _workers(name)
    if n is not None:
        reused = ", reused traces" if name.startswith("replay") else ""
        return f"dynnet f.batches{reused} ({n} worker{'s' if n > 1 else ''})"
    if name == "dynnet":
        return "dynnet f.batch"
    if name == "dynnet-replay":
        return "dynnet f.batch, reused traces"
    return bench.labels.get(name, name)  # the baselines as the runner names them


def _epochs(bench, name, variant, dynnet_functions):
    """`(module, train_epoch, infer_epoch)` for one variant of `bench`."""
    module = variant.build(bench.start)
    optimizer = bench.make_optimizer(module)

    workers = _workers(name)
    if workers is not None:
        loss_fn, infer_fn = (f(module) for f in dynnet_functions)

        def train(batches):
            for loss in loss_fn.batches(batches, workers=workers):
                optimizer.zero_grad(set_to_none=True)
                loss.mean().backward()
                optimizer.step()

        def infer(batches):
            with torch.no_grad():
                for _ in infer_fn.batches(batches, workers=workers):
                    pass
    else:
        def train(batches):
            for batch in batches:
                common.train_step(variant, module, optimizer, batch)

        def infer(batches):
            for batch in batches:
                variant.infer(module, batch)

    return module, train, infer


def measure(bench, dynnet_functions, batch_size, repeats, device, workers=(1,)):
    import dynnet

    batches = common.batches(bench.examples, batch_size)
    names = [n for n in ("batched", "manual", "dynnet", "dynnet-replay") if n in bench.variants
             and not isinstance(bench.variants[n], str)]
    variants = {n: bench.variants[n] for n in names}
    for n in workers:
        for prefix, source in (("", "dynnet"), ("replay-", "dynnet-replay")):
            if not isinstance(bench.variants.get(source, ""), str):
                variants[f"{prefix}workers{n}"] = bench.variants[source]
                names.append(f"{prefix}workers{n}")
    rng = random.Random(0)

    def new_batches():  # training cuts new batches every epoch
        shuffled = list(bench.examples)
        rng.shuffle(shuffled)
        return common.batches(shuffled, batch_size)

    runs = {}
    for name in names:
        module, train, infer = _epochs(bench, name, variants[name], dynnet_functions)
        train(batches[:1])  # warm-up: one step; dynnet creates its signatures here
        infer(batches[:1])
        for _ in range(REUSE_WARM_EPOCHS if _reuses(name) else 0):
            train(new_batches())
            infer(batches)
        runs[name] = (train, infer)
    times = {n: ([], []) for n in names}
    planned, per_node, waits = {}, {}, {}
    for r in range(repeats):
        train_batches = new_batches()
        for name in names[r % len(names):] + names[:r % len(names)]:
            train, infer = runs[name]
            with dynnet.profile() as profile:
                for k, (epoch, data) in enumerate(((train, train_batches), (infer, batches))):
                    times[name][k].append(common.time_call(lambda: epoch(data), device))
            if _workers(name) is not None:
                planned[name] = (profile.planned_batches, profile.batches,
                                 dict(profile.worker_misses))
                waits[name] = (profile.fork_seconds, profile.wait_seconds)
            if name.startswith("dynnet") or _workers(name) is not None:
                per_node[name] = _python_per_node(profile)
    n = len(bench.examples)
    rates = {name: tuple(n / common.median(t) for t in times[name]) for name in names}
    return rates, planned, per_node, waits


def _python_per_node(profile):
    """Microseconds per recorded node spent in this process outside group execution
    (running the user's code, recording, scheduling): all of it with `f.batch`, only
    what batches traced here cost with a worker."""
    nodes = max(profile.nodes, 1)
    return (1e6 * (profile.trace_seconds + profile.schedule_seconds) / nodes,
            1e6 * profile.execute_seconds / nodes)


def _ratio(a, b):
    return f"{a[0] / b[0]:.2f} / {a[1] / b[1]:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=2048)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=["tree", "seq"], default=["tree", "seq"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--data", default=common.DATA_DIR, help="folder with sst/ and ptb/")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="worker counts of the f.batches variants (default: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from benchmarks import dynnet_models

    load_before = os.getloadavg()
    device = torch.device(args.device)
    benches = []
    if "tree" in args.only:
        benches.append((tree_lstm.benchmark(args.trees, args.batch_sizes, device, args.data),
                        (lambda m: m.root_loss, lambda m: m.root_logits)))
    if "seq" in args.only:
        benches.append((sequence_lm.benchmark(args.sentences, args.batch_sizes, device,
                                              args.data),
                        (lambda m: m.sentence_loss, lambda m: m.sentence_loss)))
    del dynnet_models  # imported for its side effect: the dynnet variants exist
    card = f"{torch.cuda.get_device_name()}, " if device.type == "cuda" else ""
    print(f"{card}CPU {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, wall clock, "
          f"{args.repeats} repeats\n")
    print("| benchmark | variant | batch | train ex/s | infer ex/s | vs hand-batched "
          "| vs hand-bwd | worker plans |")
    print("|---|---|---|---|---|---|---|---|")
    notes = []
    for bench, functions in benches:
        for size in args.batch_sizes:
            rates, planned, per_node, waits = measure(bench, functions, size, args.repeats,
                                                      device, args.workers)
            notes.extend(f"{bench.name} batch {size}, {_label(bench, name)}: this process spent "
                         f"{trace:.2f} us per node tracing and scheduling, {execute:.2f} us "
                         "executing (kernels included)"
                         for name, (trace, execute) in per_node.items())
            notes.extend(f"{bench.name} batch {size}, {_label(bench, name)}: in the last "
                         f"repeat's two epochs, {fork:.3f} s starting workers, {wait:.3f} s "
                         "waiting for their plans" for name, (fork, wait) in waits.items())
            for name, rate in rates.items():
                vs_manual = _ratio(rate, rates["manual"]) if "manual" in rates else "-"
                plans = "-"
                if name in planned:
                    done, total, misses = planned[name]
                    plans = f"{done}/{total}" + (f" (misses: {misses})" if misses else "")
                print(f"| {bench.name} | {_label(bench, name)} | {size} | {rate[0]:.0f} | "
                      f"{rate[1]:.0f} | {_ratio(rate, rates['batched'])} | {vs_manual} "
                      f"| {plans} |", flush=True)
    load_after = os.getloadavg()
    print()
    for note in notes:
        print(f"- {note}")
    print(f"\nload average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f}")


if __name__ == "__main__":
    main()
