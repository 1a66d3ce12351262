"""The user-facing API: `function`, `to_code`, `run_eagerly`."""

import functools
import weakref
from collections.abc import Sequence

from dynnet import config, tracing
from dynnet.converter import converted_function
from dynnet.converter.operators.call import register_startable
from dynnet.example_traces import TraceCache, fingerprint, modules_among
from dynnet.outputs import materialize, stack_outputs
from dynnet.plans import plan_batch
from dynnet.replayed_batches import has_plan, note_worker_plan, run_planned
from dynnet.runtime import Suspend, complete, run_batch
from dynnet.workers import run_batches

tracing.register_internal_file(__file__)


class DynFunction:
    """A per-example function that runs batched: see `dynnet.function`."""

    def __init__(self, fn, schedule=None, reuse_traces=False):
        self.fn = fn
        self.schedule = schedule
        self.traces = None  # reuse_traces: False (or None), True or a count
        if reuse_traces is True:
            self.traces = TraceCache()
        elif reuse_traces is not False and reuse_traces is not None:
            self.traces = TraceCache(reuse_traces)
        self._converted = None
        self._ran = False  # whether a batch ran (so its signatures likely exist)
        self._ran_on = weakref.WeakSet()  # objects a method's batches ran on
        functools.update_wrapper(self, fn)

    def __set_name__(self, owner, name):
        # the converter reads the class's methods (calls of them end segments); a
        # subclass that wraps the function again keeps the class that defined it
        if getattr(self.fn, "__dynnet_owner__", None) is None:
            self.fn.__dynnet_owner__ = owner

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        return BoundDynFunction(self, obj)

    @property
    def converted(self):
        """The `ConvertedFunction` (converted on first use)."""
        if self._converted is None:
            self._converted = converted_function(self.fn)
        return self._converted

    def start(self, args, kwargs):
        """Begins a call from converted code (resumable)."""
        converted = self._converted or self.converted
        return converted.start(args, kwargs)

    def __call__(self, *args, **kwargs):
        """Runs one example and returns its outputs as torch tensors."""
        if config.eager:
            return self.fn(*args, **kwargs)
        if tracing.current() is not None:  # called by code that cannot pause
            result = self.start(args, kwargs)
            return complete(result) if result.__class__ is Suspend else result
        results = self._run([args], kwargs)
        return materialize(results[0])

    def batch(self, *per_example_args, **shared_kwargs):
        """Runs every example; returns the stacked outputs (see `dynnet.function`)."""
        examples = _zip_examples(_sequences(per_example_args))
        if config.eager:
            return stack_outputs([self.fn(*a, **shared_kwargs) for a in examples])
        return stack_outputs(self._run(examples, shared_kwargs))

    def batches(self, batches, *, workers=None, **shared_kwargs):
        """Yields `self.batch(batch, **shared_kwargs)` for each batch of `batches` (a
        sequence of batches, each a sequence of examples; any other iterable of
        batches runs here, batch by batch) in turn. Each example is the function's one
        per-example argument (a function of several takes one tuple and unpacks it).

        With `workers=1`, a worker process traces the next batches while this one
        computes the current one (and while the caller trains on its outputs), and
        only executes here: see dynnet/workers.py for what that changes (the user's
        side effects other than print happen in the worker). `workers=n` forks n of
        them, which plan the batches in turn (for machines with cores to spare, where
        one worker cannot trace as fast as this process computes, as on a GPU).
        `workers=0` runs each batch here, as `.batch` does. The default, None, is
        `dynnet.config.workers` (`DYNNET_WORKERS`, else one per four cores, 1 to 3). For a
        function with `reuse_traces=True`, the workers replay the examples of their
        copy of the cache and send back the traces of the others, which are kept here;
        batches that come back (an evaluation set) keep their plans here, and once
        every batch of `batches` has one, they run here without workers
        (dynnet/replayed_batches.py).
        """
        return self._batches(batches, workers, shared_kwargs, None)

    def _batches(self, batches, workers, kwargs, obj):
        """`batches`, of a method when `obj` is not None (bound to `obj`)."""
        if obj is None:
            warm = self._ran

            def example(x):
                return (x,)
        else:
            warm = self._ran_on_object(obj)

            def example(x):
                return (obj, x)

        def examples(batch):
            return [example(x) for x in batch]

        def run_here(batch):
            columns = list(zip(*examples(batch))) or [[]] * (1 if obj is None else 2)
            out = self.batch(*columns, **kwargs)
            if obj is not None:
                self._mark_ran_on(obj)
            return out

        def plan(batch, known):
            return plan_batch(self._make(kwargs), examples(batch), known, self.schedule,
                              self.traces)

        adopt = None
        if workers is None:
            workers = config.workers
        if isinstance(batches, Sequence) and batches and batches[0]:
            # before workers are forked with the signatures: see `_run`
            tracing.note_autocast()
            tracing.note_modules(example(batches[0][0]), kwargs)
        traces = self.traces
        if workers and traces is not None and not config.eager:
            forked = self._prepare_traces(batches, example, kwargs)
            clears = traces.clears
            if isinstance(batches, Sequence) and batches and all(
                    has_plan(traces, examples(batch)) for batch in batches):
                workers = 0  # every batch runs from the plan kept for it here, at once

            def adopt(plan, batch_examples):
                if traces.clears != clears:  # clear_traces() since the fork: the
                    return  # worker's traces may hold what the user changed
                traces.begin(batch_examples, kwargs)
                if traces.current.state != forked:  # the worker traced another state
                    return  # (a model switched to eval() and back mid-epoch)
                if plan.recorded:
                    traces.adopt(plan.recorded, batch_examples, plan.grad_enabled)
                note_worker_plan(traces, batch_examples, plan)

        return run_batches(run_here, plan, examples, batches, workers, warm=warm,
                           adopt=adopt, state=_state_of(batches, example, kwargs))

    def clear_traces(self):
        """Forgets the examples' recorded traces (`reuse_traces=True`): call it after a
        change the cache cannot see (dynnet/example_traces.py), such as a changed
        example or a global the function reads."""
        if self.traces is not None:
            self.traces.clear()

    def _prepare_traces(self, batches, example, kwargs):
        """Before workers are forked for `batches` (a sequence): picks the cache's part
        for their models and decodes the traces earlier workers sent (once, here, so
        that the workers share them decoded). Returns the state the workers will trace
        in (see example_traces.fingerprint), or None."""
        if isinstance(batches, Sequence):
            self.traces.begin([example(x) for batch in batches for x in batch], kwargs)
            self.traces.decode_all()
            return self.traces.current.state
        return None

    def _run(self, examples, kwargs):
        tracing.note_autocast()
        if examples:
            tracing.note_modules(examples[0], kwargs)
        traces = self.traces
        if traces is not None:
            traces.begin(examples, kwargs)
            results = run_planned(traces, self._make(kwargs), examples, self.schedule)
            if results is not None:
                self._ran = True
                return results
        results, _ = run_batch(self._make(kwargs), examples, self.schedule, traces)
        self._ran = True
        return results

    def _mark_ran_on(self, obj):
        try:
            self._ran_on.add(obj)
        except TypeError:  # not weakly referenceable
            pass

    def _ran_on_object(self, obj):
        """Whether a batch of this method ran on `obj` (its segments key on `obj`'s
        modules, so another object makes new signatures)."""
        try:
            return obj in self._ran_on
        except TypeError:  # not weakly referenceable
            return False

    def _make(self, kwargs):
        """`make(args)`: the generator of one example's call."""
        converted = self.converted

        def make(args):
            if converted.is_generator:
                return converted.function(*args, **kwargs)
            return _returning(converted.function(*args, **kwargs))

        return make

    def __repr__(self):
        return f"<dynnet.function {self.fn.__qualname__}>"


