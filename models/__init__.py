"""Prebuilt dynamic models: each an nn.Module with a @dynnet.function per-example method.

`dynnet.models.load(directory)` rebuilds a model saved with `model.save(directory)`.
"""

from dynnet.models.io import MODEL_REGISTRY, ModelLoadError, load_model, register_model, save_model

load = load_model

__all__ = ["MODEL_REGISTRY", "ModelLoadError", "load", "load_model", "register_model",
           "save_model"]
