"""Triton Python-backend model: stand-in face detector (SCRFD-500M with 5 keypoints).

Runs the SCRFD ONNX file with onnxruntime on CPU and does its own input preparation,
anchor decoding and NMS (scrfd.py), so it answers the face_detect contract
(docs/faces.md): per image num_faces, face_boxes (x1,y1,x2,y2), face_scores and
face_landmarks (5 x (x, y)), all in the pixels of the `original` image it was given, best
score first. Each request of a dynamic batch is validated and answered on its own, so a bad
one fails alone; a request carrying several images of one size gets its rows padded to its
own largest count (num_faces says how many are real).
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub imports model.py by path; its sibling helper module is found through sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scrfd  # noqa: E402
from onnx_stand_in import answer_each, number, open_session, padded_rows  # noqa: E402

INPUT = "original"
OUTPUTS = ("num_faces", "face_boxes", "face_scores", "face_landmarks")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = config["name"]
        missing = set(OUTPUTS) - {o["name"] for o in config["output"]}
        if missing or [i["name"] for i in config["input"]] != [INPUT]:
            raise pb_utils.TritonModelException(
                f"{self.name}: config must have input '{INPUT}' and outputs {list(OUTPUTS)}")
        self.score_threshold = number(self.name, config, "score_threshold", "0.5", float, 0.0, 1.0)
        self.nms_iou = number(self.name, config, "nms_iou", "0.4", float, 0.0, 1.0)
        self.max_faces = number(self.name, config, "max_faces", "100", int, 1, None)

        self.session, path = open_session(self.name, args, config)

        # Fail the load, not every request, when the file is not an SCRFD with keypoints.
        (onnx_in,) = self.session.get_inputs()
        self.onnx_input = onnx_in.name
        shape = tuple(onnx_in.shape[1:])
        if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2] or not isinstance(shape[1], int):
            raise pb_utils.TritonModelException(f"{self.name}: {path} input {onnx_in.shape} is not [1,3,S,S]")
        self.input_size = shape[1]
        self.onnx_outputs = [o.name for o in self.session.get_outputs()]
        wanted = {f"{head}_{s}" for head in ("score", "bbox", "kps") for s in scrfd.STRIDES}
        if not wanted <= set(self.onnx_outputs):
            raise pb_utils.TritonModelException(
                f"{self.name}: {path} outputs {self.onnx_outputs} lack {sorted(wanted - set(self.onnx_outputs))}")

    def _run(self, net_input):
        return dict(zip(self.onnx_outputs, self.session.run(self.onnx_outputs, {self.onnx_input: net_input})))

    @staticmethod
    def _check(array):
        if array is None:
            return f"missing input '{INPUT}'"
        if array.dtype != np.uint8:
            return f"input '{INPUT}' must be UINT8, got {array.dtype}"
        if array.ndim != 4 or array.shape[3] != 3 or min(array.shape) < 1:
            return f"input '{INPUT}' must be a non-empty [N,H,W,3] RGB batch, got {list(array.shape)}"
        return None

    def _respond(self, array):
        found = [scrfd.detect(self._run, image, self.input_size, self.score_threshold, self.nms_iou,
                              self.max_faces) for image in array]
        counts, (boxes, scores, landmarks) = padded_rows(
            found, [(np.float32, (4,)), (np.float32, ()), (np.float32, (5, 2))])
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("num_faces", counts),
            pb_utils.Tensor("face_boxes", boxes),
            pb_utils.Tensor("face_scores", scores),
            pb_utils.Tensor("face_landmarks", landmarks),
        ])

    def execute(self, requests):
        return answer_each(self.name, requests, INPUT, self._check, self._respond)
