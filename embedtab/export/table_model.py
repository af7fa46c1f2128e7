"""A Triton Python-backend model written by `embedtab export triton` (copied as <model>/<version>/model.py):
Categorify ids in, rows of tables out. The lookups (outputs `vectors`, `present`) and the id decoders
(outputs `raw`, `known`) are this one model: each output named in config.pbtxt is read from
`<output>.npy` in the version folder, row i for id i. It needs numpy only, not embedtab.

    input  ids        INT64 [n]       Categorify ids (0 padding, 1 null, 2 OOV, 3.. the vocabulary)
    output <name>     row `ids` of <name>.npy ([n] or [n, dim]; fixed-width text is sent as BYTES)

An id outside the tables fails the request with a message naming it: nothing is guessed.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def version_folder(args):
    base = Path(args["model_repository"])
    if base.suffix == ".py":  # (some Triton releases pass the path of model.py)
        base = base.parent.parent
    return base / str(args["model_version"])


def readable(values):
    """Fixed-width unicode (string ids, saved without pickle) as the bytes objects a BYTES tensor takes."""
    return np.array([v.encode("utf-8") for v in values], dtype=object) if values.dtype.kind == "U" else values


class TritonPythonModel:
    def initialize(self, args):
        here = version_folder(args)
        names = [output["name"] for output in json.loads(args["model_config"])["output"]]
        self.tables = {name: readable(np.load(here / f"{name}.npy")) for name in names}
        self.rows = len(next(iter(self.tables.values())))

    def execute(self, requests):
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, "ids").as_numpy().reshape(-1).astype(np.int64)
            outside = (ids < 0) | (ids >= self.rows)
            if outside.any():
                message = f"{int(outside.sum())} id(s) outside the table's 0..{self.rows - 1}, e.g. {ids[outside][:5].tolist()}"
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message)))
                continue
            outputs = [pb_utils.Tensor(name, table[ids]) for name, table in self.tables.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
