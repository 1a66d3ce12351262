"""Runs the benchmarks and prints one table.

    python -m benchmarks.run [--quick] [--device cpu|cuda] [--batch-sizes 64 256]
                             [--trees N] [--sentences N] [--vectors N] [--repeats K]
                             [--threads T] [--only tree seq cls while] [--out FILE]
                             [--skip VARIANT ...]

Every variant of a benchmark starts from the same weights and sees the same batches.
After a warm-up step (whose loss, from the starting weights, is the ``loss@0`` column:
it must agree across variants), variants take turns, in a rotating order, timing one
training pass over all examples (zero grads, forward, backward, update) and one
inference pass; each figure is the median over the repeats.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import subprocess
import sys
import time
from typing import NamedTuple

import torch

from benchmarks import common, sequence_classifier, sequence_lm, tree_lstm, while_loop

ORDER = ("naive", "batched", "manual", "dynnet", "dynnet-reshuffled", "dynnet-replay")
# untimed passes before the timed and profiled ones: the first makes the segments; with
# reused traces the second records the traces, and on batches that come back the third
# sees each batch replayed whole and the fourth makes their plans
WARM_PASSES = {"dynnet": 1, "dynnet-reshuffled": 2, "dynnet-replay": 4}
REFERENCES = (("batched", "vs hand-batched"), ("manual", "vs hand-bwd"), ("naive", "vs naive"))
LOSS_TOLERANCE = 1e-3


class Row(NamedTuple):
    benchmark: str
    variant: str
    label: str
    batch: int
    train: float | None = None  # examples per second
    infer: float | None = None
    peak_train: int | None = None  # bytes (CUDA only)
    peak_infer: int | None = None
    loss0: float | None = None
    note: str = ""


# -------------------- measuring --------------------

def _timed(fn, device):
    """Seconds ``fn()`` took, and the peak CUDA memory it allocated (None on CPU)."""
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = common.time_call(fn, device)
    return seconds, torch.cuda.max_memory_allocated() if cuda else None


def _warm_up(bench, variant, first_batch):
    """Builds the variant's module and optimizer and runs one step; returns them + loss."""
    module = variant.build(bench.start)
    optimizer = bench.make_optimizer(module) if bench.make_optimizer else None
    loss = float(common.train_step(variant, module, optimizer, first_batch))
    variant.infer(module, first_batch)
    return module, optimizer, loss


def measure(bench, batch_size, repeats, device):
    """Times every variant of ``bench`` at ``batch_size``; returns one Row per variant."""
    batches = common.batches(bench.examples, batch_size)
    n = len(bench.examples)
    rows, ready = {}, {}
    for name, variant in bench.variants.items():
        row = Row(bench.name, name, bench.labels.get(name, name), batch_size)
        if isinstance(variant, str):
            rows[name] = row._replace(note=f"unavailable: {variant}")
            continue
        try:
            module, optimizer, loss0 = _warm_up(bench, variant, batches[0])
            for _ in range(WARM_PASSES.get(name, 0)):  # segments; reused traces: record, plan
                for b in batches:
                    common.train_step(variant, module, optimizer, b)
                    variant.infer(module, b)
        except Exception as error:
            rows[name] = row._replace(note=f"unavailable: {common.describe_error(error)}")
            continue
        rows[name] = row._replace(loss0=loss0)
        ready[name] = (variant, module, optimizer)

    samples = {name: [] for name in ready}
    for r in range(repeats):
        names = list(ready)
        shift = r % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            variant, module, optimizer = ready[name]
            train = lambda: [common.train_step(variant, module, optimizer, b) for b in batches]
            infer = lambda: [variant.infer(module, b) for b in batches]
            try:
                samples[name].append(_timed(train, device) + _timed(infer, device))
            except Exception as error:
                rows[name] = rows[name]._replace(
                    note=f"unavailable: {common.describe_error(error)}")
                del ready[name], samples[name]

    for name, runs in samples.items():
        train_s = common.median([run[0] for run in runs])
        infer_s = common.median([run[2] for run in runs])
        peaks = [run[1] for run in runs], [run[3] for run in runs]
        if peaks[0][0] is None and runs:  # CPU: one profiled step on the first batch
            peaks = _cpu_peaks(bench, *ready[name], batches[0])
        else:
            peaks = (None if peaks[0][0] is None else max(peaks[0]),
                     None if peaks[1][0] is None else max(peaks[1]))
        rows[name] = rows[name]._replace(
            train=n / train_s, infer=n / infer_s, peak_train=peaks[0], peak_infer=peaks[1])
    _check_losses(rows)
    return [rows[name] for name in sorted(rows, key=_variant_rank)]


