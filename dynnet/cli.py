"""The command line: ``dynnet train``, ``dynnet eval``, ``dynnet bench``.

    dynnet train tree-lstm                       # the built-in synthetic treebank
    dynnet train tree-lstm --data ../shared/data/sst --binary --epochs 10
    dynnet eval runs/tree-lstm --split test
    torchrun --nproc_per_node=2 -m dynnet train tree-lstm --out runs/ddp
    dynnet bench --quick

``python -m dynnet ...`` is the same. See ``dynnet <command> --help``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch

from dynnet import config, synthetic
from dynnet.data import (
    binary_label,
    node_position,
    read_sentences_with_lines,
    read_trees_with_lines,
)
from dynnet.errors import DynnetError
from dynnet.vocab import Vocab, atomic_write_text, read_utf8

__all__ = ["main"]

RUN_FILE = "run.json"
VOCAB_FILE = "vocab.json"
IGNORE_LABEL = -100  # F.cross_entropy's ignore_index (dynnet.models.classifier)
SYNTHETIC_SIZES = {"train": 5000, "dev": 500, "test": 1000}
SPLITS = ("train", "dev", "test")
BOS, EOS = "<s>", "</s>"
DEFAULTS = {"epochs": 5, "batch_size": 32, "lr": 1e-3, "seed": 0, "model_args": {},
            "binary": False, "max_examples": None}


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# -------------------- argument parsing --------------------

def _model_names():
    from dynnet.models import MODEL_REGISTRY

    return sorted(MODEL_REGISTRY)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="dynnet", description="Train, evaluate and benchmark dynnet models.",
        epilog="Also runs as `python -m dynnet` and under `torchrun ... -m dynnet train`.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train", help="train a model", description=(
            "Train a registered model with Adam on shuffled, length-bucketed batches. "
            "Writes OUT/run.json, OUT/vocab.json, OUT/metrics.jsonl (one JSON line per "
            "epoch, then one with the test result) and OUT/checkpoint/ (model + optimizer "
            "+ RNG states, rewritten atomically after every epoch), then evaluates the "
            "test split. Under torchrun "
            "every process trains on its shard of each global batch "
            "(DistributedDataParallel; gloo on the CPU, NCCL on CUDA)."),
        epilog="Without --data, tree models train on a generated treebank where negation "
               "words flip the sentiment of their subtree (a bag of words cannot solve "
               "it), and lm on the phrases of that treebank.")
    train.add_argument("model", metavar="MODEL",
                       help=f"registered model name: {', '.join(_model_names())}")
    train.add_argument("--data", metavar="PATH", help=(
        "tree models: a directory with SST-style train.txt/dev.txt/test.txt, or one file "
        "of bracketed trees (training only); lm: a directory with train.txt or (as PTB) "
        "valid.txt to train on and test.txt to evaluate, or one text file of sentences. "
        "Default: the built-in synthetic data"))
    train.add_argument("--binary", action="store_true", default=None, help=(
        "tree models: the binary sentiment task; trees with a neutral root are dropped "
        "and node labels 0,1 -> 0 and 3,4 -> 1 (neutral nodes are ignored by the loss)"))
    train.add_argument("--epochs", type=_positive_int, metavar="N",
                       help="total number of epochs (default: 5); with --resume, training "
                            "continues up to this new total (default: the run's)")
    train.add_argument("--batch-size", type=_positive_int, metavar="B",
                       help="examples per optimizer step, over all processes (default: 32)")
    train.add_argument("--lr", type=_positive_float,
                       help="Adam learning rate (default: 0.001)")
    train.add_argument("--seed", type=_seed,
                       help="seed of the initial weights and the batch order, 0 to 2**32-1 "
                            "(default: 0)")
    train.add_argument("--device", default="cpu",
                       help="cpu or cuda (cuda:LOCAL_RANK under torchrun) (default: cpu)")
    train.add_argument("--threads", type=_positive_int, default=1, metavar="T",
                       help="torch CPU threads per process; dynamic batches are many small "
                            "ops, where extra threads mostly contend (default: 1)")
    train.add_argument("--workers", type=_count, default=None, metavar="W",
                       help="W worker processes trace the next batches while this one "
                            "trains (Linux; the same results, bit for bit at --threads 1: "
                            "beside the workers torch runs at most the cores left (at least "
                            "1); see tutorials/06); "
                            "0: trace them here (default: DYNNET_WORKERS, else one per "
                            "four cores, 1 to 3)")
    train.add_argument("--reuse-traces", action="store_true",
                       help="from the second epoch on, replay each training example's "
                            "recorded trace instead of running the model's code again "
                            "(same results; see tutorials/07)")
    train.add_argument("--out", metavar="DIR",
                       help="output directory (default: runs/MODEL)")
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last checkpoint, with the "
                            "settings it was started with; gives the same result as an "
                            "uninterrupted run")
    again.add_argument("--overwrite", action="store_true",
                       help="start over when --out already holds a run (its run files "
                            "are deleted)")
    train.add_argument("--max-examples", type=_positive_int, metavar="N",
                       help="use at most N examples of each split (a fixed random sample, the "
                            "same in every run)")
    train.add_argument("--model-args", type=_json_object, metavar="JSON",
                       help='extra model constructor arguments, e.g. \'{"hidden_dim": 64, '
                            '"node_loss": true}\'')
    train.add_argument("--no-progress", action="store_true",
                       help="no progress bar; without it, a bar is shown when stderr is a "
                            "terminal (the per-epoch lines are always printed)")

    evaluate = commands.add_parser(
        "eval", help="evaluate a trained model", description=(
            "Evaluate the model of a `dynnet train` output directory: root accuracy for "
            "tree models, perplexity for lm. Uses the run's data and vocabulary unless "
            "--data is given."))
    evaluate.add_argument("dir", metavar="DIR",
                          help="the --out directory of `dynnet train` (or its checkpoint/)")
    evaluate.add_argument("--data", metavar="PATH",
                          help="data to evaluate on, as for train (default: the run's data)")
    evaluate.add_argument("--split", default="test", choices=SPLITS,
                          help="which split of the data (default: test); ignored when "
                               "--data is a single file")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256, metavar="B",
                          help="examples per batch (default: 256)")
    evaluate.add_argument("--max-examples", type=_positive_int, metavar="N",
                          help="evaluate at most N examples (a fixed random sample)")
    evaluate.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    evaluate.add_argument("--threads", type=_positive_int, default=1, metavar="T",
                          help="torch CPU threads (default: 1)")

    commands.add_parser(
        "bench", add_help=False, help="run the benchmarks (benchmarks/run.py of a source "
                                      "checkout; arguments are passed on, see "
                                      "`dynnet bench --help`)")
    return parser


def _int_at_least(minimum):
    """An argparse type: an integer of at least `minimum`."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_count = _int_at_least(0)
