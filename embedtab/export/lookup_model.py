"""A Triton Python-backend model written by `embedtab export triton` (copied as <model>/<version>/model.py):
Categorify ids in, the rows of an embedtab lookup table out. It needs numpy only, not embedtab.

    input  ids      INT64 [n]       Categorify ids (0 padding, 1 null, 2 OOV, 3.. the vocabulary)
    output vectors  FP32  [n, dim]  row i of the table (the lookup's fill where present is false)
    output present  BOOL  [n]       whether the id's item has a vector of its own

An id outside the table fails the request with a message naming it: nothing is guessed.
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
        self.vectors = np.load(here / "vectors.npy")
        self.present = np.load(here / "present.npy")

    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "ids").as_numpy().reshape(-1).astype(np.int64)
            outside = (ids < 0) | (ids >= len(self.vectors))
            if outside.any():
                message = f"{int(outside.sum())} id(s) outside the table's 0..{len(self.vectors) - 1}, e.g. {ids[outside][:5].tolist()}"
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)))
                continue
            outputs = [pb_utils.Tensor("vectors", self.vectors[ids]), pb_utils.Tensor("present", self.present[ids])]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
