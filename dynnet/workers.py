"""Tracing the next batches in a worker process while this one computes.

`run_batches` yields the outputs of a dynnet function on each batch of a sequence, as
`f.batch(batch)` would. The first batch runs here, which creates the batching
signatures and segment templates of the model; then a worker process is forked. It
shares those objects (at the same addresses and serial numbers) and the batches, so
a request is just a batch's index: the worker runs the user's code on every example
of that batch, schedules the nodes and sends back a plan (dynnet/plans.py). Here the
plan runs group by group with its gather indices ready. Training code between two
batches (backward, optimizer step) overlaps the worker's tracing of the next one.
With `workers=n`, n processes are forked together and plan the batches in turn, for
machines where one cannot trace as fast as this process computes (on a GPU host with
cores to spare; on 2 cores a second worker only competes for them).

A batch the worker cannot plan runs here instead (the profile's `fallbacks` says
why). One that made new signatures also restarts the worker, so that it knows them.

The worker never computes on an accelerator (CUDA cannot run in a forked child):
constants made while tracing (`torch.zeros(n, device=device)`) are made on the CPU
there and moved here; anything else the user's code computes on the device while
tracing makes the batch run here.

A worker traces in the state of when it was forked. `run_batches` is given `state()`,
what tracing depends on besides the batch as far as dynnet can see it (the models'
train()/eval() modes and plain settings, as `reuse_traces` sees them: see
example_traces.fingerprint); a plan that arrives after that state changed runs here
instead, and the workers are forked again.

The worker reads the batches as they were when it was forked. A batch replaced or
reordered here since then is noticed (its examples are not the same objects: the plan
is dropped and the batch runs here); an example changed in place is not.

Memory: the worker shares this process's memory until either writes to it (fork's
copy-on-write); reading an example changes its reference count, so the pages of the
examples it traces, and of the model objects it uses, get copied into the worker.

What a worker changes: the user's code runs in another process, so its side effects
other than `print` (appending to a list, counting calls) do not reach this one, and
Python decisions taken on weight values while tracing (`if self.w.sum() > 0`, on a
weight, not a lazy value) see the weights of when the worker was forked. Code like
that should run with `workers=0`. And while the loop runs, torch uses one thread fewer
here when it had one per core (the worker takes a core; on a 2-core machine, two torch
threads beside a busy worker made the training loop 2x slower than one thread); with
another thread count, torch's float sums may round differently from `workers=0`'s (with
one thread, results are the same bits).
"""

import collections.abc
import gc
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections import deque

import torch

from dynnet import config, tracing
from dynnet.example_traces import collector_paused
from dynnet.outputs import stack_outputs
from dynnet.plans import Plan, PlanMiss, execute_plan
from dynnet.runtime import _profiles

tracing.register_internal_file(__file__)

AHEAD = 2  # batches requested from each worker beyond the one about to run
_MAX_RESTARTS = 8  # worker restarts for new signatures, per run_batches call
_MAX_MISSES = 3  # batches in a row the worker could not plan before it is stopped


