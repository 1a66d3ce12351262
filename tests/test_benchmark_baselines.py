"""The baselines of benchmarks/ compute the same loss and gradients.

The naive per-example forward is the oracle. For the tree-LSTM, the level-batched
autograd version and the hand-written backward must match it (atol 1e-4) on random
trees and on SST trees; for the sequence LM, nn.LSTM on a packed batch; for the while
loop, the masked batch loop.
"""

import copy
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # benchmarks/ is a folder of scripts, not installed
    sys.path.insert(0, str(REPO))

from benchmarks import (  # noqa: E402
    common,
    run,
    sequence_classifier,
    sequence_lm,
    tree_lstm,
    while_loop,
)
from benchmarks.common import Benchmark, index_trees, load_sst, random_trees, train_step  # noqa: E402
from benchmarks.tree_lstm import BASELINES, TreeLSTMParams, build_plan  # noqa: E402

DATA = REPO.parent / "shared" / "data"
ATOL = 1e-4


def _loss_grads_logits(variant, params, trees):
    params = copy.deepcopy(params)
    loss = variant.loss_and_grad(params, trees)
    grads = {name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
             for name, p in params.named_parameters()}
    return loss, grads, variant.infer(params, trees)


def _assert_variants_agree(params, trees):
    expected_loss, expected_grads, expected_logits = _loss_grads_logits(
        BASELINES["naive"], params, trees)
    assert expected_loss.item() > 0
    assert any(g.abs().max() > 1e-3 for g in expected_grads.values())
    for name in ("batched", "manual"):
        loss, grads, logits = _loss_grads_logits(BASELINES[name], params, trees)
        torch.testing.assert_close(loss, expected_loss, atol=ATOL, rtol=0, msg=name)
        torch.testing.assert_close(logits, expected_logits, atol=ATOL, rtol=0, msg=name)
        assert grads.keys() == expected_grads.keys()
        for key, grad in grads.items():
            torch.testing.assert_close(grad, expected_grads[key], atol=ATOL, rtol=0,
                                       msg=f"{name}: grad of {key}")


def test_random_trees_same_loss_and_gradients():
    torch.manual_seed(0)
    trees = random_trees(20, vocab_size=30, max_leaves=15, seed=1)
    _assert_variants_agree(TreeLSTMParams(30), trees)


def test_single_leaf_tree():
    torch.manual_seed(1)
    _assert_variants_agree(TreeLSTMParams(30), random_trees(3, 30, max_leaves=1, seed=2))


@pytest.mark.skipif(not (DATA / "sst" / "train.txt").is_file(), reason="no SST data")
def test_sst_trees_same_loss_and_gradients():
    torch.manual_seed(0)
    trees, vocab = load_sst(6, data_dir=DATA)
    _assert_variants_agree(TreeLSTMParams(len(vocab)), trees)


def test_plan_is_level_major():
    trees = random_trees(5, 10, seed=3)
    plan = build_plan(trees, "cpu")
    assert plan.n_nodes == sum(t.size() for t in trees)
    assert plan.bounds[0] == sum(len(t.leaves()) for t in trees)
    for k, idx in enumerate(plan.children):
        start, stop = plan.bounds[k], plan.bounds[k + 1]
        assert len(idx) == 2 * (stop - start)
        assert int(idx.max()) < start  # children are computed on lower levels
    assert sorted(plan.roots.tolist()) == sorted(set(plan.roots.tolist()))


def test_training_steps_stay_together():
    torch.manual_seed(2)
    trees = random_trees(16, vocab_size=20, seed=4)
    start = TreeLSTMParams(20)
    finals = {}
    for name, variant in BASELINES.items():
        params = copy.deepcopy(start)
        # SGD, not Adam: Adam turns rounding-level gradients into full-size steps.
        optimizer = torch.optim.SGD(params.parameters(), lr=0.5)
        for _ in range(3):
            train_step(variant, params, optimizer, trees)
        finals[name] = params.state_dict()
    for name in ("batched", "manual"):
        for key, value in finals[name].items():
            torch.testing.assert_close(value, finals["naive"][key], atol=ATOL, rtol=0)


def test_index_trees_marks_unknown_words():
    trees = random_trees(2, 5, seed=5)
    index_trees(trees, {"<unk>": 0, "w1": 7})
    ids = {leaf.word_id for t in trees for leaf in t.nodes() if leaf.is_leaf}
    assert ids <= {0, 7}