def _cpu_peaks(bench, variant, module, optimizer, batch):
    """(train, infer) peak CPU bytes of one step on ``batch`` (see common.cpu_peak_bytes)."""
    train = common.cpu_peak_bytes(lambda: common.train_step(variant, module, optimizer, batch))
    infer = common.cpu_peak_bytes(lambda: variant.infer(module, batch))
    return train, infer


def _variant_rank(name):
    return ORDER.index(name) if name in ORDER else len(ORDER)


def _check_losses(rows):
    """Marks rows whose first-step loss differs from the hand-batched one."""
    reference = rows.get("batched")
    if reference is None or reference.loss0 is None:
        return
    for name, row in rows.items():
        if row.loss0 is not None and abs(row.loss0 - reference.loss0) > LOSS_TOLERANCE:
            rows[name] = row._replace(note=f"loss@0 differs from hand-batched {row.note}")


def profile_dynnet(bench, batch_size, name="dynnet"):
    """A dynnet training pass under ``dynnet.profile()``; a report line, or None. It
    profiles the steady state, after ``WARM_PASSES[name]`` passes."""
    variant = bench.variants.get(name)
    if variant is None or isinstance(variant, str):
        return None
    import dynnet

    if not hasattr(dynnet, "profile"):
        return None
    module = variant.build(bench.start)
    optimizer = bench.make_optimizer(module) if bench.make_optimizer else None
    batches = common.batches(bench.examples, batch_size)
    try:
        for _ in range(WARM_PASSES[name]):
            for b in batches:
                common.train_step(variant, module, optimizer, b)
        gc.collect()  # see common.time_call
        with dynnet.profile() as prof:
            for b in batches:
                common.train_step(variant, module, optimizer, b)
    except Exception as error:
        return f"{bench.name} batch {batch_size}: profile failed: {common.describe_error(error)}"
    nodes = max(prof.nodes, 1)
    replayed = getattr(prof, "replayed", 0)
    line = (f"{bench.name} batch {batch_size}: {name} recorded {prof.nodes} nodes "
            f"({prof.nodes / len(bench.examples):.1f} per example) in {prof.groups} groups; "
            f"Python per node: trace {1e6 * prof.trace_seconds / nodes:.2f} µs + schedule "
            f"{1e6 * getattr(prof, 'schedule_seconds', 0.0) / nodes:.2f} µs; "
            f"execute {1e6 * prof.execute_seconds / nodes:.2f} µs/node")
    if replayed:
        line += f"; {replayed} of {len(bench.examples)} examples replayed"
    if getattr(prof, "replayed_batches", 0):
        line += f", {prof.replayed_batches} batches from their kept plans"
    rounds = getattr(prof, "rounds", None)
    return line if rounds is None else f"{line}; {rounds} rounds"


# -------------------- the table --------------------

HEADER = ("benchmark", "variant", "batch", "train ex/s", "infer ex/s",
          *(title for _, title in REFERENCES), "peak MiB", "loss@0", "note")
LEGEND = ("ex/s: examples per second, median of the repeats; vs X: throughput ratio to X, "
          "train / infer; peak MiB, train / infer: on CUDA max_memory_allocated over the timed "
          "passes, on CPU the most tensor memory held at once above the start of one step "
          "on the first batch (torch profiler); "
          "loss@0: first-batch loss from the shared starting weights; "
          "dynnet, reused traces: dynnet.function(reuse_traces=True), whose examples replay "
          "their recorded trace from the second pass over them on, and whose batches, the "
          "same at every pass, run from the plan kept for them from the third on (untimed "
          "warm-up passes record the traces and make the plans first); "
          "new batches: the same, each batch's examples in a new order at every pass, as "
          "in reshuffled training, so examples replay but no batch plan is kept")


def _ratio(row, ref):
    if ref is None or ref is row or row.train is None or ref.train is None:
        return "-"
    return f"{row.train / ref.train:.2f} / {row.infer / ref.infer:.2f}"


def _mib(value):
    if value is None:
        return "n/a"
    mib = value / 2**20
    return f"{mib:.1f}" if mib < 100 else f"{mib:.0f}"


