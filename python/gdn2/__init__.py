"""gdn2: Gated DeltaNet-2 (and its KDA / Gated DeltaNet limits) from the gdn2 C library, through
ctypes. numpy arrays (CPU) and, when torch is importable, torch tensors (CPU, and CUDA through the
library's device-pointer API on the current stream) with autograd. See python/README.md."""
from ._lib import Gdn2ArgumentError, Gdn2Error, Gdn2Unsupported, cuda_available, version, version_number
from ._lib import path as library_path
from ._core import Grads
from .ops import (chunk_gated_delta_rule, chunk_gated_delta_rule_bwd, chunk_gdn2, chunk_gdn2_bwd, chunk_kda,
                  chunk_kda_bwd, decode_step, decode_verify, fused_recurrent_gated_delta_rule, fused_recurrent_gdn2,
                  fused_recurrent_kda)

__version__ = "0.1.0"

__all__ = ["chunk_gdn2", "chunk_gdn2_bwd", "fused_recurrent_gdn2", "chunk_kda", "chunk_kda_bwd", "fused_recurrent_kda",
           "chunk_gated_delta_rule", "chunk_gated_delta_rule_bwd", "fused_recurrent_gated_delta_rule", "decode_step",
           "decode_verify",
           "Grads", "Gdn2Error", "Gdn2ArgumentError", "Gdn2Unsupported", "version", "version_number",
           "cuda_available", "library_path", "__version__"]
