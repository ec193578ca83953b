#!/usr/bin/env python3
"""Turn a YOLOv8 ONNX export (raw head) into the end2end detector the GPU `yolo` model serves.

    python export/yolo_end2end.py RAW.onnx OUT.onnx

RAW.onnx is what the operator's own Ultralytics install writes (Ultralytics is AGPL-3.0:
this project neither ships nor imports it), e.g.

    yolo export model=yolov8n.pt format=onnx opset=17 dynamic=True simplify=True

input `images` [N,3,640,640], output `output0` [N,4+C,A] (cx, cy, w, h, C sigmoid class
scores). Appended here, with onnx only: the head transposed, boxes to corners, each anchor's
scores reduced to its best class (as the CPU stand-in decodes), then TensorRT's
EfficientNMS_TRT plugin (per-class NMS) with the score threshold, IoU and detection count of
model_repository/yolo/config.pbtxt. Outputs: num_dets INT32 [N,1], det_boxes FP32 [N,K,4]
(x1, y1, x2, y2 in letterbox pixels), det_scores FP32 [N,K], det_classes INT32 [N,K]: the
tensors of the GPU config. ONNX Runtime cannot run the plugin node; TensorRT builds it.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

import model_config as mc  # noqa: E402

# Intermediate tensors, also what the check runs ONNX Runtime up to (everything before the plugin).
BOXES, SCORES = "nms_boxes", "nms_scores"
OUTPUTS = ("num_dets", "det_boxes", "det_scores", "det_classes")


def cpu_parameters() -> dict[str, str]:
    with open(os.path.join(REPO_ROOT, "model_repository", "yolo", "config.pbtxt")) as f:
        return mc.parameters(mc.parse(f.read()))


def end2end(raw: onnx.ModelProto, score_threshold: float, iou: float, max_detections: int) -> onnx.ModelProto:
    g = raw.graph
    (head,) = g.output
    batch = head.type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param or batch.dim_value or "N"
    g.initializer.extend([
        numpy_helper.from_array(np.array([value], np.int64), name)
        for name, value in (("e2e_0", 0), ("e2e_2", 2), ("e2e_4", 4), ("e2e_end", 2**62))
    ] + [numpy_helper.from_array(np.array(0.5, np.float32), "e2e_half")])
    classes = head.type.tensor_type.shape.dim[1].dim_value - 4
    if classes <= 0:
        raise ValueError(f"{head.name}: the class count (dim 1 = 4 + C) must be static")
    g.initializer.append(numpy_helper.from_array(np.arange(classes, dtype=np.int64), "e2e_class_ids"))
    nodes = [
        helper.make_node("Transpose", [head.name], ["e2e_rows"], perm=[0, 2, 1]),  # [N,A,4+C]
        helper.make_node("Slice", ["e2e_rows", "e2e_0", "e2e_2", "e2e_2"], ["e2e_centre"]),  # last axis
        helper.make_node("Slice", ["e2e_rows", "e2e_2", "e2e_4", "e2e_2"], ["e2e_size"]),
        helper.make_node("Mul", ["e2e_size", "e2e_half"], ["e2e_half_size"]),
        helper.make_node("Sub", ["e2e_centre", "e2e_half_size"], ["e2e_top_left"]),
        helper.make_node("Add", ["e2e_centre", "e2e_half_size"], ["e2e_bottom_right"]),
        helper.make_node("Concat", ["e2e_top_left", "e2e_bottom_right"], [BOXES], axis=2),  # [N,A,4]
        helper.make_node("Slice", ["e2e_rows", "e2e_4", "e2e_end", "e2e_2"], ["e2e_cls"]),  # [N,A,C]
        # One class per anchor: its best, the first on a tie, as the stand-in's argmax.
        helper.make_node("ArgMax", ["e2e_cls"], ["e2e_best"], axis=2, keepdims=1),  # [N,A,1]
        helper.make_node("Equal", ["e2e_class_ids", "e2e_best"], ["e2e_is_best"]),
        helper.make_node("Cast", ["e2e_is_best"], ["e2e_best_mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["e2e_cls", "e2e_best_mask"], [SCORES]),
        helper.make_node("EfficientNMS_TRT", [BOXES, SCORES], list(OUTPUTS), domain="TRT",
                         plugin_version="1", background_class=-1, box_coding=0, score_activation=0,
                         class_agnostic=0, iou_threshold=float(iou), score_threshold=float(score_threshold),
                         max_output_boxes=int(max_detections)),
    ]
    g.node.extend(nodes)
    del g.output[:]
    k = int(max_detections)
    g.output.extend([
        helper.make_tensor_value_info("num_dets", TensorProto.INT32, [batch_dim, 1]),
        helper.make_tensor_value_info("det_boxes", TensorProto.FLOAT, [batch_dim, k, 4]),
        helper.make_tensor_value_info("det_scores", TensorProto.FLOAT, [batch_dim, k]),
        helper.make_tensor_value_info("det_classes", TensorProto.INT32, [batch_dim, k]),
    ])
    if not any(o.domain == "TRT" for o in raw.opset_import):
        raw.opset_import.append(helper.make_opsetid("TRT", 1))
    return raw


def pre_nms(model: onnx.ModelProto) -> onnx.ModelProto:
    """The end2end graph cut before the plugin: what ONNX Runtime can check."""
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    g = cut.graph
    keep = [n for n in g.node if n.op_type != "EfficientNMS_TRT"]
    del g.node[:]
    g.node.extend(keep)
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(BOXES, TensorProto.FLOAT, None),
                     helper.make_tensor_value_info(SCORES, TensorProto.FLOAT, None)])
    del cut.opset_import[:]
    cut.opset_import.extend(o for o in model.opset_import if o.domain != "TRT")
    return cut


def convert(src: str, dst: str) -> dict[str, str]:
    params = cpu_parameters()
    model = end2end(onnx.load(src), float(params["score_threshold"]), float(params["nms_iou"]),
                    int(params["max_detections"]))
    onnx.save(model, dst)
    return params


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("raw", help="YOLOv8 ONNX with the raw head (output0 [N,4+C,A])")
    p.add_argument("out", help="end2end ONNX for scripts/build_engines.sh (yolo_end2end.onnx)")
    a = p.parse_args(argv)
    params = convert(a.raw, a.out)
    print(f"wrote {a.out}: EfficientNMS score >= {params['score_threshold']}, IoU {params['nms_iou']}, "
          f"{params['max_detections']} detections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
