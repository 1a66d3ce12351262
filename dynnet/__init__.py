"""dynnet: write a PyTorch model for one example; run it on a batch, batched.

    @dynnet.function
    def encode(tree): ...          # plain Python for ONE example

    encode(tree)                   # one example
    encode.batch(trees)            # B examples as a few batched torch calls
    dynnet.to_code(encode)         # the converted source
"""

from dynnet import config
from dynnet.api import function, run_eagerly, to_code
from dynnet.errors import BatchingError, ConcretizationError, ConversionError, DynnetError
from dynnet.runtime import profile

__all__ = ["BatchingError", "ConcretizationError", "ConversionError", "DynnetError", "config",
           "function", "profile", "run_eagerly", "to_code"]
__version__ = "0.1.0"