SEED_LIMIT = 2 ** 32  # seeds are 0 .. 2**32 - 1 (the batch order seeds a torch generator
#                       with seed * 1_000_003 + epoch, which must fit in 64 bits)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _seed(text):
    value = _count(text)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be below 2**32 = {SEED_LIMIT}, got {value}")
    return value


def _json_object(text):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"invalid JSON ({e.msg} at column {e.colno})") \
            from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of keyword arguments")
    return value


def main(argv=None):
    """Runs the command line; returns the exit status (0 ok, 2 usage or data error).

    In a process that ``torchrun`` started (``WORLD_SIZE`` above 1), it destroys the
    process group and ends the process itself with that status instead of returning.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return bench(argv[1:])
    args = build_parser().parse_args(argv)
    status = 0
    try:
        if args.command == "train":
            train(args)
        else:
            evaluate(args)
    except (CLIError, DynnetError, FileNotFoundError) as error:
        print(f"dynnet {args.command}: error: {error}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print(f"dynnet {args.command}: interrupted" + (_kept(args) if args.command == "train"
                                                       else ""), file=sys.stderr)
        status = 130
    except BaseException:
        _leave_distributed()
        raise
    if _leave_distributed():
        # A torchrun process ends here, its work done and written. Interpreter shutdown
        # after gloo can abort the process ("terminate called without an active
        # exception", SIGABRT), which would report a finished run as failed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def _kept(args):
    """What an interrupted `dynnet train` leaves, and how to go on."""
    from dynnet.train import CHECKPOINT_DIR, TRAINER_JSON

    out = Path(args.out or Path("runs") / args.model)
    try:
        epoch = json.loads((out / CHECKPOINT_DIR / TRAINER_JSON).read_text("utf-8"))
        epoch = epoch["state"]["epoch"]
    except (OSError, ValueError, TypeError, KeyError):
        return "; no checkpoint was written yet"
    return (f"; the checkpoint of the last finished epoch ({epoch}) is kept in "
            f"{out / CHECKPOINT_DIR}; continue with: dynnet train {args.model} --resume "
            f"--out {out}")


# -------------------- data --------------------

def task_kind(model_cls):
    """"tree" or "sequence", from the model constructor's arguments."""
    params = inspect.signature(model_cls).parameters
    if "num_classes" in params:
        return "tree"
    if "eos_id" in params:
        return "sequence"
    raise CLIError(f"{model_cls.__qualname__} takes neither num_classes (a tree "
                   "classifier) nor eos_id (a language model); dynnet train does not know "
                   "what data it needs")


