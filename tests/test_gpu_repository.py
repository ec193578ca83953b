"""The GPU model repository generated from model_repository/ (scripts/gen_gpu_repository.py)
agrees with the CPU one on every tensor the gateway and the backends use (no GPU needed)."""
import os

import pytest

import gen_gpu_repository as gen
import model_config as mc
from conftest import SOURCE_REPO
from test_repository import _queue_policy

SHARED = os.path.normpath(os.path.join(SOURCE_REPO, "..", "..", "shared"))

# Tensor fields both variants must agree on (the gateway's requests, ensembles' maps, box_embed's
# encoder checks all read them).
FIELDS = ("data_type", "optional", "allow_ragged_batch")
PLAN_MODELS = {"clip_image", "clip_text", "yolo", "face_encoder"}
GPU_INSTANCE_MODELS = PLAN_MODELS | {"box_embed"}


@pytest.fixture(scope="module")
def gpu_repo(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("gpu") / "model_repository_gpu")
    gen.generate(out, shared_dir=SHARED)
    return out


def _read(repo, model):
    with open(os.path.join(repo, model, "config.pbtxt")) as f:
        return f.read()


def _models(repo):
    return sorted(d for d in os.listdir(repo) if os.path.isfile(os.path.join(repo, d, "config.pbtxt")))


def test_config_text_round_trips():
    for model in _models(SOURCE_REPO):
        parsed = mc.parse(_read(SOURCE_REPO, model))
        assert mc.parse(mc.dumps(parsed)) == parsed, model
    # What the parser reads is what Triton reads: spot values from the files.
    yolo = mc.parse(_read(SOURCE_REPO, "yolo"))
    assert mc.tensors(yolo, "input")["images"].get("dims") == ["3", "640", "640"]
    assert mc.parameters(yolo)["max_detections"] == "100"


def test_both_variants_have_the_same_models(gpu_repo):
    assert _models(gpu_repo) == _models(SOURCE_REPO)
    for model in _models(gpu_repo):
        assert os.path.isdir(os.path.join(gpu_repo, model, "1")), model
        assert mc.parse(_read(gpu_repo, model)).get("name") == model


def test_python_backends_get_their_weights_and_code(gpu_repo):
    # face_detect stays a Python backend: its code and the SCRFD weights are in the repository
    # itself (no links out of it), so the folder can be mounted into a container alone.
    version = os.path.join(gpu_repo, "face_detect", "1")
    for name in ("model.py", "scrfd.py", "detection.py", "onnx_stand_in.py", "model.onnx"):
        assert os.path.isfile(os.path.join(version, name)) and not os.path.islink(os.path.join(version, name)), name
    with open(os.path.join(version, "model.onnx"), "rb") as a, \
            open(os.path.join(SHARED, "models", "scrfd_500m_bnkps", "scrfd_500m_bnkps.onnx"), "rb") as b:
        assert a.read() == b.read()
    assert os.listdir(os.path.join(gpu_repo, "clip_image", "1")) == []  # plans are built at deploy time


def test_every_tensor_agrees_in_name_dtype_and_dims(gpu_repo):
    problems = []
    for model in _models(SOURCE_REPO):
        cpu, gpu = mc.parse(_read(SOURCE_REPO, model)), mc.parse(_read(gpu_repo, model))
        if cpu.get("max_batch_size") != gpu.get("max_batch_size"):
            problems.append(f"{model}: max_batch_size {cpu.get('max_batch_size')} vs {gpu.get('max_batch_size')}")
        for field in ("input", "output"):
            a, b = mc.tensors(cpu, field), mc.tensors(gpu, field)
            if list(a) != list(b):
                problems.append(f"{model} {field}s: {list(a)} vs {list(b)}")
                continue
            for name, t in a.items():
                u = b[name]
                for key in FIELDS:
                    if t.get(key) != u.get(key):
                        problems.append(f"{model}.{name} {key}: {t.get(key)} vs {u.get(key)}")
                da, db = t.get("dims"), u.get("dims")
                # A fixed size on the GPU where the CPU stand-in varies (-1) fits every consumer.
                if len(da) != len(db) or any(x != y and not (x == "-1" and int(y) > 0) for x, y in zip(da, db)):
                    problems.append(f"{model}.{name} dims: {da} vs {db}")
        if cpu.get("platform") == "ensemble" and cpu != gpu:
            problems.append(f"{model}: the ensemble differs")
    assert not problems, "\n".join(problems)