def can_fork():
    """Workers are forked, and used on Linux only (elsewhere fork is unsafe or absent)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def run_batches(run_here, plan, examples, batches, workers, warm=False, adopt=None,
                state=None):
    """Yields `run_here(batch)` for each batch of `batches`, planning batches ahead in
    `workers` worker processes (`plan(batch, known) -> Plan`, see plans.plan_batch);
    `examples(batch)` are a batch's per-example argument tuples. `workers=0` runs
    every batch here. `warm`: the function ran before, so its signatures likely exist
    already. `adopt(plan, examples)`, when given, is called with each plan executed
    (to keep the traces it recorded, and the plan of a batch seen before). `state()`,
    when given, is what the workers' tracing depends on besides the batch (the
    models' train()/eval() modes and settings: example_traces.fingerprint); a plan
    made in another state is not used, and the workers are forked again."""
    if workers.__class__ is not int or workers < 0:
        raise ValueError(f"workers must be a count of processes (0 or more), not {workers!r}")
    sequence = isinstance(batches, collections.abc.Sequence)
    # the worker reads batches by index from its copy of them: a stream (a DataLoader,
    # a generator) runs here, batch by batch, never read ahead (noted per batch)
    stream = workers and not sequence and not config.eager
    if not sequence or workers == 0 or len(batches) < 2 or config.eager or not can_fork():
        for i, batch in enumerate(batches):
            if stream:
                _note_miss("the batches are not a sequence (a list of batches), so a "
                           "worker cannot read them; they ran in this process")
            yield _run_here(run_here, batch, i)
        return
    workers = min(workers, len(batches) - 1)
    threads = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    pool = None
    try:
        if threads > 1 and threads + workers > cores:
            # the workers take cores of their own
            torch.set_num_threads(max(1, min(threads, cores - workers)))
        # The first batch runs here: the workers have no plan yet, and it would take
        # about as long to trace the batch there as to run it whole here. They are
        # forked before it when the function already ran (its signatures exist), else
        # after it, so that they share the signatures that batch makes.
        requested = 1
        if warm:
            pool = _start(plan, batches, workers, state)
            if pool is not None:
                requested = pool.request_until(requested, pool.ahead(1), batches)
        yield _run_here(run_here, batches[0], 0)
        if not warm:
            pool = _start(plan, batches, workers, state)
        restarts, misses = 0, 0
        for i in range(1, len(batches)):
            if pool is None:
                yield _run_here(run_here, batches[i], i)
                continue
            requested = pool.request_until(requested, pool.ahead(i), batches)
            waited = time.perf_counter()
            got, new_signature = pool.receive(i)
            _note_seconds("wait_seconds", time.perf_counter() - waited)
            stale = state is not None and state() != pool.state
            if stale:
                got = ("the model's mode or settings changed (train()/eval(), an attribute) "
                       "since the workers were forked")
                new_signature = True  # fork them again, in the new state
            if got.__class__ is Plan:
                if got.fingerprint != fingerprint(batches[i]):
                    got = "the batch changed after the worker was forked"
                elif got.grad_enabled != torch.is_grad_enabled():
                    got = "the batch was traced in another grad mode"
                else:
                    try:
                        results = execute_plan(got, pool.signatures, examples(batches[i]))
                    except PlanMiss as e:
                        got = str(e)
                    else:
                        misses = 0
                        if adopt is not None:
                            adopt(got, examples(batches[i]))
                        yield stack_outputs(results)
                        continue
            _note_miss(got)
            yield _run_here(run_here, batches[i], i)
            misses += 1
            if new_signature or misses >= _MAX_MISSES:
                pool.close()
                pool = None
                if new_signature and restarts < _MAX_RESTARTS:
                    restarts += 1
                    pool = _start(plan, batches, workers, state)
                    requested, misses = i + 1, 0
    finally:
        if pool is not None:
            pool.close()
        torch.set_num_threads(threads)


def _start(plan, batches, workers, state=None):
    """A new `_Pool` of up to `workers` processes, or None (noted in the profile) when
    no process can be forked; it remembers `state()` of when it was forked."""
    begun = time.perf_counter()
    try:
        pool = _fork(plan, batches, workers)
        if pool is not None:
            pool.state = state() if state is not None else None
        return pool
    finally:
        _note_seconds("fork_seconds", time.perf_counter() - begun)


def _fork(plan, batches, workers):
    started = []
    for _ in range(workers):
        try:
            started.append(_Worker(plan, batches, [w.conn for w in started]))
        except OSError as e:
            if not started:
                _note_miss(f"no worker process could be started ({e}); the batches ran here")
                return None
            _note_miss(f"only {len(started)} of {workers} worker processes could be "
                       f"started ({e})")
            break
    return _Pool(started)


class _Pool:
    """Worker processes that plan batches in turn: batch i (from 1) goes to worker
    (i - 1) mod n. They are forked together, so they know the same signatures."""

    def __init__(self, workers):
        self.workers = workers
        self.signatures = workers[0].signatures
        self.state = None  # what `state()` was when they were forked (see run_batches)

    def _of(self, index):
        return self.workers[(index - 1) % len(self.workers)]

    def ahead(self, index):
        """The last batch to have requested while batch `index` is the next to run:
        `AHEAD` batches per worker beyond it."""
        return index + AHEAD * len(self.workers)

    def request_until(self, start, last, batches):
        """Requests batches `start` to `last` (within `batches`) in the current grad
        mode, each from its worker; returns the next batch to request."""
        stop = min(last + 1, len(batches))
        for index in range(start, stop):
            self._of(index).request(index)
        return max(start, stop)

    def receive(self, index):
        """`(plan or the reason there is none, whether the reason is a new signature)`
        for batch `index`, the oldest request."""
        return self._of(index).receive(index)

    def close(self):
        for worker in self.workers:
            worker.close()


def fingerprint(batch):
    """What a batch is, the same in the worker as here for a batch that existed at the
    fork: its length and the identities of its examples (a batch replaced or shuffled
    here since then has other ones, and its plan is not used)."""
    return len(batch), hash(tuple(map(id, batch)))


def _run_here(run_here, batch, index):
    """`run_here(batch)`; an error it raises gets a note naming the batch."""
    try:
        return run_here(batch)
    except BaseException as e:
        e.add_note(f"dynnet: in batch {index} of f.batches")
        raise


def _note_seconds(name, seconds):
    for p in _profiles:
        setattr(p, name, getattr(p, name) + seconds)


def _note_miss(reason):
    for p in _profiles:
        p.worker_misses[reason] = p.worker_misses.get(reason, 0) + 1


class _Worker:
    """A forked process that plans batches on request, in request order."""

    def __init__(self, plan, batches, others=()):
        """`others`: this process's pipe ends to workers forked before this one."""
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        known = tracing.serials_used()  # every signature here has a smaller serial
        self.signatures = dict(tracing.signatures_by_serial)  # kept alive for the plans
        self.process = context.Process(
            target=_serve, args=(child, [self.conn, *others], plan, batches, known),
            daemon=True, name="dynnet-planner")
        self.process.start()
        child.close()
        self.requested = deque()

    def request(self, index):
        """Asks for a plan of batch `index` in the current grad mode."""
        self.conn.send((index, torch.is_grad_enabled()))
        self.requested.append(index)

    def receive(self, index):
        """`(plan or the reason there is none, whether the reason is a new signature)`
        for batch `index`, the oldest request."""
        assert self.requested.popleft() == index
        try:
            message = self.conn.recv_bytes()
            with collector_paused():  # a plan holding traces is many objects at once
                return pickle.loads(message)
        except (EOFError, OSError):
            return "the worker process ended", False

    def close(self):
        """Stops the worker at once, without waiting (multiprocessing reaps it)."""
        self.conn.close()
        self.process.terminate()


def _serve(conn, parent_ends, plan, batches, known):
    """The worker's loop: plans the requested batches until the pipe closes."""
    for end in parent_ends:  # copies that would keep pipes open after the parent's ends
        end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)  # the other process computes
    # The objects inherited from the fork are never garbage here: keep the collector off
    # them (a full collection touched every one of them, copying their memory pages:
    # 180 ms in the middle of an epoch).
    gc.freeze()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        index, grad_enabled = message
        try:
            with torch.set_grad_enabled(grad_enabled):
                planned = plan(batches[index], known)
            planned.fingerprint = fingerprint(batches[index])
            reply = (planned, False)
        except PlanMiss as e:
            reply = (str(e), str(e).startswith(_NEW_SIGNATURE))
        except Exception as e:  # runs here again, where the error is reported
            reply = (f"{type(e).__name__} while tracing in the worker: {e}", False)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:
            data = pickle.dumps((f"the plan could not be sent ({type(e).__name__}: {e})",
                                 False))
        conn.send_bytes(data)


_NEW_SIGNATURE = "new batching signature"