class BoundDynFunction:
    """A `DynFunction` bound to an object (a method); `.batch` shares the object."""

    __slots__ = ("function", "obj")

    def __init__(self, function, obj):
        self.function = function
        self.obj = obj

    def start(self, args, kwargs):
        function = self.function
        converted = function._converted or function.converted
        return converted.start((self.obj, *args), kwargs)

    def __call__(self, *args, **kwargs):
        return self.function(self.obj, *args, **kwargs)

    def batch(self, *per_example_args, **shared_kwargs):
        per_example_args = _sequences(per_example_args)
        n = _batch_size(per_example_args)
        out = self.function.batch([self.obj] * n, *per_example_args, **shared_kwargs)
        self.function._mark_ran_on(self.obj)
        return out

    def batches(self, batches, *, workers=None, **shared_kwargs):
        """`DynFunction.batches` with this object as the first argument."""
        return self.function._batches(batches, workers, shared_kwargs, self.obj)

    def clear_traces(self):
        """`DynFunction.clear_traces` (the cache is the method's, for every object)."""
        self.function.clear_traces()

    @property
    def __wrapped__(self):
        return self.function.fn

    def __repr__(self):
        return f"<bound dynnet.function {self.function.fn.__qualname__} of {self.obj!r}>"


register_startable(DynFunction)
register_startable(BoundDynFunction, cacheable=False)