def test_gpu_platforms_and_instances(gpu_repo):
    for model in _models(gpu_repo):
        gpu = mc.parse(_read(gpu_repo, model))
        if gpu.get("platform") == "ensemble":
            continue
        kinds = {g.get("kind") for g in gpu.all("instance_group")}
        if model in GPU_INSTANCE_MODELS:
            assert kinds == {"KIND_GPU"}, (model, kinds)
        if model in PLAN_MODELS:
            assert gpu.get("platform") == "tensorrt_plan" and gpu.get("backend") is None, model
            assert not mc.parameters(gpu), (model, "onnxruntime parameters left on a plan")
            names = {e.get("key"): e.get("value") for e in gpu.all("cc_model_filenames")}
            assert names["9.0"] == "model.sm90.plan" and names["8.0"] == "model.sm80.plan", names
            assert gpu.get("dynamic_batching").get("preferred_batch_size")[-1] == gpu.get("max_batch_size")
    # preprocess and face_align refuse KIND_GPU at load (no GPU path): they must stay on the CPU.
    for model in ("preprocess", "face_align"):
        kinds = {g.get("kind") for g in mc.parse(_read(gpu_repo, model)).all("instance_group")}
        assert kinds == {"KIND_CPU"}, (model, kinds)


def test_gpu_queues_are_bounded_and_encoders_honour_caller_timeouts(gpu_repo):
    for model in _models(gpu_repo):
        text = _read(gpu_repo, model)
        if 'platform: "ensemble"' in text:
            continue
        policy = _queue_policy(text)
        assert policy and int(policy["max_queue_size"]) > 0 and policy["timeout_action"] == "REJECT", model
        params = mc.parameters(mc.parse(text))
        if "encoder_model" in params:
            enc = _queue_policy(_read(gpu_repo, params["encoder_model"]))
            assert enc["allow_timeout_override"] == "true", model
            assert int(enc["default_timeout_microseconds"]) > int(params["encoder_timeout_ms"]) * 1000


def test_box_embed_encoder_contract_holds_on_the_gpu(gpu_repo):
    # box_embed checks at load that its encoder takes [3, crop, crop] and returns [embedding_dim].
    for model in ("box_embed", "face_align"):
        params = mc.parameters(mc.parse(_read(gpu_repo, model)))
        enc = mc.parse(_read(gpu_repo, params["encoder_model"]))
        side = params.get("crop_size", params.get("face_size"))
        assert mc.tensors(enc, "input")[params["encoder_input"]].get("dims") == ["3", side, side]
        assert mc.tensors(enc, "output")[params["encoder_output"]].get("dims") == [params["embedding_dim"]]


def test_yolo_engine_rows_fit_box_embed(gpu_repo):
    yolo = mc.parse(_read(gpu_repo, "yolo"))
    rows = int(mc.tensors(yolo, "output")["det_boxes"].get("dims")[0])
    assert rows == int(mc.parameters(mc.parse(_read(SOURCE_REPO, "yolo")))["max_detections"])
    assert rows <= int(mc.parameters(mc.parse(_read(gpu_repo, "box_embed")))["max_boxes"])


def test_engine_specs_follow_the_configs():
    specs = {line.split("\t")[0]: line.split("\t") for line in gen.engine_lines()}
    assert set(specs) == PLAN_MODELS
    model, _onnx, shapes, lo, opt, hi, precision = specs["clip_image"]
    assert shapes == "images:3x256x256" and (lo, opt, hi) == ("1", "16", "32") and precision == "fp16"
    assert specs["clip_text"][2] == "tokens:77" and specs["clip_text"][5] == "64"
    assert specs["face_encoder"][2] == "faces:3x112x112"
