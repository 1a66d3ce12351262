"""Every tutorial runs, at its small size (``--small``), and shows what it promises."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"

EXPECTED = {
    "01_quickstart.py": ["same as one at a time: True", "gradients match eager PyTorch: True",
                         "def encode(self, tree):", "words: 1 first feature:"],
    "02_tree_lstm_sst.py": ["training trees", "epoch 2:", "saved and reloaded: dev accuracy"],
    "03_sequence_prediction.py": ["perplexity", "recited", "sampled at temperature"],
    "04_custom_dynamic_model.py": ["same as eager: True True True", "epoch 3:",
                                   "AssertionError: vector too long (example 1",
                                   "ran op by op: 04_custom_dynamic_model.py:",
                                   "weighted_data: 32 nodes in 2 groups"],
    "05_gpu_and_multiprocess.py": ["device cpu", "2 processes",
                                   "parameters equal one process on the whole batches: True"],
    "06_worker_process.py": ["7 of 8 batches from the worker's plans",
                             "same parameters after the epoch: True",
                             "clipped_norm: 0 planned; worker: an example paused for a value"],
    "07_reused_traces.py": ["epoch 3: 256 of 256 trees replayed",
                            "same parameters as running the code every time: True",
                            "evaluation pass 4: 4 of 4 batches from kept plans",
                            "kept plans give the same losses: True",
                            "after model.eval(): 0 replayed",
                            "after clear_traces, the changed label counts: True"],
}


def test_every_tutorial_is_tested():
    assert sorted(p.name for p in TUTORIALS.glob("[0-9]*.py")) == sorted(EXPECTED)


@pytest.fixture(scope="module")
def runs():
    """Starts every tutorial at once (they are single-threaded; the machine may have
    more cores), each on the CPU; the tests wait for their own."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    started = {name: subprocess.Popen([sys.executable, str(TUTORIALS / name), "--small"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env, cwd=TUTORIALS.parent)
               for name in sorted(EXPECTED)}
    yield started
    for process in started.values():
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tutorial_runs(runs, name):
    try:
        stdout, stderr = runs[name].communicate(timeout=240)
    except subprocess.TimeoutExpired:
        runs[name].kill()
        pytest.fail(f"{name} --small did not finish in time")
    assert runs[name].returncode == 0, stderr[-3000:]
    for text in EXPECTED[name]:
        assert text in stdout, f"{text!r} not in the output:\n{stdout}"


def test_sst_tutorial_falls_back_to_the_synthetic_treebank():
    spec = importlib.util.spec_from_file_location("tutorial_02", TUTORIALS / "02_tree_lstm_sst.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, dev, source = module.load(small=True, use_synthetic=True)
    assert source == "the synthetic treebank" and len(train) > 200 and len(dev) > 100
    assert {t.label for t in train} == {0, 1}
