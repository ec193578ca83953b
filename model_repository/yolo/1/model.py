"""Triton Python-backend model: stand-in COCO-80 detector with the end2end contract.

Runs a YOLO ONNX file with onnxruntime on CPU and does what a TensorRT end2end engine
does inside: decoding, class-aware NMS, at most max_detections per image. Outputs per
image: num_dets, det_boxes (x1,y1,x2,y2 in pixels of the 640 letterbox input),
det_scores, det_classes (COCO-80 index). Each request of a dynamic batch is validated
and answered on its own, so a bad one fails alone; a request carrying several images
gets its rows padded to its own largest count (num_dets says how many are real).

Variants (parameter `variant`): `yolov8` (Ultralytics head, same input as the contract)
and `yolox` (YOLOX head with grid decoding; the input is adapted, see detection.py).
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

# The stub imports model.py by path; its sibling helper module is found through sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detection  # noqa: E402
from onnx_stand_in import answer_each, number, open_session, padded_rows, param  # noqa: E402

VARIANTS = ("yolov8", "yolox")
OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = config["name"]
        (inp,) = config["input"]
        self.input_name = inp["name"]
        self.item_shape = tuple(int(d) for d in inp["dims"])
        missing = set(OUTPUTS) - {o["name"] for o in config["output"]}
        if missing:
            raise pb_utils.TritonModelException(f"{self.name}: config lacks outputs {sorted(missing)}")
        if len(self.item_shape) != 3 or self.item_shape[0] != 3 or self.item_shape[1] != self.item_shape[2]:
            raise pb_utils.TritonModelException(
                f"{self.name}: input dims must be [3,S,S], got {list(self.item_shape)}")
        self.input_size = self.item_shape[1]

        self.variant = param(config, "variant", "yolov8")
        if self.variant not in VARIANTS:
            raise pb_utils.TritonModelException(
                f"{self.name}: parameter variant must be one of {VARIANTS}, got '{self.variant}'")
        self.score_threshold = number(self.name, config, "score_threshold", "0.25", float, 0.0, 1.0)
        self.nms_iou = number(self.name, config, "nms_iou", "0.7", float, 0.0, 1.0)
        self.max_detections = number(self.name, config, "max_detections", "100", int, 1, None)

        self.session, path = open_session(self.name, args, config)

        # Fail the load, not every request, when the file does not fit the variant.
        (onnx_in,) = self.session.get_inputs()
        self.onnx_input = onnx_in.name
        net_shape = tuple(onnx_in.shape[1:])
        if (len(net_shape) != 3 or net_shape[0] != 3 or net_shape[1] != net_shape[2]
                or not isinstance(net_shape[1], int)):
            raise pb_utils.TritonModelException(f"{self.name}: {path} input {onnx_in.shape} is not [N,3,S,S]")
        self.net_size = net_shape[1]
        if self.variant == "yolov8" and self.net_size != self.input_size:
            raise pb_utils.TritonModelException(
                f"{self.name}: {path} input {onnx_in.shape} does not match config dims {list(self.item_shape)}")
        if self.variant == "yolox":
            self.grid, self.strides = detection.yolox_grid(self.net_size)
            anchors = self.session.get_outputs()[0].shape[1]
            if anchors != self.grid.shape[0]:
                raise pb_utils.TritonModelException(
                    f"{self.name}: {path} has {anchors} anchors, "
                    f"a YOLOX grid of {self.net_size} has {self.grid.shape[0]}")

    def _check(self, array):
        if array is None:
            return f"missing input '{self.input_name}'"
        if array.dtype != np.float32:
            return f"input '{self.input_name}' must be FP32, got {array.dtype}"
        if array.ndim != 4 or tuple(array.shape[1:]) != self.item_shape:
            return (f"input '{self.input_name}' must have shape [N,{','.join(map(str, self.item_shape))}],"
                    f" got {list(array.shape)}")
        if array.shape[0] < 1:
            return "empty batch"
        bad = [i for i in range(array.shape[0]) if not np.isfinite(array[i]).all()]
        if bad:
            return f"input '{self.input_name}' holds NaN or infinite values (images {bad})"
        return None

    def detect(self, image):
        """One [3,S,S] letterbox image -> (boxes [K,4], scores [K], classes [K]) after NMS.
        Image by image: both staged ONNX files have a fixed batch of 1."""
        if self.variant == "yolov8":
            raw = self.session.run(None, {self.onnx_input: image[None]})[0][0]
            boxes, scores, classes = detection.decode_yolov8(raw, self.score_threshold)
        else:
            net_input = detection.to_yolox_input(image, self.net_size)
            raw = self.session.run(None, {self.onnx_input: net_input[None]})[0][0]
            boxes, scores, classes = detection.decode_yolox(raw, self.grid, self.strides, self.score_threshold)
            boxes *= self.input_size / self.net_size
        keep = detection.nms(boxes, scores, classes, self.nms_iou, self.max_detections)
        return boxes[keep], scores[keep], classes[keep]

    def _respond(self, array):
        counts, (boxes, scores, classes) = padded_rows(
            [self.detect(image) for image in array], [(np.float32, (4,)), (np.float32, ()), (np.int32, ())])
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("num_dets", counts),
            pb_utils.Tensor("det_boxes", boxes),
            pb_utils.Tensor("det_scores", scores),
            pb_utils.Tensor("det_classes", classes),
        ])

    def execute(self, requests):
        return answer_each(self.name, requests, self.input_name, self._check, self._respond)
