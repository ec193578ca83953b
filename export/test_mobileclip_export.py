"""MobileCLIP2-S2 export (export/mobileclip.py), checked on CPU with the real architecture and
random weights: ONNX Runtime equals PyTorch, the ONNX tensors are those of the model configs,
the tokenizer ids are the ones the gateway's clip-tokenizer is tested against, and a
checkpoint file is loaded by the same code. Run by scripts/verify_export.sh (torch lives in
.cache/export-venv, not in the test venv)."""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

EXPORT_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(EXPORT_DIR)
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))
sys.path.insert(0, EXPORT_DIR)

import gen_gpu_repository  # noqa: E402
import mobileclip  # noqa: E402
import model_config as mc  # noqa: E402

TOKEN_FIXTURE = os.path.join(REPO_ROOT, "clip-tokenizer", "tests", "fixtures", "open_clip_ids.json")
MAX_ABS = 1e-4
ONNX_DTYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.INT64: "TYPE_INT64"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("mobileclip")
    paths = mobileclip.export(str(out), seed=0)
    image, text = mobileclip.build(seed=0)
    return paths, image, text, out


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _images(n, seed):
    rng = np.random.RandomState(seed)
    base = rng.rand(n, 3, 8, 8).astype(np.float32)
    up = np.repeat(np.repeat(base, 32, axis=2), 32, axis=3)
    return np.clip(up + 0.1 * rng.rand(n, 3, 256, 256).astype(np.float32), 0, 1)


def test_image_tower_onnx_runtime_equals_pytorch(exported):
    paths, image, _text, _out = exported
    session = _session(paths["clip_image"])
    for n in (1, 5):  # other batch sizes than the one traced: the batch is dynamic
        x = _images(n, n)
        with torch.no_grad():
            want = image(torch.from_numpy(x)).numpy()
        (got,) = session.run(["embeddings"], {"images": x})
        assert got.shape == (n, 512)
        assert np.abs(got - want).max() <= MAX_ABS, np.abs(got - want).max()
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # (With open_clip's random initialisation the image embedding hardly depends on the photo,
    # cosine > 0.9999 between different ones, so only the equality above says anything here.)


def test_text_tower_onnx_runtime_equals_pytorch(exported):
    paths, _image, text, _out = exported
    tok = mobileclip.tokenizer()
    tokens = tok(["a photo of a dog", "a photo of a cat", "an old red car parked by the sea at night"])
    with torch.no_grad():
        want = text(tokens).numpy()
    (got,) = _session(paths["clip_text"]).run(["embeddings"], {"tokens": tokens.numpy()})
    assert got.shape == (3, 512)
    assert np.abs(got - want).max() <= MAX_ABS, np.abs(got - want).max()
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert got[0] @ got[1] < 0.9999


def _onnx_signature(path):
    model = onnx.load(path, load_external_data=False)
    def sig(values):
        return {v.name: (ONNX_DTYPES[v.type.tensor_type.elem_type],
                         [d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim]) for v in values}
    return model, sig(model.graph.input), sig(model.graph.output)


@pytest.mark.parametrize("name", ["clip_image", "clip_text"])
def test_onnx_tensors_are_the_configs(exported, name):
    paths = exported[0]
    model, inputs, outputs = _onnx_signature(paths[name])
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    cpu_text = open(os.path.join(REPO_ROOT, "model_repository", name, "config.pbtxt")).read()
    for config in (mc.parse(cpu_text), gen_gpu_repository.gpu_config(name)[0]):
        assert int(config.get("max_batch_size")) > 0
        for field, onnx_side in (("input", inputs), ("output", outputs)):
            want = {t.get("name"): (t.get("data_type"), t.get("dims")) for t in config.all(field)}
            got = {k: (dtype, dims[1:]) for k, (dtype, dims) in onnx_side.items()}
            assert got == want, (name, field)
            assert all(not dims[0].isdigit() for _, dims in onnx_side.values()), "batch dim must be dynamic"


def test_tokenizer_ids_are_open_clips(exported):
    # The fixture holds open_clip's SimpleTokenizer ids; the gateway's clip-tokenizer crate is
    # tested against it (clip-tokenizer/tests/reference_ids.rs). MobileCLIP2-S2's tokenizer
    # must give exactly those ids.
    with open(TOKEN_FIXTURE) as f:
        cases = json.load(f)["cases"]
    tok = mobileclip.tokenizer()
    got = tok([c["text"] for c in cases]).tolist()
    assert got == [c["ids"] for c in cases]
    assert len(cases) >= 8


def test_a_checkpoint_file_is_loaded_by_the_same_code(exported):
    paths, image, text, out = exported
    checkpoint = os.path.join(out, "weights.pt")
    # A checkpoint as open_clip saves one: the unfused model's state dict (seed 0).
    torch.manual_seed(0)
    import open_clip
    torch.save(open_clip.create_model(mobileclip.MODEL).state_dict(), checkpoint)
    loaded_image, loaded_text = mobileclip.build(checkpoint=checkpoint, seed=123)  # another seed: weights from the file
    other_image, _ = mobileclip.build(seed=123)
    x = torch.from_numpy(_images(2, 3))
    tokens = mobileclip.tokenizer()(["a photo of a dog"])
    with torch.no_grad():
        assert torch.allclose(loaded_image(x), image(x), atol=1e-5)
        assert torch.allclose(loaded_text(tokens), text(tokens), atol=1e-5)
        assert not torch.allclose(other_image(x), image(x), atol=1e-3)
