"""Triton Python-backend model: runs a one-input, one-output ONNX encoder with onnxruntime on CPU.

Used for clip_image, clip_text and face_encoder (their 1/model.py are symlinks to this
file) and the tests' copies with other batch limits. The input's name, dtype and dims come from
config.pbtxt. Every request in a dynamic batch is validated on its own; the valid ones
are concatenated and run in one onnxruntime call, then split back, so a bad request
fails alone. Parameter `l2_normalize` ("true"/"false", default false) divides each output
row by its L2 norm, for encoders whose ONNX output is not normalised (MobileFaceNet: ~12-15).
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub imports model.py by path; the shared helpers are found through its folder.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnx_stand_in import invalid_request, open_session, param  # noqa: E402

# config.pbtxt data types this model accepts as input.
_NUMPY_DTYPES = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32, "TYPE_UINT8": np.uint8}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = config["name"]
        (inp,) = config["input"]
        (out,) = config["output"]
        self.input_name = inp["name"]
        self.output_name = out["name"]
        self.item_shape = tuple(int(d) for d in inp["dims"])
        if inp["data_type"] not in _NUMPY_DTYPES:
            raise pb_utils.TritonModelException(
                f"{self.name}: input data_type {inp['data_type']} is not one of {sorted(_NUMPY_DTYPES)}")
        self.input_dtype = np.dtype(_NUMPY_DTYPES[inp["data_type"]])
        self.dim = int(out["dims"][0])
        self.max_batch = int(config.get("max_batch_size", 0))
        normalize = param(config, "l2_normalize", "false")
        if normalize not in ("true", "false"):
            raise pb_utils.TritonModelException(
                f"{self.name}: parameter l2_normalize must be 'true' or 'false', got '{normalize}'")
        self.l2_normalize = normalize == "true"

        self.session, path = open_session(self.name, args, config)

        # Fail the load, not every request, when the file disagrees with the config.
        (onnx_in,) = self.session.get_inputs()
        (onnx_out,) = self.session.get_outputs()
        if tuple(onnx_in.shape[1:]) != self.item_shape:
            raise pb_utils.TritonModelException(
                f"{self.name}: {path} input {onnx_in.shape} does not match config dims {self.item_shape}")
        if onnx_out.shape[-1] != self.dim:
            raise pb_utils.TritonModelException(
                f"{self.name}: {path} output {onnx_out.shape} does not match config dim {self.dim}")
        self.onnx_input = onnx_in.name

    def _check(self, array):
        if array is None:
            return f"missing input '{self.input_name}'"
        if array.dtype != self.input_dtype:
            return f"input '{self.input_name}' must be {self.input_dtype}, got {array.dtype}"
        if array.ndim != 1 + len(self.item_shape) or tuple(array.shape[1:]) != self.item_shape:
            return (f"input '{self.input_name}' must have shape [N,{','.join(map(str, self.item_shape))}],"
                    f" got {list(array.shape)}")
        if array.shape[0] < 1 or (self.max_batch and array.shape[0] > self.max_batch):
            return f"batch size {array.shape[0]} outside [1, {self.max_batch}]"
        return None

    def execute(self, requests):
        arrays = []
        errors = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            array = None if tensor is None else tensor.as_numpy()
            error = self._check(array)
            errors.append(error)
            arrays.append(None if error else array)

        good = [a for a in arrays if a is not None]
        outputs = []
        if good:
            batch = good[0] if len(good) == 1 else np.concatenate(good, axis=0)
            result = self.session.run(None, {self.onnx_input: batch})[0].astype(np.float32, copy=False)
            if self.l2_normalize:
                # The floor keeps an all-zero row zero instead of NaN.
                result = result / np.maximum(np.linalg.norm(result, axis=1, keepdims=True), 1e-12)
            offsets = np.cumsum([0] + [a.shape[0] for a in good])
            outputs = [result[offsets[i]:offsets[i + 1]] for i in range(len(good))]

        responses = []
        it = iter(outputs)
        for error in errors:
            if error:
                responses.append(invalid_request(self.name, error))
            else:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(self.output_name, next(it))]))
        return responses
