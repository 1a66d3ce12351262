"""`f.batches`: batches traced in a worker process, executed here from their plans.

Every test checks results against running without a worker (or example by example),
and that the worker actually planned the batches it should have (the profile's
`planned_batches`), so a broken worker cannot hide behind the in-process fallback.
"""

import copy
import multiprocessing
import os
import random
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dynnet
from dynnet.models import NaryTreeLSTM, SequencePredictor
from dynnet.workers import can_fork
from tests.strategies import VOCAB, random_trees
from tests.strategies import tree_batches as tree_batch_lists

pytestmark = pytest.mark.skipif(not can_fork(), reason="workers need the fork start method")



def tree_model(seed=0):
    torch.manual_seed(seed)
    return NaryTreeLSTM(VOCAB, embed_dim=8, hidden_dim=12)


def tree_batches(n_batches, size=6, seed=1):
    trees = random_trees(n_batches * size, max_depth=7, seed=seed)
    return [trees[i:i + size] for i in range(0, len(trees), size)]


def test_planned_batches_equal_batch_values_and_gradients():
    model = tree_model()
    batches = tree_batches(6)
    with dynnet.profile() as profile:
        got = list(model.loss.batches(batches))
    # warm-up batch here, then every batch from a plan
    assert profile.planned_batches == len(batches) - 1, profile.fallbacks
    _assert_same_as_batch(model, batches, got)


def _assert_same_as_batch(model, batches, got):
    """`got` (the losses of `batches` from plans) equal `f.batch`'s, values and the
    gradients of every weight."""
    twin = copy.deepcopy(model)
    want = [twin.loss.batch(b) for b in batches]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    sum(g.sum() for g in got).backward()
    sum(w.sum() for w in want).backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


_NODE_LOSS_MODEL = NaryTreeLSTM(VOCAB, embed_dim=6, hidden_dim=7, node_loss=True)


@settings(max_examples=12, deadline=None)
@given(st.lists(tree_batch_lists(max_size=6, max_depth=6), min_size=2, max_size=4))
def test_random_batches_of_random_trees(batches):
    model = _NODE_LOSS_MODEL
    model.zero_grad()
    with dynnet.profile() as profile:
        got = list(model.loss.batches(batches))
    assert profile.planned_batches == len(batches) - 1, profile.fallbacks
    got_grads = torch.autograd.grad(sum(g.sum() for g in got), list(model.parameters()),
                                    allow_unused=True)
    want = [model.loss.batch(b) for b in batches]
    want_grads = torch.autograd.grad(sum(w.sum() for w in want), list(model.parameters()),
                                     allow_unused=True)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    for g, w in zip(got_grads, want_grads):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w)


def test_planned_batches_equal_examples_one_by_one():
    model = tree_model(3)
    batches = tree_batches(4, size=5, seed=7)
    with torch.no_grad():
        model.predict.batch(batches[0])  # warm: the worker is forked at once
        with dynnet.profile() as profile:
            got = list(model.predict.batches(batches))
    assert profile.planned_batches == len(batches) - 1
    with dynnet.run_eagerly(), torch.no_grad():
        for batch, logits in zip(batches, got):
            want = torch.stack([model.predict(t) for t in batch])
            torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-4)


def test_training_sees_every_update():
    """The worker traces with stale weights; the plans must compute with current ones."""
    model = tree_model(5)
    twin = copy.deepcopy(model)
    batches = tree_batches(8, seed=11)
    runs = []
    for m, outputs in ((model, model.loss.batches(batches)),
                       (twin, (twin.loss.batch(b) for b in batches))):
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        losses = []
        with dynnet.profile() as profile:
            for loss in outputs:
                opt.zero_grad()
                loss.mean().backward()
                opt.step()
                losses.append(loss.mean().item())
        runs.append((losses, profile.planned_batches))
    (got, planned), (want, _) = runs
    assert planned == len(batches) - 1
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def test_sequence_model_and_shared_kwargs():
    torch.manual_seed(0)
    model = SequencePredictor(VOCAB, embed_dim=8, hidden_dim=8, eos_id=0)
    rng = random.Random(2)
    # the first batch holds every length: later batches make no new signature
    lengths = list(range(1, 9)) + [rng.randrange(1, 9) for _ in range(32)]
    sentences = [[rng.randrange(1, VOCAB) for _ in range(n)] for n in lengths]
    batches = [sentences[i:i + 8] for i in range(0, 40, 8)]
    with dynnet.profile() as profile:
        got = list(model.loss.batches(batches))
    assert profile.planned_batches == len(batches) - 1, profile.fallbacks
    for batch, loss in zip(batches, got):
        torch.testing.assert_close(loss, model.loss.batch(batch))


