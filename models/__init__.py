"""Prebuilt dynamic models: each an nn.Module with a @dynnet.function per-example method.

`dynnet.models.load(directory)` rebuilds a model saved with `model.save(directory)`.

Registered models (``MODEL_REGISTRY``): "tree-lstm" (``NaryTreeLSTM``),
"child-sum-tree-lstm" (``ChildSumTreeLSTM``), "recursive-nn" (``RecursiveNN``) and
"lm" (``SequencePredictor``).
"""

from dynnet.models.io import MODEL_REGISTRY, ModelLoadError, load_model, register_model, save_model
from dynnet.models.recursive_nn import RecursiveNN
from dynnet.models.sequence import SequencePredictor
from dynnet.models.tree_lstm import ChildSumTreeLSTM, NaryTreeLSTM

load = load_model

__all__ = ["MODEL_REGISTRY", "ChildSumTreeLSTM", "ModelLoadError", "NaryTreeLSTM",
           "RecursiveNN", "SequencePredictor", "load", "load_model", "register_model", "save_model"]