@pytest.mark.skipif(not (DATA / "sst" / "dev.txt").is_file(), reason="no SST data")
def test_fallback_reader_matches_dynnet_data():
    from benchmarks import _fallback_data
    from dynnet.data import read_trees

    path = DATA / "sst" / "dev.txt"
    expected, got = read_trees(path)[:50], _fallback_data.read_trees(path)[:50]
    for a, b in zip(expected, got, strict=True):
        pairs = list(zip(a.nodes(), b.nodes(), strict=True))
        assert [(x.label, x.word, len(x.children)) for x, _ in pairs] == [
            (y.label, y.word, len(y.children)) for _, y in pairs]
        assert a.leaves() == b.leaves()


def test_sequence_lm_packed_matches_per_sentence_loop():
    torch.manual_seed(3)
    start = sequence_lm.SequenceLMParams(40, dim=16)
    generator = torch.Generator().manual_seed(0)
    sentences = [torch.randint(40, (n,), generator=generator).tolist()
                 for n in (2, 9, 5, 13, 5, 3)]
    results = {}
    for name, variant in sequence_lm.BASELINES.items():
        module = variant.build(start)
        loss = variant.loss_and_grad(module, sentences)
        results[name] = loss, sequence_lm.cell_grads(module), variant.infer(module, sentences)
    (loss, grads, per_sentence), (ref_loss, ref_grads, ref_per_sentence) = (
        results["batched"], results["naive"])
    torch.testing.assert_close(loss, ref_loss, atol=ATOL, rtol=0)
    torch.testing.assert_close(per_sentence, ref_per_sentence, atol=ATOL, rtol=0)
    assert per_sentence.shape == (len(sentences),)
    assert grads.keys() == ref_grads.keys()
    for key, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[key], atol=ATOL, rtol=0, msg=key)


def test_sentence_classifier_variants_compute_the_same_function():
    """Packed nn.LSTM, the per-sentence loop and dynnet's per-sentence code agree on
    the loss, the gradients and the logits, over sentences of many lengths."""
    torch.manual_seed(5)
    start = sequence_classifier.SentenceClassifierParams(30, dim=12)
    generator = torch.Generator().manual_seed(1)
    sentences = [sequence_classifier.Sentence(torch.randint(30, (n,), generator=generator)
                                              .tolist(), n % 5) for n in (1, 7, 3, 12, 3, 5)]
    variants = {**sequence_classifier.BASELINES,
                "dynnet": common.dynnet_variant("SENTENCE_CLASSIFIER")}
    results = {}
    for name, variant in variants.items():
        module = variant.build(start)
        loss = variant.loss_and_grad(module, sentences)
        results[name] = (loss, sequence_classifier.cell_grads(module),
                         variant.infer(module, sentences))
    ref_loss, ref_grads, ref_logits = results["naive"]
    assert ref_logits.shape == (len(sentences), sequence_classifier.CLASSES)
    for name in ("batched", "dynnet"):
        loss, grads, logits = results[name]
        torch.testing.assert_close(loss, ref_loss, atol=ATOL, rtol=0, msg=name)
        torch.testing.assert_close(logits, ref_logits, atol=ATOL, rtol=0, msg=name)
        assert grads.keys() == ref_grads.keys(), name
        for key, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[key], atol=ATOL, rtol=0,
                                       msg=f"{name} {key}")


def test_while_loop_trip_counts_and_masked_loop():
    start = while_loop.Contraction(dim=8)
    xs, trips = while_loop.make_vectors(40, dim=8)
    assert min(trips) >= 1 and max(trips) <= while_loop.MAX_TRIPS
    for x, k in zip(xs, trips):
        steps = 0
        while x.norm() > 1:
            x, steps = start.cell(x), steps + 1
        assert steps == k
    results = {}
    for name, variant in while_loop.BASELINES.items():
        module = variant.build(start)
        loss = variant.loss_and_grad(module, xs)
        results[name] = loss, module.cell.weight.grad, variant.infer(module, xs)
    for got, expected in zip(results["batched"], results["naive"]):
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)


def test_runner_measures_baselines_and_reports_unavailable_variants():
    torch.manual_seed(4)
    trees = random_trees(12, vocab_size=20, seed=6)
    variants = {**BASELINES, "dynnet": "ImportError: no engine"}
    bench = Benchmark("tree-lstm", "trees", trees, [6], TreeLSTMParams(20), variants,
                      tree_lstm.make_optimizer, tree_lstm.LABELS)
    rows = run.measure(bench, 6, repeats=1, device="cpu")
    assert [r.variant for r in rows] == ["naive", "batched", "manual", "dynnet"]
    timed, missing = rows[:3], rows[3]
    assert all(r.train > 0 and r.infer > 0 and r.note == "" for r in timed)
    assert all(r.peak_train > 0 and r.peak_infer > 0 for r in timed)  # CPU: profiled
    assert len({round(r.loss0, 4) for r in timed}) == 1
    assert missing.train is None and missing.note == "unavailable: ImportError: no engine"
    cells = run.table_cells(rows)
    assert cells[0] == list(run.HEADER) and len(cells) == 5
    assert all(len(row) == len(run.HEADER) for row in cells)
    markdown = run.format_markdown(cells)
    assert markdown.count("\n") == 5 and "unavailable: ImportError: no engine" in markdown


