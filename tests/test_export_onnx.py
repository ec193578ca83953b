"""The ONNX-only export steps (export/yolo_end2end.py, export/face_models.py) on the shipped
weights: what ONNX Runtime can run equals the CPU stand-ins, and the tensors are those of the
GPU repository's configs (scripts/gen_gpu_repository.py). No server, no torch."""
import os
import sys

import cv2
import numpy as np
import onnx
import onnxruntime as ort

import gen_gpu_repository as gen
import model_config as mc
from conftest import REPO_ROOT, SOURCE_REPO

sys.path.insert(0, os.path.join(REPO_ROOT, "export"))
sys.path.insert(0, os.path.join(SOURCE_REPO, "yolo", "1"))

import detection  # noqa: E402
import face_models  # noqa: E402
import yolo_end2end  # noqa: E402
from coco_detection import load_photo  # noqa: E402

SHARED = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "models"))
YOLO_RAW = os.path.join(SHARED, "yolov8n_int8", "yolov8n_int8.onnx")
FACE_ENCODER = os.path.join(SHARED, "mobilefacenet", "mobilefacenet.onnx")
DTYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT32: "TYPE_INT32"}
PHOTOS = ["000000000139.jpg", "000000000802.jpg", "000000005001.jpg"]


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _signature(values):
    return {v.name: (DTYPES[v.type.tensor_type.elem_type],
                     [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim][1:]) for v in values}


def _config_signature(config, field):
    return {t.get("name"): (t.get("data_type"), t.get("dims")) for t in config.all(field)}


def _yolo_input(name):
    image = cv2.resize(load_photo(name), (640, 640), interpolation=cv2.INTER_LINEAR)
    return (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]


def test_yolo_end2end_tensors_and_nms_settings(tmp_path):
    out = tmp_path / "yolo_end2end.onnx"
    params = yolo_end2end.convert(YOLO_RAW, str(out))
    model = onnx.load(str(out))
    config, _ = gen.gpu_config("yolo")
    assert _signature(model.graph.input) == _config_signature(config, "input")
    assert _signature(model.graph.output) == _config_signature(config, "output")
    (nms,) = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nms.attribute}
    assert attrs["max_output_boxes"] == int(params["max_detections"]) == 100
    assert abs(attrs["score_threshold"] - float(params["score_threshold"])) < 1e-7
    assert abs(attrs["iou_threshold"] - float(params["nms_iou"])) < 1e-7
    assert attrs["box_coding"] == 0 and attrs["class_agnostic"] == 0 and attrs["background_class"] == -1
    assert attrs["score_activation"] == 0  # the head's class scores are already sigmoid


def test_yolo_end2end_candidates_give_the_stand_ins_detections(tmp_path):
    # ONNX Runtime runs everything before the plugin; the plugin's documented semantics (per
    # class greedy NMS over candidates above the threshold, best first, K at most) are then
    # applied with the stand-in's own NMS. The detections must be the stand-in's.
    out = tmp_path / "yolo_end2end.onnx"
    params = yolo_end2end.convert(YOLO_RAW, str(out))
    thr, iou, k = float(params["score_threshold"]), float(params["nms_iou"]), int(params["max_detections"])
    cut = _session(yolo_end2end.pre_nms(onnx.load(str(out))))
    raw = _session(onnx.load(YOLO_RAW))
    found = 0
    for name in PHOTOS:
        x = _yolo_input(name)
        boxes, scores = cut.run([yolo_end2end.BOXES, yolo_end2end.SCORES], {"images": x})
        head = raw.run(["output0"], {"images": x})[0][0]
        # Every anchor keeps only its best class.
        assert ((scores[0] > 0).sum(axis=1) <= 1).all()
        anchor, cls = np.nonzero(scores[0] >= thr)
        picked = detection.nms(boxes[0][anchor], scores[0][anchor, cls], cls, iou, k)
        got = (boxes[0][anchor][picked], scores[0][anchor, cls][picked], cls[picked])
        b, s, c = detection.decode_yolov8(head, thr)
        keep = detection.nms(b, s, c, iou, k)
        np.testing.assert_allclose(got[0], b[keep], atol=1e-3)
        np.testing.assert_allclose(got[1], s[keep], atol=1e-6)
        np.testing.assert_array_equal(got[2], c[keep])
        found += len(keep)
    assert found >= 5  # real photos with real objects, not an empty comparison


def test_face_encoder_renamed_equals_the_shipped_model(tmp_path):
    out = tmp_path / "face_encoder.onnx"
    face_models.face_encoder(FACE_ENCODER, str(out))
    model = onnx.load(str(out))
    config, _ = gen.gpu_config("face_encoder")
    assert _signature(model.graph.input) == _config_signature(config, "input")
    assert _signature(model.graph.output) == _config_signature(config, "output")
    x = np.random.RandomState(0).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)
    want = _session(onnx.load(FACE_ENCODER)).run(["embeddings"], {"input": x})[0]
    got = _session(model).run(["embeddings"], {"faces": x})[0]
    np.testing.assert_array_equal(got, want)
    assert mc.parameters(mc.parse(open(os.path.join(SOURCE_REPO, "face_encoder", "config.pbtxt")).read())
                         )["l2_normalize"] == "false"  # the plan's raw output is what the stand-in returns


def test_exported_clip_towers_replace_the_stand_ins_and_back(tmp_path):
    # scripts/run.sh CLIP_ONNX_DIR=DIR links the exported towers; gen_encoders restores the stand-ins.
    import gen_encoders
    import link_models
    exported = tmp_path / "onnx"
    exported.mkdir()
    for name in ("clip_image", "clip_text"):
        (exported / f"{name}.onnx").write_bytes(f"exported {name}".encode())
        (tmp_path / "repo" / name / "1").mkdir(parents=True)
    link_models.link_clip(str(exported), str(tmp_path / "repo"))
    image = tmp_path / "repo" / "clip_image" / "1" / "model.onnx"
    assert image.is_symlink() and image.read_bytes() == b"exported clip_image"
    assert gen_encoders.generate(out=str(image))
    assert not image.is_symlink() and onnx.load(str(image)).graph.input[0].name == "images"
    assert (exported / "clip_image.onnx").read_bytes() == b"exported clip_image"  # the export is left alone