def load_splits(kind, data, names, binary=False, max_examples=None, origins=None):
    """Reads the splits ``names`` of ``data`` (None: the synthetic set).

    Returns ``(splits, source)``: split name -> examples (trees, or token lists), for
    the splits that exist; and a one-line description of the source. ``origins``, when
    a dict, gets split name -> the ``(file, line)`` of each example (None for each
    generated one), for error messages.
    """
    if data is None:
        sizes = {n: SYNTHETIC_SIZES[n] for n in names}
        if max_examples:
            sizes = {n: min(s, max_examples) for n, s in sizes.items()}
        train, dev, test = (sizes.get(n, 0) for n in SPLITS)
        generated = dict(zip(SPLITS, synthetic.splits(train, dev, test)))
        splits = {n: generated[n] for n in names}
        if kind == "sequence":
            splits = {n: [t.leaves() for t in trees] for n, trees in splits.items()}
        where = {n: [None] * len(x) for n, x in splits.items()}
        source = "synthetic sentiment treebank (negation flips its subtree)"
    else:
        path = Path(data)
        if not path.exists():
            raise CLIError(f"--data {data}: no such file or directory")
        read = read_trees_with_lines if kind == "tree" else read_sentences_with_lines
        if path.is_file():
            files = {n: path for n in names[:1]}
            source = str(path)
        else:
            files = _split_files(kind, path)
            if not files:
                expected = ("train.txt, dev.txt, test.txt" if kind == "tree"
                            else "train.txt or valid.txt, and test.txt")
                raise CLIError(f"--data {data}: no data files found (expected {expected})")
            files = {n: files[n] for n in names if n in files}
            source = ", ".join(f"{n}={f}" for n, f in files.items())
        splits, where = {}, {}
        for n, file in files.items():
            pairs = read(file)
            if max_examples:
                pairs = _sample(pairs, max_examples)
            splits[n] = [example for _, example in pairs]
            where[n] = [(file, line) for line, _ in pairs]
    if kind == "tree":
        for n in list(splits):
            splits[n], where[n] = _tree_view(splits[n], binary, n, where[n])
    if origins is not None:
        origins.update(where)
    return splits, source


def _where(split, index, origin, node=None):
    """Where example ``index`` of ``split`` (its node ``node``, in ``Tree.nodes()``
    order) comes from: ``file:line:column``, or "split tree N" for generated data."""
    if origin is None:
        return f"{split} tree {index + 1}"
    return node_position(origin[0], origin[1], node) if node is not None else \
        f"{origin[0]}:{origin[1]}"