def table_cells(rows):
    """The table as lists of strings, header first."""
    out = [list(HEADER)]
    for row in rows:
        refs = {r.variant: r for r in rows if r.benchmark == row.benchmark
                and r.batch == row.batch}
        timed = row.train is not None
        out.append([
            row.benchmark, row.label, str(row.batch),
            f"{row.train:.0f}" if timed else "-",
            f"{row.infer:.0f}" if timed else "-",
            *(_ratio(row, refs.get(name)) for name, _ in REFERENCES),
            f"{_mib(row.peak_train)} / {_mib(row.peak_infer)}" if timed else "-",
            "-" if row.loss0 is None else f"{row.loss0:.4f}",
            row.note,
        ])
    return out


def format_text(cells):
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_markdown(cells):
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def environment(device):
    """One line naming the machine, torch, threads and date."""
    if torch.device(device).type == "cuda":
        where = f"CUDA {torch.cuda.get_device_name()}"
    else:
        where = f"CPU {platform.processor() or platform.machine()}"
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (f"{where}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
            f"{when}, {_checkout()}")


def _checkout():
    """``commit abc1234`` (``+ local changes`` when the tree is dirty), or ``no git``."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git"
    return f"commit {head}" + (" + local changes" if dirty else "")


# -------------------- command line --------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small data, one batch size, 3 repeats (about 5 minutes on 2 CPU "
                             "cores: every variant, its warm-up passes included)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default 64 256")
    parser.add_argument("--trees", type=int,
                        help="SST train trees, and sentences of the classifier (default 1024)")
    parser.add_argument("--sentences", type=int, help="PTB valid sentences (default 256)")
    parser.add_argument("--vectors", type=int, help="while-loop vectors (default 1024)")
    parser.add_argument("--repeats", type=int, help="timed passes per variant (default 5)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--only", nargs="+", choices=("tree", "seq", "cls", "while"),
                        default=("tree", "seq", "cls", "while"), help="benchmarks to run")
    parser.add_argument("--skip", nargs="+", choices=ORDER, default=(),
                        help="variants to leave out (naive per-example runs take most of "
                             "a GPU run's time)")
    parser.add_argument("--data", default=str(common.DATA_DIR),
                        help="folder holding sst/ and ptb/ (default %(default)s)")
    parser.add_argument("--out", help="also write the table as markdown to this file")
    parser.add_argument("--clock", choices=("wall", "process"), default="wall",
                        help="wall time, or this process's CPU time (CPU runs on a loaded "
                             "machine: waiting for a core is not counted; single-threaded "
                             "CPU runs only)")
    args = parser.parse_args(argv)
    quick = {"batch_sizes": [64], "trees": 192, "sentences": 64, "vectors": 256,
             "repeats": 3}
    full = {"batch_sizes": [64, 256], "trees": 1024, "sentences": 256, "vectors": 1024,
            "repeats": 5}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "process":
        if args.device != "cpu":
            sys.exit("--clock process measures CPU time: use it with --device cpu")
        common.CLOCK = time.process_time
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    env = environment(args.device)  # before measuring: the commit that was measured
    env += f", clock: {'process CPU time' if args.clock == 'process' else 'wall time'}"
    benches = []
    if "tree" in args.only:
        benches.append(tree_lstm.benchmark(args.trees, args.batch_sizes, args.device,
                                           args.data))
    if "seq" in args.only:
        benches.append(sequence_lm.benchmark(args.sentences, args.batch_sizes, args.device,
                                               args.data))
    if "cls" in args.only:  # SST sentences, as many as trees
        benches.append(sequence_classifier.benchmark(args.trees, args.batch_sizes,
                                                     args.device, args.data))
    if "while" in args.only:
        benches.append(while_loop.benchmark(args.vectors, args.device))

    benches = [b._replace(variants={k: v for k, v in b.variants.items() if k not in args.skip})
               for b in benches]
    rows, notes = [], []
    for bench in benches:
        for batch_size in bench.batch_sizes:
            print(f"measuring {bench.name}, batch {batch_size} ...", file=sys.stderr)
            measured = measure(bench, batch_size, args.repeats, args.device)
            rows += measured
            for name in WARM_PASSES:
                if any(r.variant == name and r.train is not None for r in measured):
                    line = profile_dynnet(bench, batch_size, name)
                    if line:
                        notes.append(line)

    cells = table_cells(rows)
    print(env)
    print(format_text(cells))
    print(LEGEND)
    if common.DATA_READER != "dynnet.data":
        notes.insert(0, f"data read by the {common.DATA_READER}")
    for line in notes:
        print(line)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(f"{env}\n\n{format_markdown(cells)}\n\n{LEGEND}\n")
            if notes:
                f.write("\n" + "\n".join(f"- {line}" for line in notes) + "\n")


if __name__ == "__main__":
    main()
