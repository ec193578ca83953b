"""What every ONNX Runtime stand-in model of this repository shares: reading config
parameters, opening the ONNX file, and answering each request of a batch on its own.

The real file lives in clip_image/1; the other models' version folders link to it, and each
model.py finds it through its own folder on sys.path.
"""
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def param(config, key, default):
    """A string parameter of config.pbtxt, `default` when absent or empty."""
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


def number(name, config, key, default, kind, low, high):
    """A numeric parameter within [low, high] (high None: unbounded); fails the load otherwise."""
    text = param(config, key, default)
    try:
        value = kind(text)
    except ValueError as e:
        raise pb_utils.TritonModelException(f"{name}: parameter {key} is not a {kind.__name__}: '{text}'") from e
    if value < low or (high is not None and value > high):
        raise pb_utils.TritonModelException(
            f"{name}: parameter {key}={value} outside [{low}, {'inf' if high is None else high}]")
    return value


def open_session(name, args, config):
    """The model's ONNX file (parameter onnx_file) on the CPU provider -> (session, path)."""
    version_dir = os.path.join(args["model_repository"], args["model_version"])
    path = os.path.join(version_dir, param(config, "onnx_file", "model.onnx"))
    if not os.path.exists(path):
        raise pb_utils.TritonModelException(
            f"{name}: {path} not found (scripts/link_models.py links the weights from ../shared)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = number(name, config, "intra_op_threads", "1", int, 1, None)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"]), path


def invalid_request(name, error):
    # INVALID_ARG so HTTP clients see 400, not 500.
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{name}: {error}", pb_utils.TritonError.INVALID_ARG))


def answer_each(name, requests, input_name, check, respond):
    """One response per request: `check(array)` returns an error text or None, `respond(array)`
    the response; a bad input or a failure inside `respond` fails that request alone."""
    responses = []
    for request in requests:
        tensor = pb_utils.get_input_tensor_by_name(request, input_name)
        array = None if tensor is None else tensor.as_numpy()
        error = check(array)
        if error:
            responses.append(invalid_request(name, error))
            continue
        try:
            responses.append(respond(array))
        except Exception as exc:  # an onnxruntime failure belongs to this request only
            responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{name}: inference failed: {exc}")))
    return responses


def padded_rows(found, fields):
    """Per-image results -> (counts [N,1] int32, one array per field padded to the most rows).

    `found`: one tuple per image of arrays whose first axis is that image's K_i results;
    `fields`: (dtype, shape of one row) for each position of those tuples. Rows past K_i stay
    zero; the counts say how many are real."""
    n, k = len(found), max(len(arrays[0]) for arrays in found)
    counts = np.array([[len(arrays[0])] for arrays in found], np.int32)
    columns = []
    for f, (dtype, row_shape) in enumerate(fields):
        column = np.zeros((n, k, *row_shape), dtype)
        for i, arrays in enumerate(found):
            column[i, :len(arrays[f])] = arrays[f]
        columns.append(column)
    return counts, columns