def _sample(examples, n):
    """A fixed random subset of ``n`` examples in file order (files may be sorted by
    label, so the first ``n`` would be a biased sample)."""
    if len(examples) <= n:
        return examples
    keep = sorted(random.Random(0).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def _split_files(kind, directory):
    found = {n: directory / f"{n}.txt" for n in ("train", "dev", "valid", "test")}
    found = {n: p for n, p in found.items() if p.is_file()}
    if kind == "tree":
        return {n: found[n] for n in SPLITS if n in found}
    files = {}
    if "train" in found:
        files["train"] = found["train"]
        if "valid" in found or "dev" in found:
            files["dev"] = found.get("valid", found.get("dev"))
    elif "valid" in found:  # PTB as shared: valid trains, test evaluates
        files["train"] = found["valid"]
    if "test" in found:
        files["test"] = found["test"]
    return files


def _tree_view(trees, binary, split, origins):
    """Checks the labels; for ``binary``, drops neutral roots and maps node labels.
    Returns the trees and their origins."""
    out, kept = [], []
    for index, (tree, origin) in enumerate(zip(trees, origins)):
        for k, node in enumerate(tree.nodes()):
            if not isinstance(node.label, int) or not 0 <= node.label <= 4:
                raise CLIError(f"{_where(split, index, origin, k)}: label {node.label!r} is "
                               "not a sentiment class 0-4")
        if binary:
            if binary_label(tree.label) is None:
                continue
            for node in tree.nodes():
                label = binary_label(node.label)
                node.label = IGNORE_LABEL if label is None else label
        out.append(tree)
        kept.append(origin)
    return out, kept


def _check_arity(model, name, splits, origins, hint=""):
    """A tree node with more children than the model's ``arity`` (N-ary models): an
    error naming the place, before the model meets it deep inside a batch."""
    arity = getattr(model, "arity", None)
    if not isinstance(arity, int):
        return
    for split, trees in splits.items():
        where = origins.get(split) or [None] * len(trees)
        for index, (tree, origin) in enumerate(zip(trees, where)):
            for k, node in enumerate(tree.nodes()):
                if len(node.children) > arity:
                    raise CLIError(f"{_where(split, index, origin, k)}: a node with "
                                   f"{len(node.children)} children, but this {name} takes "
                                   f"at most {arity} (its arity){hint}")


def build_vocab(kind, train, data):
    if kind == "tree":
        if data is None:
            return Vocab(synthetic.VOCABULARY)
        return Vocab.from_trees(train)
    return Vocab.build(train, specials=(BOS, EOS))


def encode_splits(kind, splits, vocab):
    """Sets word ids on trees; turns token lists into id lists."""
    if kind == "tree":
        for trees in splits.values():
            vocab.index_trees(trees)
        return splits
    return {n: [vocab.encode(s) for s in sentences] for n, sentences in splits.items()}


def _task(kind):
    from dynnet.train import SequenceTask, TreeTask

    return TreeTask() if kind == "tree" else SequenceTask()


def _model_kwargs(kind, vocab, binary, model_args):
    if kind == "tree":
        base = {"vocab_size": len(vocab), "num_classes": 2 if binary else 5}
    else:
        base = {"vocab_size": len(vocab), "eos_id": vocab[EOS], "bos_id": vocab[BOS]}
    return {**base, **model_args}


# -------------------- train --------------------

def _device(name):
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device {name!r}: expected cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device {name!r}: expected cpu or cuda")
    return device


def _run_exists(out):
    """True when ``out`` holds a run that got somewhere: a checkpoint (or one an
    interrupted save left aside) or metrics. run.json and vocab.json alone are what a
    run that failed before its first epoch leaves; they may be written over."""
    from dynnet.train import CHECKPOINT_DIR, METRICS_FILE, interrupted_saves

    return (os.path.lexists(out / CHECKPOINT_DIR) or (out / METRICS_FILE).exists()
            or bool(interrupted_saves(out / CHECKPOINT_DIR)))


def _check_out(out):
    """--out must be a directory or a path where one can be made."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                what = "" if path == out else f" ({path} is a file)"
                raise CLIError(f"--out {out}: {'it exists and ' if path == out else ''}"
                               f"is not a directory{what}")
            return


DERIVED = {"tree": ("vocab_size", "num_classes"),
           "sequence": ("vocab_size", "eos_id", "bos_id")}


def _check_model_args(kind, model_args):
    taken = [k for k in DERIVED[kind] if k in (model_args or {})]
    if taken:
        raise CLIError(f"--model-args: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} "
                       "set from the data (vocabulary size, number of classes, sentence "
                       "markers); leave "
                       f"{'it' if len(taken) == 1 else 'them'} out")


def train(args):
    from dynnet.models import MODEL_REGISTRY
    from dynnet.train import (
        CHECKPOINT_DIR,
        METRICS_FILE,
        Trainer,
        init_distributed,
        interrupted_saves,
        recover_checkpoint,
    )

    torch.set_num_threads(args.threads)
    if args.model not in MODEL_REGISTRY:
        raise CLIError(f"unknown model {args.model!r}; registered models: "
                       f"{', '.join(_model_names())}")
    cls = MODEL_REGISTRY[args.model]
    kind = task_kind(cls)
    device = _device(args.device)
    out = Path(args.out or Path("runs") / args.model)
    _check_out(out)
    _check_model_args(kind, args.model_args)

    # settings: a resumed run keeps the ones it was started with
    given = {"batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
             "model_args": args.model_args, "binary": args.binary,
             "max_examples": args.max_examples,
             "data": None if args.data is None else str(Path(args.data).absolute())}
    if args.resume:
        checkpoint = out / CHECKPOINT_DIR
        if int(os.environ.get("RANK", "0")) == 0:  # one process renames; see Trainer.resume
            recovered = recover_checkpoint(checkpoint)
            if recovered:
                print(f"{checkpoint} was missing (a save was interrupted); resuming from the "
                      f"epoch-{recovered[1]} checkpoint found at {recovered[0].name}")
        if not checkpoint.is_dir() and not interrupted_saves(checkpoint):
            raise CLIError(f"--resume: {out} has no checkpoint to resume from" + (
                " (its run stopped before its first checkpoint); start it over with "
                "--overwrite" if (out / RUN_FILE).exists() else ""))
        run = _read_run(out)
        if run["model"] != args.model:
            raise CLIError(f"--resume: {out} holds a {run['model']} run, not {args.model}")
        for key, value in given.items():
            if value is not None and value != run.get(key):
                flag = "--" + key.replace("_", "-")
                raise CLIError(f"--resume: {flag} {value} differs from the run's "
                               f"{run.get(key)}; a resumed run keeps its settings")
        settings = {k: run.get(k, DEFAULTS.get(k)) for k in given}
        epochs = run.get("epochs", DEFAULTS["epochs"]) if args.epochs is None else args.epochs
    else:
        if _run_exists(out) and not args.overwrite:
            raise CLIError(f"{out} already holds a training run; pass --resume to continue "
                           "it, --overwrite to start over, or another --out")
        settings = {k: DEFAULTS.get(k) if v is None else v for k, v in given.items()}
        epochs = DEFAULTS["epochs"] if args.epochs is None else args.epochs
    if settings["binary"] and kind != "tree":
        raise CLIError("--binary applies to tree models only")

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.type == "cuda" and world > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise CLIError(f"--device cuda under torchrun needs one GPU per process; process "
                           f"{local_rank} found {torch.cuda.device_count()} GPU(s)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    rank, world = init_distributed(device)
    _sync(world)  # every process has checked --out before the first one writes
    say = print if rank == 0 else (lambda *a, **k: None)

    started = time.perf_counter()
    names = ("train", "dev", "test")
    origins = {}
    splits, source = load_splits(kind, settings["data"], names, settings["binary"],
                                 settings["max_examples"], origins)
    if not splits.get("train"):
        raise CLIError(f"no training examples in {source}")
    vocab = Vocab.load(out / VOCAB_FILE) if args.resume else \
        build_vocab(kind, splits["train"], settings["data"])
    splits = encode_splits(kind, splits, vocab)
    kwargs = _model_kwargs(kind, vocab, settings["binary"], settings["model_args"])
    torch.manual_seed(settings["seed"])
    random.seed(settings["seed"])
    try:
        model = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CLIError(f"cannot build {args.model} from {kwargs}: {e}") from None
    _check_arity(model, args.model, splits, origins,
                 '; pass --model-args \'{"arity": N}\' for a larger one, or train '
                 'child-sum-tree-lstm, which takes any number')

    counts = ", ".join(f"{len(x)} {n}" for n, x in splits.items())
    say(f"{args.model}: {sum(p.numel() for p in model.parameters())} parameters; "
        f"data: {source} ({counts}); device {device}"
        + (f", {world} processes" if world > 1 else ""))
    workers = config.workers if args.workers is None else args.workers
    try:  # before anything is written: the optimizer checks its settings here
        trainer = Trainer(model, _task(kind), splits["train"], dev=splits.get("dev"),
                          epochs=epochs, batch_size=settings["batch_size"],
                          lr=settings["lr"], seed=settings["seed"], out_dir=out,
                          device=device, progress=False if args.no_progress else None,
                          log=say, workers=workers, reuse_traces=args.reuse_traces)
    except ValueError as e:
        raise CLIError(f"cannot train {args.model} with these settings: {e}") from None

    if args.resume:
        from dynnet.models.io import CONFIG_FILE, read_config
        from dynnet.train import EpochsDoneError

        _, saved = read_config(out / CHECKPOINT_DIR / CONFIG_FILE)
        _check_vocab(vocab, saved, out / VOCAB_FILE, out / CHECKPOINT_DIR)
        try:
            trainer.resume(epochs=epochs)
        except EpochsDoneError as e:
            raise CLIError(f"--resume --epochs {epochs}: {e}") from None
        if rank == 0 and run.get("epochs") != epochs:  # a new target, kept for next time
            atomic_write_text(out / RUN_FILE, json.dumps({**run, "epochs": epochs}, indent=1)
                              + "\n")
    elif rank == 0:
        if args.overwrite:
            for name in (RUN_FILE, VOCAB_FILE, METRICS_FILE):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
            for aside in interrupted_saves(out / CHECKPOINT_DIR):
                shutil.rmtree(aside, ignore_errors=True)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CLIError(f"--out {out}: cannot create it ({e.strerror})") from None
        vocab.save(out / VOCAB_FILE)
        run = {"format": 1, "model": args.model, "task": kind, "model_kwargs": kwargs,
               "epochs": epochs, **settings}
        atomic_write_text(out / RUN_FILE, json.dumps(run, indent=1) + "\n")
    _sync(world)
    trainer.fit()
    if splits.get("test") and rank == 0:
        metrics = trainer.evaluate(splits["test"])
        trainer.record({"epoch": trainer.epoch, "test": metrics})
        say(_describe("test", metrics, trainer.task.unit))
    _sync(world)
    say(f"done in {time.perf_counter() - started:.1f} s; model and metrics in {out} "
        f"(dynnet eval {out})")


def _check_vocab(vocab, model_config, vocab_path, checkpoint):
    """The vocabulary must be the one the model was built with (its size, and the ids of
    a language model's sentence markers)."""
    size = model_config.get("vocab_size")
    if isinstance(size, int) and size != len(vocab):
        raise CLIError(f"{vocab_path} has {len(vocab)} tokens but the model in {checkpoint} "
                       f"was built for {size}; the vocabulary is not this model's")
    for key, token in (("eos_id", EOS), ("bos_id", BOS)):
        if key in model_config and (token not in vocab or vocab[token] != model_config[key]):
            raise CLIError(f"{vocab_path}: {token} is not token {model_config[key]} as in the "
                           f"model in {checkpoint}; the vocabulary is not this model's")


def _sync(world):
    if world > 1:
        torch.distributed.barrier()


def _leave_distributed():
    """Destroys the process group a torchrun run joined; True if there was one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and \
            int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.destroy_process_group()
        return True
    return False


def _describe(split, metrics, unit):
    if "accuracy" in metrics:
        return f"{split} accuracy {metrics['accuracy']:.4f} ({metrics['examples']} {unit})"
    return (f"{split} perplexity {metrics['perplexity']:.2f} ({metrics['examples']} {unit}, "
            f"{metrics['tokens']} tokens)")


def _read_run(out):
    path = Path(out) / RUN_FILE
    try:
        run = json.loads(read_utf8(path, CLIError))
    except FileNotFoundError:
        raise CLIError(f"{out} is not a dynnet training run (no {RUN_FILE})") from None
    except json.JSONDecodeError as e:
        raise CLIError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(run, dict) or run.get("format") != 1:
        raise CLIError(f"{path}: not a dynnet run description")
    for key, ok, expected in _RUN_FIELDS:
        if key in run or key in ("model", "task"):
            if key not in run:
                raise CLIError(f"{path}: no {key!r} field")
            if not ok(run[key]):
                raise CLIError(f"{path}: {key!r} must be {expected}, found {run[key]!r}")
    return run


def _is_int(value, low=None, high=None):
    return isinstance(value, int) and not isinstance(value, bool) and \
        (low is None or value >= low) and (high is None or value < high)


_RUN_FIELDS = [
    ("model", lambda v: isinstance(v, str), "a model name"),
    ("task", lambda v: v in ("tree", "sequence"), '"tree" or "sequence"'),
    ("data", lambda v: v is None or isinstance(v, str), "a path or null"),
    ("binary", lambda v: isinstance(v, bool), "true or false"),
    ("model_kwargs", lambda v: isinstance(v, dict), "an object"),
    ("model_args", lambda v: isinstance(v, dict), "an object"),
    ("epochs", lambda v: _is_int(v, 1), "a positive integer"),
    ("batch_size", lambda v: _is_int(v, 1), "a positive integer"),
    ("lr", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
     and math.isfinite(v) and v > 0, "a positive number"),
    ("seed", lambda v: _is_int(v, 0, SEED_LIMIT), "an integer from 0 to 2**32-1"),
    ("max_examples", lambda v: v is None or _is_int(v, 1), "a positive integer or null"),
]


# -------------------- eval --------------------

def evaluate(args):
    from dynnet.models import load_model
    from dynnet.train import CHECKPOINT_DIR

    torch.set_num_threads(args.threads)
    device = _device(args.device)
    directory = Path(args.dir)
    if not directory.exists():
        raise CLIError(f"{directory}: no such directory")
    if (directory / RUN_FILE).is_file():
        out, checkpoint = directory, directory / CHECKPOINT_DIR
    elif (directory.parent / RUN_FILE).is_file():
        out, checkpoint = directory.parent, directory
    else:
        raise CLIError(f"{directory} is not a dynnet training run (no {RUN_FILE}); "
                       "pass the --out directory of `dynnet train`")
    run = _read_run(out)
    model = load_model(checkpoint, map_location=device)
    kind = run["task"]
    if task_kind(type(model)) != kind:
        raise CLIError(f"{out / RUN_FILE}: task {kind!r} does not fit the checkpoint's "
                       f"{type(model).__qualname__}")
    vocab = Vocab.load(out / VOCAB_FILE)
    if callable(getattr(model, "config", None)):
        _check_vocab(vocab, model.config(), out / VOCAB_FILE, checkpoint)
    data = run.get("data") if args.data is None else args.data
    origins = {}
    splits, source = load_splits(kind, data, (args.split,), run.get("binary", False),
                                 args.max_examples, origins)
    if args.split not in splits:
        raise CLIError(f"{source or data} has no {args.split} split")
    _check_arity(model, run["model"], splits, origins)
    examples = encode_splits(kind, splits, vocab)[args.split]
    if not examples:
        raise CLIError(f"the {args.split} split of {source} is empty")
    task = _task(kind)
    model.eval()
    metrics = task.evaluate(model, examples, args.batch_size)
    print(f"{run['model']} from {checkpoint} on {source}")
    print(_describe(args.split, metrics, task.unit))
    return metrics


# -------------------- bench --------------------

def bench(argv, root=None):
    """Runs ``benchmarks/run.py`` of the checkout this package was installed from
    (``root``: the checkout; default: the folder above this package)."""
    root = Path(__file__).resolve().parents[1] if root is None else Path(root)
    if not (root / "benchmarks" / "run.py").is_file():
        print("dynnet bench: error: the benchmarks are not installed with the package; run "
              "`dynnet bench` (or `python -m benchmarks.run`) from an editable install of "
              f"a dynnet source checkout (looked for {root / 'benchmarks' / 'run.py'})",
              file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks import run

    run.main(argv)
    return 0
