"""Saving and loading models: ``config.json`` plus ``weights.safetensors``, never pickle.

A checkpoint is a directory::

    config.json          {"model": <registered name>, "config": {...kwargs...}, "format": 1}
    weights.safetensors  the state_dict

``load_model`` rebuilds the model as ``MODEL_REGISTRY[name](**config)`` and loads the
weights strictly, each floating-point tensor in the dtype it was saved with. Models are
registered with ``@register_model(name)``; the usual way to get ``save``/``load``
methods is ``SaveLoadMixin``.

``save_model`` writes the new checkpoint into a temporary directory next to the
target and renames it into place, so an interrupted save leaves either the old
checkpoint or the new one, never a mix or a half-written file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dynnet.errors import DynnetError
from dynnet.vocab import read_utf8

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "MODEL_REGISTRY",
    "ModelLoadError",
    "ModelSaveError",
    "SaveLoadMixin",
    "WEIGHTS_FILE",
    "load_model",
    "read_config",
    "register_model",
    "save_model",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = 1

MODEL_REGISTRY: dict[str, type] = {}


class ModelLoadError(DynnetError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


class ModelSaveError(DynnetError):
    """A model that cannot be saved (unregistered class, config not JSON, bad target)."""


def register_model(name):
    """Class decorator: registers a model class under ``name`` for ``load_model``.

    Registering the same name again is allowed only for the same class (or a
    re-definition of it, as when a module is reloaded).
    """

    def decorate(cls):
        old = MODEL_REGISTRY.get(name)
        if old is not None and old is not cls and (
            (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__)
        ):
            raise ValueError(f"model name {name!r} is already registered to "
                             f"{old.__module__}.{old.__qualname__}")
        MODEL_REGISTRY[name] = cls
        return cls

    return decorate


def _registered_name(model):
    """The registry name of `model`'s class, or of the registered class it subclasses
    only to run the same functions otherwise (`loss = dynnet.function(Base.loss,
    reuse_traces=True)`): what is saved is the base's, and it loads as the base."""
    cls = type(model)
    names = {registered: name for name, registered in MODEL_REGISTRY.items()}
    for klass in cls.__mro__:
        if klass in names:
            return names[klass]
        if not _only_rewraps(klass):
            break
    raise ModelSaveError(
        f"{cls.__module__}.{cls.__qualname__} is not a registered model; decorate it with "
        "@register_model(name) so that load_model can rebuild it"
    )


def _only_rewraps(klass):
    """Whether `klass` defines nothing but dynnet functions made again from its bases'
    (the same Python function with other options)."""
    from dynnet.api import DynFunction

    for name, value in vars(klass).items():
        if name.startswith("__") and name.endswith("__"):
            continue  # __module__, __qualname__, __doc__, ...
        base = getattr(super(klass, klass), name, None)
        if not (isinstance(value, DynFunction) and isinstance(base, DynFunction)
                and value.fn is base.fn):
            return False
    return True


