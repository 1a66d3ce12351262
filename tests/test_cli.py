"""Tests of the command line (dynnet.cli) and the training loop behind it (dynnet.train)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dynnet
from dynnet import cli
from dynnet.cli import main

TINY = ["--model-args", '{"embed_dim": 8, "hidden_dim": 8}', "--no-progress"]


def _train(out, *extra, model="tree-lstm", examples=48):
    return main(["train", model, "--out", str(out), "--max-examples", str(examples),
                 "--batch-size", "16", *TINY, *extra])


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# -------------------- parsing and help --------------------

def test_help_lists_commands_models_and_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in ("train", "eval", "bench"))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--data", "--epochs", "--batch-size", "--lr", "--device", "--out", "--resume",
                 "--seed", "--max-examples", "--binary"):
        assert flag in text
    for name in ("tree-lstm", "child-sum-tree-lstm", "recursive-nn", "lm"):
        assert name in text


def test_defaults_in_help_match_the_parser():
    args = cli.build_parser().parse_args(["train", "tree-lstm"])
    assert args.epochs is None and args.device == "cpu" and args.threads == 1  # -> 5
    assert args.batch_size is None and args.lr is None and args.seed is None  # -> DEFAULTS
    assert cli.DEFAULTS["batch_size"] == 32 and cli.DEFAULTS["lr"] == 1e-3
    assert cli.DEFAULTS["epochs"] == 5
    args = cli.build_parser().parse_args(["eval", "runs/x"])
    assert args.split == "test" and args.batch_size == 256


@pytest.mark.parametrize("argv", [
    ["train", "tree-lstm", "--epochs", "0"],
    ["train", "tree-lstm", "--batch-size", "x"],
    ["train", "tree-lstm", "--model-args", "{not json"],
    ["train", "tree-lstm", "--model-args", "[1, 2]"],
    ["eval", "runs/x", "--split", "validation"],
    ["train", "tree-lstm", "--resume", "--overwrite"],
    ["frobnicate"],
])
def test_bad_arguments_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "dynnet", "eval", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--split" in result.stdout


# -------------------- train and eval --------------------

def test_train_writes_run_metrics_checkpoint_then_eval_agrees(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--epochs", "2") == 0
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "test accuracy" in printed

    records = _metrics(out)
    assert [r["epoch"] for r in records] == [1, 2, 2]
    assert all(r["examples_per_s"] > 0 and "accuracy" in r["dev"] for r in records[:2])
    assert records[2]["test"]["examples"] == 48
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "tree-lstm" and run["task"] == "tree" and run["data"] is None

    checkpoint = out / "checkpoint"
    assert sorted(os.listdir(checkpoint)) == ["config.json", "trainer.json",
                                              "trainer.safetensors", "weights.safetensors"]
    state = json.loads((checkpoint / "trainer.json").read_text())
    assert state["state"]["epoch"] == 2
    tensors = load_file(str(checkpoint / "trainer.safetensors"))  # no pickle anywhere
    assert "rng.torch" in tensors and any(k.startswith("optimizer.") for k in tensors)
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp dirs

    import dynnet.models
    model = dynnet.models.load(checkpoint)
    assert model.hidden_dim == 8

    assert main(["eval", str(out), "--max-examples", "48"]) == 0
    printed = capsys.readouterr().out
    accuracy = float(printed.split("test accuracy ")[1].split()[0])
    assert accuracy == pytest.approx(records[2]["test"]["accuracy"], abs=1e-4)
    assert main(["eval", str(checkpoint), "--split", "dev", "--max-examples", "10"]) == 0
    assert "dev accuracy" in capsys.readouterr().out


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    extra = ["--model-args", '{"embed_dim": 8, "hidden_dim": 8, "dropout": 0.3}', "--seed", "3"]
    assert _train(straight, "--epochs", "2", *extra) == 0
    assert _train(resumed, "--epochs", "1", *extra) == 0
    assert main(["train", "tree-lstm", "--out", str(resumed), "--resume", "--epochs", "2",
                 "--no-progress"]) == 0

    for name in ("weights.safetensors", "trainer.safetensors"):
        a = load_file(str(straight / "checkpoint" / name))
        b = load_file(str(resumed / "checkpoint" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}: {key} differs"
    la, lb = _metrics(straight), _metrics(resumed)
    assert [r["epoch"] for r in lb] == [1, 2, 2]  # the epoch-1 test line was dropped
    assert la[1]["loss"] == lb[1]["loss"] and la[1]["dev"] == lb[1]["dev"]


@pytest.mark.parametrize("model", ["tree-lstm", "lm"])
def test_a_worker_process_gives_the_same_training(tmp_path, model):
    """`--workers W` traces batches in W workers: same weights, dropout included."""
    extra = ["--model-args", '{"embed_dim": 8, "hidden_dim": 8, "dropout": 0.3}',
             "--epochs", "2", "--seed", "5"]
    with_worker, without = tmp_path / "with", tmp_path / "without"
    workers = "2" if model == "tree-lstm" else "1"
    with dynnet.profile() as profile:
        assert _train(with_worker, "--workers", workers, *extra, model=model) == 0
    assert profile.planned_batches > 0, profile.fallbacks
    assert _train(without, "--workers", "0", *extra, model=model) == 0
    a = load_file(str(with_worker / "checkpoint" / "weights.safetensors"))
    b = load_file(str(without / "checkpoint" / "weights.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert [r["loss"] for r in _metrics(with_worker)[:2]] == pytest.approx(
        [r["loss"] for r in _metrics(without)[:2]], rel=1e-5)


@pytest.mark.parametrize("model", ["tree-lstm", "lm"])
def test_reused_traces_give_the_same_training_bit_for_bit(tmp_path, model):
    """`--reuse-traces` replays the examples from the second epoch on: same weights,
    dropout included."""
    extra = ["--model-args", '{"embed_dim": 8, "hidden_dim": 8, "dropout": 0.3}',
             "--epochs", "3", "--seed", "5", "--workers", "0"]
    reusing, plain = tmp_path / "reusing", tmp_path / "plain"
    with dynnet.profile() as profile:
        assert _train(reusing, "--reuse-traces", *extra, model=model) == 0
    assert profile.replayed > 0
    assert _train(plain, *extra, model=model) == 0
    a = load_file(str(reusing / "checkpoint" / "weights.safetensors"))
    b = load_file(str(plain / "checkpoint" / "weights.safetensors"))
    assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("model", ["child-sum-tree-lstm", "recursive-nn"])
def test_every_tree_model_trains_binary_with_node_loss(tmp_path, model, capsys):
    args = ["--model-args", '{"embed_dim": 8, "hidden_dim": 8, "node_loss": true}']
    assert _train(tmp_path / model, "--epochs", "1", "--binary", *args, model=model,
                  examples=24) == 0
    assert "test accuracy" in capsys.readouterr().out
    run = json.loads((tmp_path / model / "run.json").read_text())
    assert run["model_kwargs"]["num_classes"] == 2


def test_resume_refuses_changed_settings_and_missing_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "tree-lstm", "--out", str(out), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert _train(out, "--epochs", "1") == 0
    capsys.readouterr()
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--lr", "0.1"]) == 2
    assert "--lr 0.1 differs" in capsys.readouterr().err
    assert main(["train", "lm", "--out", str(out), "--resume"]) == 2
    assert "holds a tree-lstm run" in capsys.readouterr().err
    # training again into the same directory needs --resume or --overwrite
    assert _train(out, "--epochs", "1") == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert _train(out, "--epochs", "1", "--overwrite", "--seed", "1") == 0


def test_resume_keeps_the_runs_epochs_unless_given_a_new_total(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--epochs", "2", "--workers", "0") == 0
    assert json.loads((out / "run.json").read_text())["epochs"] == 2
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 2]  # nothing more to train
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--epochs", "3",
                 "--no-progress", "--workers", "0"]) == 0
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3, 3]
    assert json.loads((out / "run.json").read_text())["epochs"] == 3  # the new target
    # a total below the epochs done is refused, and the run's record is left as it is
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--epochs", "2",
                 "--no-progress", "--workers", "0"]) == 2
    assert "has trained 3 epochs already" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["epochs"] == 3
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3, 3]


class _Killed(BaseException):
    """Stands for the process dying at a chosen point."""


def test_a_crash_after_the_checkpoint_keeps_the_epochs_metrics_line(tmp_path, monkeypatch):
    import dynnet.train as train_module

    real = train_module.save_checkpoint

    def save_then_die(directory, model, optimizer, state):
        real(directory, model, optimizer, state)
        if state["epoch"] == 2:
            raise _Killed

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)
    out = tmp_path / "run"
    with pytest.raises(_Killed):
        _train(out, "--epochs", "3", "--workers", "0")
    monkeypatch.undo()
    assert [r["epoch"] for r in _metrics(out)] == [1, 2]
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--no-progress",
                 "--workers", "0"]) == 0
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3, 3]


def test_resume_recovers_a_checkpoint_left_aside_by_an_interrupted_swap(tmp_path, capsys):
    """A kill between renaming checkpoint/ aside and the new one into place leaves
    .checkpoint.old-* (epoch 1) and .checkpoint.tmp-* (epoch 2): the newer is taken."""
    out = tmp_path / "run"
    assert _train(out, "--epochs", "1", "--workers", "0") == 0
    shutil.copytree(out / "checkpoint", out / ".checkpoint.old-0123456789ab")
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--epochs", "2",
                 "--no-progress", "--workers", "0"]) == 0
    os.rename(out / "checkpoint", out / ".checkpoint.tmp-ba9876543210")
    capsys.readouterr()
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--epochs", "3",
                 "--no-progress", "--workers", "0"]) == 0
    assert "epoch-2 checkpoint found at .checkpoint.tmp-ba9876543210" in capsys.readouterr().out
    assert [r["epoch"] for r in _metrics(out)] == [1, 2, 3, 3]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # leftovers gone


def test_recover_checkpoint_skips_an_incomplete_new_one(tmp_path):
    from dynnet.train import CheckpointError, recover_checkpoint

    out = tmp_path / "run"
    assert _train(out, "--epochs", "1", "--workers", "0") == 0
    shutil.copytree(out / "checkpoint", out / ".checkpoint.tmp-0123456789ab")
    (out / ".checkpoint.tmp-0123456789ab" / "trainer.json").unlink()  # killed while writing
    os.rename(out / "checkpoint", out / ".checkpoint.old-ba9876543210")
    assert recover_checkpoint(out / "checkpoint") == (out / ".checkpoint.old-ba9876543210", 1)
    assert (out / "checkpoint" / "trainer.json").is_file()
    assert recover_checkpoint(out / "checkpoint") is None  # there is one
    shutil.rmtree(out / "checkpoint")
    with pytest.raises(CheckpointError, match="hold no complete checkpoint"):
        recover_checkpoint(out / "checkpoint")


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _edit_trainer_json(change):
    def edit(path):
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    return edit


@pytest.mark.parametrize("name, damage, message", [
    ("trainer.safetensors", _truncate, "trainer.safetensors: cannot read the trainer tensors"),
    ("trainer.json", _edit_trainer_json(lambda d: d.pop("optimizer")),
     "trainer.json: 'optimizer' must be a JSON object, found missing"),
    ("trainer.json", _edit_trainer_json(lambda d: d["state"].update(epoch="x")),
     "trainer.json: 'state.epoch' must be the number of epochs done"),
    ("trainer.json", _edit_trainer_json(lambda d: d["state"].update(epoch=-1)),
     "'state.epoch'"),
    ("trainer.json", _edit_trainer_json(lambda d: d.update(python_random=[3, [1], None])),
     "trainer.json: 'python_random' is not a state"),
    ("trainer.json", _edit_trainer_json(lambda d: d["optimizer"].update(param_groups=[])),
     "the optimizer state does not fit the model"),
    ("trainer.json", lambda p: p.write_bytes(b'{"format": 1, "\xff": 0}'),
     "trainer.json:1:16: not UTF-8 text (byte 0xff"),
    ("weights.safetensors", _truncate, "weights.safetensors: cannot read weights"),
])
def test_resume_from_a_damaged_checkpoint_names_the_file_and_changes_nothing(
        tmp_path, capsys, name, damage, message):
    out = tmp_path / "run"
    assert _train(out, "--epochs", "1", "--workers", "0") == 0
    damage(out / "checkpoint" / name)
    before = {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()}
    metrics = (out / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--epochs", "2",
                 "--no-progress", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynnet train: error: ") and err.count("\n") == 1, err
    assert message in err and str(out / "checkpoint" / name) in err
    assert {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()} == before
    assert (out / "metrics.jsonl").read_bytes() == metrics


@pytest.mark.parametrize("argv, message", [
    (["--lr", "-0.1"], "--lr: must be a positive number, got -0.1"),
    (["--lr", "nan"], "--lr: must be a positive number, got nan"),
    (["--lr", "inf"], "--lr: must be a positive number"),
    (["--seed", "99999999999999999999"], "--seed: must be below 2**32"),
    (["--seed", "-1"], "--seed: must be at least 0"),
])
def test_bad_numbers_are_usage_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "tree-lstm", "--out", str(tmp_path / "o"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_failed_start_writes_nothing_and_a_run_without_checkpoint_is_no_trap(
        tmp_path, capsys, monkeypatch):
    import dynnet.train as train_module

    def refuse(self, model):
        raise ValueError("Invalid learning rate")

    out = tmp_path / "run"
    monkeypatch.setattr(train_module.Trainer, "_make_optimizer", refuse)
    assert _train(out, "--epochs", "1") == 2
    assert "cannot train tree-lstm with these settings: Invalid learning rate" in \
        capsys.readouterr().err
    assert not out.exists()
    monkeypatch.undo()
    # what a run that died before its first checkpoint leaves: run.json and vocab.json
    assert _train(out, "--epochs", "1", "--workers", "0") == 0
    shutil.rmtree(out / "checkpoint")
    (out / "metrics.jsonl").unlink()
    capsys.readouterr()
    assert main(["train", "tree-lstm", "--out", str(out), "--resume"]) == 2
    assert "has no checkpoint to resume from (its run stopped before its first " \
           "checkpoint); start it over with --overwrite" in capsys.readouterr().err
    assert _train(out, "--epochs", "1", "--workers", "0") == 0  # no --overwrite needed


def test_overwrite_removes_what_an_interrupted_save_left(tmp_path):
    out = tmp_path / "run"
    assert _train(out, "--epochs", "1", "--workers", "0") == 0
    shutil.copytree(out / "checkpoint", out / ".checkpoint.old-0123456789ab")
    assert _train(out, "--epochs", "1", "--workers", "0", "--overwrite") == 0
    assert not (out / ".checkpoint.old-0123456789ab").exists()


def test_out_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert _train(afile) == 2
    assert capsys.readouterr().err == (f"dynnet train: error: --out {afile}: it exists and "
                                       "is not a directory\n")
    assert _train(afile / "run") == 2
    assert capsys.readouterr().err == (f"dynnet train: error: --out {afile / 'run'}: is not "
                                       f"a directory ({afile} is a file)\n")


@pytest.mark.parametrize("model, key", [("tree-lstm", "vocab_size"),
                                        ("tree-lstm", "num_classes"), ("lm", "eos_id")])
def test_model_args_cannot_override_what_the_data_sets(tmp_path, capsys, model, key):
    assert main(["train", model, "--out", str(tmp_path / "o"), "--model-args",
                 json.dumps({key: 3})]) == 2
    assert f"--model-args: {key} is set from the data" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("task"), "run.json: no 'task' field"),
    (lambda r: r.update(task="sequence"), "run.json: task 'sequence' does not fit the "
                                          "checkpoint's NaryTreeLSTM"),
    (lambda r: r.update(data=5), "run.json: 'data' must be a path or null, found 5"),
    (lambda r: r.update(binary="yes"), "run.json: 'binary' must be true or false"),
    (lambda r: r.update(epochs=0), "run.json: 'epochs' must be a positive integer"),
])
def test_eval_checks_the_fields_of_run_json(tmp_path, capsys, change, message):
    out = tmp_path / "run"
    assert _train(out, "--epochs", "1", "--workers", "0") == 0
    run = json.loads((out / "run.json").read_text())
    change(run)
    (out / "run.json").write_text(json.dumps(run))
    capsys.readouterr()
    assert main(["eval", str(out), "--max-examples", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynnet eval: error: ") and message in err and err.count("\n") == 1


def test_a_vocabulary_of_another_run_is_refused_on_eval_and_resume(tmp_path, capsys):
    trees = tmp_path / "trees.txt"
    trees.write_text("(3 (2 a) (3 b))\n(1 (2 c) (1 d))\n")
    out, other = tmp_path / "run", tmp_path / "other"
    assert _train(out, "--epochs", "1", "--workers", "0") == 0
    assert main(["train", "tree-lstm", "--data", str(trees), "--out", str(other), "--epochs",
                 "1", *TINY, "--workers", "0"]) == 0
    shutil.copy(other / "vocab.json", out / "vocab.json")
    capsys.readouterr()
    assert main(["eval", str(out), "--max-examples", "8"]) == 2
    assert f"{out / 'vocab.json'} has 5 tokens but the model in {out / 'checkpoint'} was " \
           "built for" in capsys.readouterr().err
    before = (out / "metrics.jsonl").read_bytes()
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--epochs", "2",
                 "--no-progress"]) == 2
    assert "the vocabulary is not this model's" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_bytes() == before

def test_ctrl_c_says_in_one_line_what_is_kept_and_how_to_resume(tmp_path, capsys,
                                                                monkeypatch):
    import dynnet.train as train_module

    real = train_module.Trainer.train_epoch

    def interrupted_in_epoch_2(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(train_module.Trainer, "train_epoch", interrupted_in_epoch_2)
    out = tmp_path / "run"
    assert _train(out, "--epochs", "3", "--workers", "0") == 130
    assert capsys.readouterr().err == (
        f"dynnet train: interrupted; the checkpoint of the last finished epoch (1) is kept "
        f"in {out / 'checkpoint'}; continue with: dynnet train tree-lstm --resume --out "
        f"{out}\n")


def test_a_bad_dynnet_workers_is_one_error_line_of_the_command_that_uses_it(tmp_path):
    env = {**os.environ, "DYNNET_WORKERS": "two"}
    command = [sys.executable, "-m", "dynnet", "train", "tree-lstm", "--out",
               str(tmp_path / "o"), "--max-examples", "4", "--epochs", "1", *TINY]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == ("dynnet train: error: DYNNET_WORKERS='two': expected a count "
                             "(0, 1, 2, ...)\n")
    assert not (tmp_path / "o").exists()
    result = subprocess.run(command + ["--workers", "0"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr

def test_clear_errors_for_bad_models_paths_and_devices(tmp_path, capsys):
    assert main(["train", "no-such-model", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "tree-lstm" in err
    assert main(["train", "tree-lstm", "--data", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "b")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "tree-lstm", "--data", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "c")]) == 2
    assert "no data files" in capsys.readouterr().err
    assert main(["train", "lm", "--binary", "--out", str(tmp_path / "d")]) == 2
    assert "tree models only" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "not a dynnet training run" in capsys.readouterr().err
    assert main(["train", "tree-lstm", "--device", "tpu", "--out", str(tmp_path / "e")]) == 2
    assert "--device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", "tree-lstm", "--device", "cuda", "--out",
                     str(tmp_path / "f")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["train", "tree-lstm", "--model-args", '{"hidden_dimm": 3}', "--out",
                 str(tmp_path / "g")]) == 2
    assert "cannot build tree-lstm" in capsys.readouterr().err
    assert not [p for p in "aeg" if (tmp_path / p).exists()]  # nothing written


def test_malformed_tree_file_names_line_and_column(tmp_path, capsys):
    bad = tmp_path / "trees.txt"
    bad.write_text("(3 (2 a) (3 b))\n(3 (2 a) (3 b)\n")
    assert main(["train", "tree-lstm", "--data", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert f"{bad}:2:" in capsys.readouterr().err


def test_bad_label_names_file_line_and_column_despite_blank_lines_and_sampling(tmp_path,
                                                                            capsys):
    trees = tmp_path / "trees.txt"
    lines = ["(3 (2 a) (3 b))"] * 6 + ["", "(3 (2 a) (3 (9 b) (2 c)))", "(2 (2 a) (2 b))"]
    trees.write_text("\n\n" + "\n".join(lines) + "\n")
    for extra in ([], ["--max-examples", "7"]):
        assert main(["train", "tree-lstm", "--data", str(trees), "--out",
                     str(tmp_path / "o"), *extra]) == 2
        assert capsys.readouterr().err == (f"dynnet train: error: {trees}:10:14: label 9 is "
                                           "not a sentiment class 0-4\n")
    assert not (tmp_path / "o").exists()


def test_more_children_than_the_models_arity_names_file_line_and_column(tmp_path, capsys):
    trees = tmp_path / "trees.txt"
    trees.write_text("(3 (2 a) (3 b))\n\n(3 (2 a) (3 (2 a) (3 b) (2 c)))\n")
    out = tmp_path / "o"
    assert main(["train", "tree-lstm", "--data", str(trees), "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dynnet train: error: {trees}:3:11: a node with 3 children, but "
                          "this tree-lstm takes at most 2 (its arity); pass --model-args")
    assert not out.exists()
    assert main(["train", "tree-lstm", "--data", str(trees), "--out", str(out), "--epochs",
                 "1", "--model-args", '{"embed_dim": 8, "hidden_dim": 8, "arity": 3}',
                 "--no-progress", "--workers", "0"]) == 0
    capsys.readouterr()
    binary = tmp_path / "binary.txt"
    binary.write_text("(3 (2 a) (3 b))\n(3 (2 a) (3 (2 a) (3 b) (2 c) (2 d)))\n")
    assert main(["eval", str(out), "--data", str(binary)]) == 2
    assert capsys.readouterr().err == (f"dynnet eval: error: {binary}:2:11: a node with 4 "
                                       "children, but this tree-lstm takes at most 3 (its "
                                       "arity)\n")

def test_files_that_are_not_utf8_name_file_line_and_column(tmp_path, capsys):
    trees = tmp_path / "trees.txt"
    trees.write_bytes(b"(3 (2 a) (3 b))\n(3 (2 caf\xe9) (3 b))\n")
    assert main(["train", "tree-lstm", "--data", str(trees), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (f"dynnet train: error: {trees}:2:10: expected UTF-8 "
                                       "text, found byte 0xe9\n")
    text = tmp_path / "sentences.txt"
    text.write_bytes(b"a b\nc \xff\n")
    assert main(["train", "lm", "--data", str(text), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (f"dynnet train: error: {text}:2:3: not UTF-8 text "
                                       "(byte 0xff at byte offset 6)\n")
    assert not (tmp_path / "o").exists()

    out = tmp_path / "run"
    assert _train(out, "--epochs", "1", "--workers", "0") == 0
    metrics = out / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(good + b'{"epoch": 2, "x": "\xff"}\n')
    capsys.readouterr()
    assert main(["train", "tree-lstm", "--out", str(out), "--resume", "--epochs", "2",
                 "--no-progress"]) == 2
    assert f"error: {metrics}:3:20: not UTF-8 text" in capsys.readouterr().err
    run = out / "run.json"
    run.write_bytes(run.read_bytes().replace(b"tree-lstm", b"tr\xe9e-lstm"))
    assert main(["eval", str(out)]) == 2
    assert f"dynnet eval: error: {run}:3:14: not UTF-8 text" in capsys.readouterr().err

# -------------------- data sources --------------------

SST_TREES = [
    "(3 (2 it) (3 (3 works) (2 well)))",
    "(1 (2 it) (1 (2 not) (3 good)))",
    "(2 (2 a) (2 film))",
    "(4 (4 great) (2 fun))",
    "(0 (0 awful) (2 mess))",
]


def _sst_dir(path):
    path.mkdir()
    for split in ("train", "dev", "test"):
        (path / f"{split}.txt").write_text("\n".join(SST_TREES) + "\n")
    return path


def test_sst_directory_and_binary_view(tmp_path):
    data = _sst_dir(tmp_path / "sst")
    splits, source = cli.load_splits("tree", str(data), ("train", "test"))
    assert set(splits) == {"train", "test"} and "train.txt" in source
    assert [t.label for t in splits["train"]] == [3, 1, 2, 4, 0]
    splits, _ = cli.load_splits("tree", str(data), ("train",), binary=True)
    trees = splits["train"]
    assert [t.label for t in trees] == [1, 0, 1, 0]  # the neutral root is dropped
    assert trees[0].children[0].label == cli.IGNORE_LABEL  # neutral node: ignored by loss
    assert trees[1].children[1].children[1].label == 1


def test_train_binary_sst_then_eval_on_a_file(tmp_path, capsys):
    data = _sst_dir(tmp_path / "sst")
    out = tmp_path / "run"
    assert main(["train", "tree-lstm", "--data", str(data), "--binary", "--epochs", "1",
                 "--out", str(out), *TINY]) == 0
    assert json.loads((out / "run.json").read_text())["model_kwargs"]["num_classes"] == 2
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(data / "dev.txt")]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "(4 trees)" in printed


def test_lm_on_a_text_file_then_eval(tmp_path, capsys):
    text = tmp_path / "sentences.txt"
    text.write_text("the cat sat\nthe dog ran far\na cat ran\n\nthe end\n")
    out = tmp_path / "lm"
    assert main(["train", "lm", "--data", str(text), "--epochs", "2", "--out", str(out),
                 *TINY]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["task"] == "sequence"
    assert run["model_kwargs"]["bos_id"] != run["model_kwargs"]["eos_id"]
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(text)]) == 0
    printed = capsys.readouterr().out
    assert "test perplexity" in printed and "(4 sentences" in printed


def test_lm_default_data_is_the_synthetic_phrases(tmp_path, capsys):
    assert _train(tmp_path / "lm", "--epochs", "1", model="lm", examples=32) == 0
    assert "test perplexity" in capsys.readouterr().out


def test_ptb_directory_trains_on_valid_and_tests_on_test(tmp_path):
    ptb = tmp_path / "ptb"
    ptb.mkdir()
    (ptb / "valid.txt").write_text("a b c\n")
    (ptb / "test.txt").write_text("c b a\nb\n")
    splits, _ = cli.load_splits("sequence", str(ptb), ("train", "dev", "test"))
    assert splits == {"train": [["a", "b", "c"]], "test": [["c", "b", "a"], ["b"]]}


# -------------------- bench --------------------

def test_bench_passes_arguments_to_the_benchmark_runner(capsys):
    if not (Path(cli.__file__).resolve().parents[1] / "benchmarks" / "run.py").is_file():
        pytest.skip("no benchmarks folder next to the package")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    assert "--quick" in capsys.readouterr().out


def test_bench_without_benchmarks_says_so(tmp_path, capsys):
    assert cli.bench(["--quick"], root=tmp_path) == 2
    assert "benchmarks are not installed" in capsys.readouterr().err