def test_cpu_peak_bytes_counts_what_is_held_at_once():
    mib = 2**20

    def work():
        a = torch.ones(mib // 4)  # 1 MiB of float32
        b = a * 2  # 2 MiB held
        del a
        c = b + 1  # 2 MiB again
        del b, c
        d = torch.ones(3 * mib // 4)  # 3 MiB alone: the peak
        return d.sum()

    peak = common.cpu_peak_bytes(work)
    assert 3 * mib <= peak < 3 * mib + 4096


def test_tree_variants_compute_the_same_function_on_the_fast_path():
    """benchmarks/tree_variants.py: every way of writing the tree-LSTM gives the same
    loss, and each records at most one node per tree node (nothing falls back to op by
    op; leaves for the same word share one node), the same number for every variant."""
    from benchmarks import tree_variants

    trees = [t for t in random_trees(24, vocab_size=30, seed=9) if not t.is_leaf]
    rows = tree_variants.measure(trees, batch_size=8, repeats=1)
    assert [r[0] for r in rows] == list(tree_variants.VARIANTS)
    losses = [r[4] for r in rows]
    assert max(losses) - min(losses) < 1e-5
    per_tree_node = [r[1] for r in rows]
    assert max(per_tree_node) <= 1.0 and max(per_tree_node) == min(per_tree_node), rows


def test_pipelined_measures_worker_variants_with_their_plans():
    """benchmarks/pipelined.py: one f.batches variant per worker count, each planning
    every batch after the first of its epochs."""
    from benchmarks import pipelined

    torch.manual_seed(4)
    trees = random_trees(24, vocab_size=20, seed=6)
    variants = {**BASELINES, "dynnet": common.dynnet_variant("TREE_LSTM")}
    bench = Benchmark("tree-lstm", "trees", trees, [6], TreeLSTMParams(20), variants,
                      tree_lstm.make_optimizer, tree_lstm.LABELS)
    functions = (lambda m: m.root_loss, lambda m: m.root_logits)
    rates, planned, per_node, waits = pipelined.measure(bench, functions, 6, 1, "cpu", (1, 2))
    assert list(rates) == ["batched", "manual", "dynnet", "workers1", "workers2"]
    assert all(train > 0 and infer > 0 for train, infer in rates.values())
    for name in ("workers1", "workers2"):
        done, total, misses = planned[name]
        assert (done, total, misses) == (6, 8, {}), planned  # 4 batches, 2 epochs
        fork, wait = waits[name]  # the profile's time starting workers and waiting
        assert fork > 0 and wait >= 0
    assert pipelined._label(bench, "workers2") == "dynnet f.batches (2 workers)"
    assert pipelined._label(bench, "batched") == "hand-batched autograd"
    lm = Benchmark("sequence-lm", "sentences", [], [6], None, {}, None, sequence_lm.LABELS)
    assert pipelined._label(lm, "batched") == "nn.LSTM packed"  # the LM's own baseline


def test_reused_traces_variants_replay_examples_and_only_one_runs_from_batch_plans():
    """The runner's 'reused traces' variant sees the same batches every pass, so they
    run from kept plans; the 'new batches' one permutes each batch at every call, so
    its examples replay but no batch plan is ever kept. Both compute the model."""
    import dynnet
    from benchmarks import dynnet_models

    torch.manual_seed(4)
    trees = random_trees(16, vocab_size=20, seed=6)
    start = TreeLSTMParams(20)
    batches = [trees[:8], trees[8:]]
    counts = {}
    for name in ("TREE_LSTM_REPLAYED", "TREE_LSTM_RESHUFFLED"):
        variant = getattr(dynnet_models, name)
        module = variant.build(start)
        optimizer = tree_lstm.make_optimizer(module)
        with dynnet.profile() as p:
            losses = [float(train_step(variant, module, optimizer, b))
                      for _ in range(4) for b in batches]
        counts[name] = (p.replayed > 0, p.replayed_batches > 0)
        assert abs(losses[0] - float(BASELINES["batched"].loss_and_grad(
            copy.deepcopy(start), batches[0]))) < 1e-4
    assert counts == {"TREE_LSTM_REPLAYED": (True, True),
                      "TREE_LSTM_RESHUFFLED": (True, False)}
