"""A Triton Python-backend model written by `embedtab export triton` (copied as <model>/<version>/model.py):
Categorify ids in, the raw ids they stand for out. It needs numpy only, not embedtab.

    input  ids    INT64 [n]                 Categorify ids
    output raw    INT64 or BYTES [n]        the raw id (0 or "" where known is false)
    output known  BOOL  [n]                 false for the reserved ids (padding, null, OOV)

An id outside the vocabulary fails the request with a message naming it.
"""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def version_folder(args):
    base = Path(args["model_repository"])
    if base.suffix == ".py":  # (some Triton releases pass the path of model.py)
        base = base.parent.parent
    return base / str(args["model_version"])


class TritonPythonModel:
    def initialize(self, args):
        here = version_folder(args)
        self.raw = np.load(here / "raw.npy")  # numbers, or fixed-width unicode for string ids
        self.known = np.load(here / "known.npy")
        if self.raw.dtype.kind == "U":
            self.raw = np.array([value.encode("utf-8") for value in self.raw], dtype=object)

    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "ids").as_numpy().reshape(-1).astype(np.int64)
            outside = (ids < 0) | (ids >= len(self.raw))
            if outside.any():
                message = f"{int(outside.sum())} id(s) outside the vocabulary's 0..{len(self.raw) - 1}, e.g. {ids[outside][:5].tolist()}"
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)))
                continue
            outputs = [pb_utils.Tensor("raw", self.raw[ids]), pb_utils.Tensor("known", self.known[ids])]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