@dynnet.function
def scaled_sum(x, scale=1.0):
    if x.sum() > 0:  # a test on a lazy value: the example pauses
        return x.sum() * scale
    return -x.sum() * scale


def test_a_batch_that_pauses_runs_here(capsys):
    batches = [[torch.randn(3) for _ in range(4)] for _ in range(5)]
    with dynnet.profile() as profile:
        got = list(scaled_sum.batches(batches, scale=2.0))
    for batch, out in zip(batches, got):
        torch.testing.assert_close(out, torch.stack([x.sum().abs() * 2 for x in batch]))
    assert profile.planned_batches == 0
    assert any(line.startswith("worker: ") for line in profile.fallbacks)


@dynnet.function
def row_sums(x):
    print("length", x.shape[0])
    return torch.tanh(x).sum(0)


@pytest.mark.parametrize("workers", [1, 2])
def test_new_signatures_restart_the_worker_and_prints_arrive_in_order(capsys, workers):
    # the worker meets a new per-example shape (a new signature) at batch 2 and 4
    dims = [d + workers - 1 for d in (3, 3, 5, 5, 7, 7, 7)]  # shapes new to this process
    torch.manual_seed(0)
    batches = [[torch.randn(d, 2) for _ in range(3)] for d in dims]
    inputs = [[x.tolist() for x in batch] for batch in batches]  # plain data: plannable

    @dynnet.function
    def from_lists(rows):
        return row_sums(torch.tensor(rows))

    with dynnet.profile() as profile:
        got = list(from_lists.batches(inputs, workers=workers))
    for batch, out in zip(batches, got):
        torch.testing.assert_close(out, torch.stack([torch.tanh(x).sum(0) for x in batch]))
    # batches 0, 2 and 4 run here (a first batch, then new signatures); the others planned
    assert profile.planned_batches == 4, profile.fallbacks
    assert sum(profile.worker_misses.values()) == 2
    printed = capsys.readouterr().out.split("\n")[:-1]
    assert printed == [f"length {d}" for d in dims for _ in range(3)]


def test_per_example_tensor_inputs_and_their_gradients():
    batches = [[torch.randn(d, 4, requires_grad=True) for d in (2, 2, 3)] for _ in range(5)]
    with dynnet.profile() as profile:
        got = list(row_sums.batches(batches))
    assert profile.planned_batches == len(batches) - 1, profile.fallbacks
    want = [[torch.tanh(x).sum(0) for x in batch] for batch in batches]
    for batch_out, batch_want in zip(got, want):  # per-example shapes differ: lists
        for out, w in zip(batch_out, batch_want):
            torch.testing.assert_close(out, w)
    inputs = [x for batch in batches for x in batch]
    grads = torch.autograd.grad(sum((o * o).sum() for b in got for o in b), inputs)
    grads_want = torch.autograd.grad(sum((w * w).sum() for b in want for w in b), inputs)
    for g, w in zip(grads, grads_want):
        torch.testing.assert_close(g, w)


@dynnet.function
def with_noise(x):
    return torch.tanh(x) + torch.randn(4)  # random numbers drawn while tracing


def test_batches_the_worker_cannot_plan_run_here_and_the_worker_stops():
    batches = [[torch.randn(4) for _ in range(3)] for _ in range(8)]
    with dynnet.profile() as profile:
        got = list(with_noise.batches(batches))
    assert [out.shape for out in got] == [(3, 4)] * 8
    assert profile.planned_batches == 0
    (reason, count), = profile.worker_misses.items()
    assert "a tensor computed while tracing, from random numbers" in reason
    assert count == 3  # then the worker is stopped: no more batches are sent to it