def _returning(value):
    return value
    yield  # a generator that returns `value` at once


def _sequences(per_example_args):
    """The per-example argument iterables, those without a length (generators, maps)
    read into lists, as `map` would read them."""
    return [a if hasattr(a, "__len__") else list(a) for a in per_example_args]


def _batch_size(per_example_args):
    if not per_example_args:
        raise TypeError("batch() needs at least one sequence of per-example arguments")
    sizes = {len(a) for a in per_example_args}
    if len(sizes) != 1:
        raise ValueError(f"batch(): the per-example argument sequences have different "
                         f"lengths {sorted(sizes)}; each must hold one entry per example")
    return sizes.pop()


def _zip_examples(per_example_args):
    _batch_size(per_example_args)
    return list(zip(*per_example_args))


def _state_of(batches, example, kwargs):
    """`state()`: what a worker's tracing depends on besides the batch, as far as dynnet
    can see it (the train()/eval() modes and plain settings of the modules among the
    first example's arguments and the shared keyword arguments, the autocast state);
    a plan traced in another state is not used (dynnet/workers.py)."""
    first = [example(batches[0][0])] if isinstance(batches, Sequence) and batches and \
        batches[0] else []
    modules = list(modules_among(first, kwargs).values())
    return lambda: fingerprint(modules, kwargs)[0]


def function(fn=None, *, schedule=None, reuse_traces=None):
    """Decorates a per-example function (or method) so that it can run batched.

    `f(*args)` runs one example and returns its outputs as torch tensors.
    `f.batch(*sequences)` runs B examples (the i-th example takes the i-th item of
    every sequence; keyword arguments are shared by all examples) and returns one
    example's output structure with every tensor leaf stacked on a new leading dim;
    when structures or leaf shapes differ between examples, a list of per-example
    outputs; non-tensor values (numbers, lists of ids) become the list of the examples'
    values. Results equal running `fn` on each example, forward and backward.
    `f.batches(batches)` yields `f.batch(batch)` for each batch of a list of batches
    (each a list of examples), tracing the next ones in a worker process.
    `function(f, ...)` of a dynnet function `f` gives `f` with the options given
    changed and the others kept (a subclass can say `loss = dynnet.function(Base.loss,
    reuse_traces=True)`).

    Args:
      schedule: "depth" or "agenda" (default: `dynnet.config.schedule`).
      reuse_traces: keep each example's trace, keyed by the identity of its
        arguments, and replay it when a later batch holds the same objects (the next
        epoch over the same data) instead of running the code again. Replays skip the
        code's side effects other than printing: use it for functions whose trace
        depends only on the example and the model (dynnet/example_traces.py says
        what the cache checks); `f.clear_traces()` forgets the traces. The cache
        holds the examples it keeps, up to 100,000 per model (about 7 KB each for an
        SST tree), or up to `reuse_traces` when it is a number: examples made anew
        for every batch never replay, and only fill it.
    """
    if fn is None:
        return lambda f: function(f, schedule=schedule, reuse_traces=reuse_traces)
    if isinstance(fn, BoundDynFunction) or (isinstance(fn, DynFunction) and schedule is None
                                            and reuse_traces is None):
        return fn
    if isinstance(fn, DynFunction):  # the same function with other options
        if reuse_traces is None:  # kept: the bound on kept examples it had, or none
            reuse_traces = fn.traces.max_examples if fn.traces is not None else False
        return DynFunction(fn.fn, schedule=schedule or fn.schedule, reuse_traces=reuse_traces)
    return DynFunction(fn, schedule=schedule, reuse_traces=reuse_traces)


def to_code(f):
    """The converted source of `f` (a dynnet function, method or plain function)."""
    if isinstance(f, BoundDynFunction):
        f = f.function
    if isinstance(f, DynFunction):
        f = f.fn
    f = getattr(f, "__func__", f)
    return converted_function(f).source + "\n"


class run_eagerly:
    """Runs dynnet functions unconverted, one example at a time (for debugging).

    Use as a context manager (`with dynnet.run_eagerly(): ...`) or as a call
    (`dynnet.run_eagerly(True)` / `dynnet.run_eagerly(False)`).
    """

    def __init__(self, flag=True):
        self.previous = config.eager
        config.eager = bool(flag)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        config.eager = self.previous