class SaveLoadMixin:
    """Adds ``save(directory)`` and ``load(directory)`` to an ``nn.Module``.

    The class must be registered with ``@register_model(name)`` and define
    ``config()`` returning the JSON-serialisable keyword arguments of ``__init__``.
    """

    def config(self):
        """Returns the constructor kwargs that rebuild this model (JSON-serialisable)."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must define config() returning its constructor "
            "kwargs to be saved"
        )

    def save(self, directory):
        """Writes the checkpoint directory (see ``save_model``)."""
        save_model(self, directory)

    @classmethod
    def load(cls, directory, map_location=None):
        """Loads a checkpoint that must hold an instance of this class."""
        model = load_model(directory, map_location=map_location)
        if not isinstance(model, cls):
            raise ModelLoadError(f"{directory} holds a {type(model).__qualname__}, "
                                 f"not a {cls.__qualname__}")
        return model


# --- save ----------------------------------------------------------------------------


def save_model(model, directory):
    """Saves ``model`` as a checkpoint directory, atomically.

    Args:
        model: an ``nn.Module`` of a registered class with a ``config()`` method.
        directory: the checkpoint directory. An existing checkpoint there is replaced;
            an existing directory holding anything else is refused.

    Raises:
        ModelSaveError: unregistered class, config not JSON-serialisable, or a target
            that is not a checkpoint.
    """
    name = _registered_name(model)
    config = model.config()
    try:
        config_text = json.dumps({"model": name, "config": config, "format": FORMAT},
                                 indent=2, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ModelSaveError(f"{name}.config() is not JSON-serialisable: {e}") from None
    tensors = _tensors_to_save(model.state_dict())

    directory = Path(directory).absolute()
    _check_replaceable(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_path(directory, "tmp")
    os.mkdir(tmp)
    try:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"dynnet_model": name})
        _fsync_file(tmp / WEIGHTS_FILE)
        with open(tmp / CONFIG_FILE, "x", encoding="utf-8") as f:
            f.write(config_text + "\n")
            f.flush()
            os.fsync(f.fileno())
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _tensors_to_save(state_dict):
    """Detached, contiguous tensors, with no two sharing memory (safetensors refuses
    shared storage, e.g. tied weights: each such entry gets its own copy)."""
    tensors, seen = {}, set()
    for key, value in state_dict.items():
        t = value.detach()
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        whole = t.is_contiguous() and t.storage_offset() == 0 and \
            storage.nbytes() == t.numel() * t.element_size()
        if ptr in seen or not whole:
            t = t.clone(memory_format=torch.contiguous_format)
        seen.add(ptr)
        tensors[key] = t
    return tensors


def _check_replaceable(directory):
    if not os.path.lexists(directory):
        return
    if not directory.is_dir() or directory.is_symlink():
        raise ModelSaveError(f"cannot save a checkpoint to {directory}: it exists and is "
                             "not a directory")
    foreign = sorted(set(os.listdir(directory)) - {CONFIG_FILE, WEIGHTS_FILE})
    if foreign:
        raise ModelSaveError(
            f"refusing to replace {directory}: it holds files that are not part of a "
            f"checkpoint ({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''})"
        )


def _fresh_path(directory, kind):
    return directory.parent / f".{directory.name}.{kind}-{secrets.token_hex(6)}"


def replace_directory(new, directory):
    """Renames ``new`` to ``directory``; an existing one is renamed aside first and
    deleted last, so some complete checkpoint is always on disk."""
    if not os.path.lexists(directory):
        os.rename(new, directory)
    else:
        old = _fresh_path(directory, "old")
        os.rename(directory, old)
        try:
            os.rename(new, directory)
        except BaseException:
            os.rename(old, directory)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(directory.parent)


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- load ----------------------------------------------------------------------------


def load_model(directory, map_location=None):
    """Rebuilds a model saved by ``save_model``.

    Args:
        directory: the checkpoint directory.
        map_location: device to move the loaded model to (e.g. "cuda"); None keeps it
            where its constructor put it (normally the CPU).

    Returns:
        The model, an instance of the registered class, with the saved weights.

    Raises:
        ModelLoadError: missing directory or file, invalid JSON (file, line, column),
            unknown model name (the known ones are listed), constructor failure,
            missing or unexpected weights, or a shape mismatch (parameter, expected
            and found shapes).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(_missing_directory_message(directory))
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    name, config = read_config(config_path)
    if not weights_path.is_file():
        raise ModelLoadError(f"checkpoint {directory} has no {WEIGHTS_FILE}")
    cls = MODEL_REGISTRY.get(name)
    if cls is None:
        known = ", ".join(sorted(MODEL_REGISTRY)) or "none"
        raise ModelLoadError(f"{config_path}: unknown model {name!r}; registered models: "
                             f"{known}")
    try:
        model = cls(**config)
    except Exception as e:
        raise ModelLoadError(f"{config_path}: cannot build {name} from its config: "
                             f"{type(e).__name__}: {e}") from e
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelLoadError(f"{weights_path}: cannot read weights: {e}") from e
    _check_state(model.state_dict(), state, weights_path)
    _adopt_saved_dtypes(model, state)
    model.load_state_dict(state, strict=True)
    if map_location is not None:
        model.to(map_location)
    return model


def _adopt_saved_dtypes(model, state):
    """Gives each floating-point parameter and buffer the dtype it was saved with
    (``load_state_dict`` would cast a float64 model's weights to the constructor's
    float32). Tied parameters are one object, so they stay tied."""
    def saved_dtype(name, tensor):
        saved = state.get(name)
        if saved is None or saved.dtype == tensor.dtype or not saved.is_floating_point() \
                or not tensor.is_floating_point():
            return None
        return saved.dtype

    for name, param in model.named_parameters(remove_duplicate=False):
        dtype = saved_dtype(name, param)
        if dtype is not None:
            param.data = param.data.to(dtype)
    for prefix, module in model.named_modules(remove_duplicate=False):
        for key, buffer in list(module._buffers.items()):
            if buffer is not None:
                dtype = saved_dtype(f"{prefix}.{key}" if prefix else key, buffer)
                if dtype is not None:
                    module._buffers[key] = buffer.to(dtype)


def _missing_directory_message(directory):
    message = f"checkpoint directory {directory} does not exist"
    if directory.exists():
        return f"checkpoint {directory} is not a directory"
    parent = directory.parent
    if parent.is_dir():
        aside = sorted(parent.glob(f".{directory.name}.old-*"))
        if aside:
            message += (f"; a save was interrupted while replacing it, and the previous "
                        f"checkpoint is at {aside[-1]}")
    return message


def read_config(path):
    """``(model name, constructor kwargs)`` from a checkpoint's config.json, checked."""
    try:
        text = read_utf8(path, ModelLoadError)
    except FileNotFoundError:
        raise ModelLoadError(f"checkpoint {path.parent} has no {CONFIG_FILE}") from None
    except OSError as e:  # a folder in its place, no permission to read it
        raise ModelLoadError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    if data.get("format") != FORMAT:
        raise ModelLoadError(f"{path}: unsupported checkpoint format {data.get('format')!r} "
                             f"(this version reads format {FORMAT})")
    name, config = data.get("model"), data.get("config")
    if not isinstance(name, str):
        raise ModelLoadError(f"{path}: 'model' must be the registered model name")
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: 'config' must be an object of constructor kwargs")
    return name, config


def _check_state(expected, found, path):
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_some(missing)}")
        if unexpected:
            parts.append(f"unexpected {_some(unexpected)}")
        raise ModelLoadError(f"{path}: weights do not match the model: {'; '.join(parts)}")
    for key, value in expected.items():
        if tuple(value.shape) != tuple(found[key].shape):
            raise ModelLoadError(
                f"{path}: shape mismatch for {key}: the model expects "
                f"{tuple(value.shape)}, the file has {tuple(found[key].shape)}"
            )


def _some(keys, limit=10):
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