def test_grad_mode_changed_after_the_request():
    model = tree_model(2)
    batches = tree_batches(5, seed=4)
    model.loss.batch(batches[0])
    outputs = []
    with dynnet.profile() as profile:
        for i, loss in enumerate(model.loss.batches(batches)):
            outputs.append(loss)
            torch.set_grad_enabled(i < 1)  # batches 2.. were requested with grad on
    torch.set_grad_enabled(True)
    assert outputs[0].requires_grad and not outputs[3].requires_grad
    assert "the batch was traced in another grad mode" in profile.worker_misses
    for batch, loss in zip(batches, outputs):
        torch.testing.assert_close(loss, model.loss.batch(batch).detach())


def test_user_errors_are_raised_here_with_the_example():
    @dynnet.function
    def fails_on_big(x):
        if len(x) > 3:
            raise ValueError("too long")
        return torch.tensor(x, dtype=torch.float32).sum()

    batches = [[[1.0, 2.0]] * 2, [[1.0, 2.0]] * 2, [[1.0]] * 2 + [[1.0, 2.0, 3.0, 4.0]]]
    gen = fails_on_big.batches(batches)
    assert next(gen).tolist() == [3.0, 3.0]
    assert next(gen).tolist() == [3.0, 3.0]
    with pytest.raises(ValueError, match="too long") as info:
        next(gen)
    assert any("example 2" in note for note in info.value.__notes__)


def test_leaving_the_loop_early_stops_the_worker():
    model = tree_model()
    model.loss.batch(tree_batches(1)[0])
    before = set(multiprocessing.active_children())
    gen = model.loss.batches(tree_batches(6))
    next(gen)
    started = set(multiprocessing.active_children()) - before
    assert len(started) == 1
    gen.close()
    worker = started.pop()
    worker.join(timeout=10)
    assert not worker.is_alive()


def test_without_workers_and_bad_arguments():
    model = tree_model()
    batches = tree_batches(3)
    with dynnet.profile() as profile:
        got = list(model.loss.batches(batches, workers=0))
    assert profile.planned_batches == 0 and not profile.worker_misses
    with dynnet.profile() as profile:  # a stream is never read ahead: it runs here
        stream = (b for b in batches)
        streamed = []
        for loss in model.loss.batches(stream):
            streamed.append(loss)
            assert stream.gi_frame is not None  # not drained ahead of time
    assert profile.planned_batches == 0
    assert profile.worker_misses == {  # one per batch that ran here
        "the batches are not a sequence (a list of batches), so a worker cannot read "
        "them; they ran in this process": len(batches)}
    for a, b in zip(streamed, got):
        torch.testing.assert_close(a, b)
    for batch, loss in zip(batches, got):
        torch.testing.assert_close(loss, model.loss.batch(batch))
    for bad in (-1, 1.5, "2"):
        with pytest.raises(ValueError, match="workers must be a count of processes"):
            next(model.loss.batches(batches, workers=bad))
    with dynnet.run_eagerly():
        eager = list(model.loss.batches(batches))
    torch.testing.assert_close(eager[1], got[1])


def test_the_worker_overlaps_with_work_here():
    """Between two batches the caller's own work runs while the worker traces: with a
    slow step here, the worker has every later plan ready in time."""
    model = tree_model()
    batches = tree_batches(4)
    model.loss.batch(batches[0])
    with dynnet.profile() as profile:
        for loss in model.loss.batches(batches):
            time.sleep(0.05)
    assert profile.planned_batches == len(batches) - 1



class Shrink(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = torch.nn.Linear(4, 4)

    @dynnet.function
    def shrink(self, x):
        while x.norm() > 1:  # a loop segment: one node per example, no pause
            x = 0.8 * torch.tanh(self.cell(x)) * x
        return x


def test_a_data_dependent_loop_is_planned():
    torch.manual_seed(0)
    model = Shrink()
    batches = [[torch.randn(4) * s for s in (0.5, 2.0, 8.0, 30.0)] for _ in range(4)]
    with dynnet.profile() as profile:
        got = list(model.shrink.batches(batches))
    assert profile.planned_batches == len(batches) - 1, profile.fallbacks
    assert any(sig.kind == "loop" for sig in profile.group_sizes)
    with dynnet.run_eagerly():
        for batch, out in zip(batches, got):
            torch.testing.assert_close(out, torch.stack([model.shrink(x) for x in batch]))


def test_batches_changed_after_the_fork_are_not_planned_stale():
    model = tree_model(6)
    batches = tree_batches(6, seed=9)
    model.loss.batch(batches[0])  # warm: the worker is forked before the first batch
    spare = tree_batches(1, seed=10)[0]
    got = []
    with dynnet.profile() as profile:
        for i, loss in enumerate(model.loss.batches(batches)):
            got.append(loss)
            if i == 0:
                batches[4] = spare  # after the fork: the worker still sees the old one
    assert profile.worker_misses == {"the batch changed after the worker was forked": 1}
    torch.testing.assert_close(got[4], model.loss.batch(spare))


def test_the_worker_ends_when_this_process_lets_go_of_the_pipe():
    """A worker must not outlive its parent: once the parent's end of the pipe is gone
    (closed, or the parent killed), the worker's read ends and it exits on its own."""
    model = tree_model()
    model.loss.batch(tree_batches(1)[0])
    before = set(multiprocessing.active_children())
    gen = model.loss.batches(tree_batches(4))
    next(gen)
    worker = (set(multiprocessing.active_children()) - before).pop()
    (handle,) = gen.gi_frame.f_locals["pool"].workers
    handle.conn.close()  # as if this process had died; no terminate()
    worker.join(timeout=10)
    assert not worker.is_alive()
    gen.close()


def test_the_profile_says_how_many_batches_came_from_plans():
    model = tree_model()
    batches = tree_batches(3)
    with dynnet.profile() as profile:
        list(model.loss.batches(batches))
    assert f"batches=3 ({len(batches) - 1} from a worker's plans)" in repr(profile)


def test_when_no_process_can_be_forked_the_batches_run_here(monkeypatch):
    from dynnet import workers

    def no_fork(*args):
        raise OSError("Cannot allocate memory")

    monkeypatch.setattr(workers, "_Worker", no_fork)
    model = tree_model()
    batches = tree_batches(3)
    threads = torch.get_num_threads()
    with dynnet.profile() as profile:
        got = list(model.loss.batches(batches))
    assert profile.planned_batches == 0
    assert list(profile.worker_misses) == [
        "no worker process could be started (Cannot allocate memory); the batches ran here"]
    assert torch.get_num_threads() == threads
    for batch, loss in zip(batches, got):
        torch.testing.assert_close(loss, model.loss.batch(batch))


def test_planned_inference_of_inline_ops_computes_into_the_arenas():
    """Plans of a model written with inline ops, under no_grad: the segments' last ops
    write into the arena rows (tests/test_segments.py checks the mechanism)."""
    from tests.test_arena import TreeLSTM  # inline ops; its segments end in tanh and +

    torch.manual_seed(1)
    model = TreeLSTM()
    batches = tree_batches(5, seed=12)
    with torch.no_grad():
        with dynnet.profile() as profile:
            got = list(model.encode.batches(batches))
        assert profile.planned_batches == len(batches) - 1
        with dynnet.run_eagerly():
            for batch, (h, c) in zip(batches, got):
                want = [model.encode(t) for t in batch]
                torch.testing.assert_close(h, torch.stack([w[0] for w in want]))
                torch.testing.assert_close(c, torch.stack([w[1] for w in want]))


def test_empty_batches_give_what_batch_gives():
    model = tree_model()
    batches = [[], *tree_batches(2), []]
    got = list(model.loss.batches(batches))
    assert got[0] == [] and got[3] == []
    torch.testing.assert_close(got[1], model.loss.batch(batches[1]))
    assert list(scaled_sum.batches([[], []], workers=0)) == [[], []]


@pytest.mark.parametrize("cores, expected", [(1, 1), (2, 1), (4, 1), (8, 2), (16, 3), (64, 3)])
def test_the_default_worker_count_follows_the_cores(monkeypatch, cores, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert dynnet.config.default_workers() == expected


def test_dynnet_config_workers_turns_workers_off(monkeypatch):
    import os
    import subprocess
    import sys

    read = "import dynnet; print(dynnet.config.workers)"
    default = str(dynnet.config.default_workers())
    for value, expected in (("0", "0"), ("1", "1"), ("3", "3"), (None, default),
                            ("", default), ("x", None)):
        env = {k: v for k, v in os.environ.items() if k != "DYNNET_WORKERS"}
        if value is not None:
            env["DYNNET_WORKERS"] = value
        run = subprocess.run([sys.executable, "-c", read], env=env, capture_output=True,
                             text=True)
        if expected is None:
            assert "DYNNET_WORKERS='x': expected a count" in run.stderr
        else:
            assert run.stdout.strip() == expected
    monkeypatch.setattr(dynnet.config, "workers", 0)
    model = tree_model()
    batches = tree_batches(3)
    with dynnet.profile() as profile:
        list(model.loss.batches(batches))
    assert profile.planned_batches == 0 and not profile.worker_misses
    with dynnet.profile() as profile:
        list(model.loss.batches(batches, workers=1))  # an explicit choice wins
    assert profile.planned_batches == len(batches) - 1


@dynnet.function
def shifted(x):
    return x + torch.ones(3, device=x.device)  # a pure factory, on the input's device


def test_factory_constants_for_another_device_are_made_on_the_cpu_while_planning():
    """A worker is a forked process, where CUDA cannot run: a pure factory's value for
    a device other than the CPU is made on the CPU while planning, and the executing
    process moves it. The "meta" device stands in for the accelerator."""
    import sys

    from dynnet import plans, tracing
    from dynnet.outputs import stack_outputs

    examples = [(torch.empty(3, device="meta"),) for _ in range(4)]
    shifted.batch([x for x, in examples])  # the signatures, as before a fork
    plan = plans.plan_batch(shifted._make({}), examples, sys.maxsize)
    stacked = [payloads for _, _, payloads, _, _ in plan.groups
               if payloads.__class__ is torch.Tensor]
    assert len(stacked) == 1 and stacked[0].device.type == "cpu"
    assert stacked[0].tolist() == [[1.0] * 3] * 4
    out = stack_outputs(plans.execute_plan(plan, tracing.signatures_by_serial, examples))
    assert out.device.type == "meta" and out.shape == (4, 3)
    # a real worker, end to end: every batch after the first from a plan
    batches = [[torch.empty(3, device="meta") for _ in range(2)] for _ in range(3)]
    with dynnet.profile() as profile:
        got = list(shifted.batches(batches))
    assert profile.planned_batches == 2, profile.fallbacks
    assert all(o.device.type == "meta" and o.shape == (2, 3) for o in got)


def test_several_workers_plan_the_batches_in_turn():
    model = tree_model(4)
    batches = tree_batches(7, seed=13)
    model.loss.batch(batches[0])  # warm: the workers are forked before the first batch
    before = set(multiprocessing.active_children())
    gen = model.loss.batches(batches, workers=3)
    with dynnet.profile() as profile:
        got = [next(gen)]
        assert len(set(multiprocessing.active_children()) - before) == 3
        got += list(gen)
    assert profile.planned_batches == len(batches) - 1, profile.fallbacks
    _assert_same_as_batch(model, batches, got)


def test_each_worker_holds_only_its_own_pipe():
    """A later worker must not keep an earlier one's pipe open: closing this process's
    end of the first worker's pipe ends it while the second still runs."""
    model = tree_model()
    model.loss.batch(tree_batches(1)[0])
    gen = model.loss.batches(tree_batches(6), workers=2)
    next(gen)
    first, second = gen.gi_frame.f_locals["pool"].workers
    first.conn.close()
    first.process.join(timeout=10)
    assert not first.process.is_alive() and second.process.is_alive()
    gen.close()


def test_when_only_some_workers_can_be_forked_the_others_plan(monkeypatch):
    from dynnet import workers

    real, made = workers._Worker, []

    def second_fails(*args):
        if made:
            raise OSError("Resource temporarily unavailable")
        made.append(real(*args))
        return made[-1]

    monkeypatch.setattr(workers, "_Worker", second_fails)
    model = tree_model()
    batches = tree_batches(4)
    with dynnet.profile() as profile:
        got = list(model.loss.batches(batches, workers=2))
    assert profile.planned_batches == len(batches) - 1
    assert list(profile.worker_misses) == [
        "only 1 of 2 worker processes could be started (Resource temporarily unavailable)"]
    for batch, loss in zip(batches, got):
        torch.testing.assert_close(loss, model.loss.batch(batch))


@pytest.mark.parametrize("workers", [0, 1])
def test_an_error_names_the_batch_and_the_example(workers):
    @dynnet.function
    def inverse(x):
        assert x != 0, "zero has no inverse"
        return torch.tensor(1.0) / x

    batches = [[1.0, 2.0], [3.0, 4.0], [5.0, 0.0, 6.0]]
    with pytest.raises(AssertionError, match="zero has no inverse") as info:
        for _ in inverse.batches(batches, workers=workers):
            pass
    note = "\n".join(getattr(info.value, "__notes__", []))
    assert "in batch 2 of f.batches" in note and "example 1 of the batch" in note


def test_a_model_converted_between_epochs_is_planned_in_its_new_dtype():
    """model.double() between two f.batches calls: the signatures are forgotten before
    the workers are forked, so the worker plans in float64 too."""
    from tests.test_engine import ModuleTreeLSTM

    torch.manual_seed(0)
    model = ModuleTreeLSTM()
    trees = random_trees(24, max_depth=5, seed=3)
    batches = [trees[i:i + 6] for i in range(0, 24, 6)]
    for _ in range(2):
        list(model.loss.batches(batches, workers=1))
    model.double()
    with dynnet.profile() as profile:
        out = torch.cat(list(model.loss.batches(batches, workers=1)))
    with dynnet.run_eagerly():
        expected = torch.stack([model.loss(t) for t in trees])
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected)
    assert profile.planned_batches > 0, profile.fallbacks


class _Switching(torch.nn.Module):
    """Tracing depends on the mode and a plain setting, not only on the weights."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.scale = 1.0

    @dynnet.function
    def f(self, x):
        h = self.lin(x)
        if self.training:
            h = h * 100.0
        return (h * self.scale).sum()


@pytest.mark.parametrize("reuse", [False, True])
def test_a_mode_or_setting_changed_mid_loop_is_not_planned_stale(reuse):
    """eval() and `self.scale = 2.0` between batches: the workers, forked before, traced
    the later batches in the old mode with the old setting, and their plans were used
    (wrong values, no miss reported). A plan made in another state now runs here and
    the workers are forked again."""
    torch.manual_seed(0)
    batches = [[torch.randn(3) for _ in range(4)] for _ in range(8)]
    runs = {}
    for workers in (0, 1):
        torch.manual_seed(1)
        model = _Switching()
        if reuse:
            model.f = dynnet.function(_Switching.f, reuse_traces=True).__get__(model)
        outs = []
        with dynnet.profile() as profile:
            for k, out in enumerate(model.f.batches(batches, workers=workers)):
                outs.append(out)
                if k == 2:
                    model.eval()
                if k == 5:
                    model.scale = 2.0
        runs[workers] = (torch.stack(outs), profile)
    torch.testing.assert_close(runs[1][0], runs[0][0])
    misses = runs[1][1].worker_misses
    assert any("mode or settings changed" in reason for reason in misses), misses
    assert runs[1][1].planned_batches >= 3  # the workers, forked again, plan the rest


def test_config_set_checks_its_values_when_given():
    """dynnet.config.set(workers="2") was accepted, and failed at the next f.batches."""
    for bad in ({"workers": "2"}, {"workers": -1}, {"workers": True}, {"eager": "yes"},
                {"schedule": "fastest"}, {"threads": 2}):
        with pytest.raises(ValueError):
            dynnet.config.set(**bad)
    before = dynnet.config.workers
    dynnet.config.set(workers=2)
    try:
        assert dynnet.config.workers == 2
    finally:
        dynnet.config.set(workers=before)
