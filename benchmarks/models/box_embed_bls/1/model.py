"""Seed-style per-object embeddings: the baseline that box_embed is benchmarked against.

Built the way the reference implementation's Python BLS stage worked (DESIGN.md sections 2
and 7), on purpose: every request of a dynamic batch is handled on its own with one BLS call
to the encoder; the full-resolution image becomes a float tensor; torchvision's roi_align
crops every box to crop_size^2 (sampling_ratio 2, aligned=True, /255); the crops go through
`.cpu().numpy()` into the BLS request; the answer is zero-padded to [max_boxes, D]. It keeps
the seed's limits too (more boxes than the encoder's max batch fail the image; no validity
output). Only the geometry follows docs/crop-semantics.md (stretch policy, boxes mapped from
letterbox to original pixels and clamped) so that its embeddings can be compared with
box_embed's.
"""
import json
import warnings

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from torch.utils.dlpack import from_dlpack
from torchvision.ops import roi_align


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        self.name = config["name"]
        self.encoder = params["encoder_model"]
        self.encoder_input = params["encoder_input"]
        self.encoder_output = params["encoder_output"]
        self.dim = int(params["embedding_dim"])
        self.max_boxes = int(params["max_boxes"])
        self.crop_size = int(params["crop_size"])
        self.sampling_ratio = int(params["sampling_ratio"])
        torch.set_num_threads(int(params["torch_threads"]))
        if args["model_instance_kind"] == "GPU":
            self.device = torch.device("cuda", int(args["model_instance_device_id"]))
        else:
            self.device = torch.device("cpu")
        # Triton's input buffers are read-only; torch only reads them, so its warning is noise.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

    def execute(self, requests):
        return [self._embed(request) for request in requests]

    def _embed(self, request):
        def tensor(name):
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy()[0]

        image = tensor("original")
        n = int(tensor("num_dets")[0])
        scale, pad_x, pad_y = (float(v) for v in tensor("letterbox"))
        out = np.zeros((1, self.max_boxes, self.dim), np.float32)
        if n > 0:
            h, w = image.shape[:2]
            pixels = torch.from_numpy(image).to(self.device).permute(2, 0, 1).float().div(255).unsqueeze(0)
            boxes = torch.from_numpy(tensor("det_boxes")[:n]).to(self.device)
            pad = torch.tensor([pad_x, pad_y, pad_x, pad_y], device=self.device)
            boxes = (boxes - pad) / scale
            boxes[:, 0::2].clamp_(0, w)
            boxes[:, 1::2].clamp_(0, h)
            rois = torch.cat([torch.zeros((n, 1), device=self.device), boxes], dim=1)
            crops = roi_align(pixels, rois, output_size=self.crop_size, spatial_scale=1.0,
                              sampling_ratio=self.sampling_ratio, aligned=True)
            response = pb_utils.InferenceRequest(
                model_name=self.encoder, requested_output_names=[self.encoder_output],
                inputs=[pb_utils.Tensor(self.encoder_input, crops.cpu().numpy())]).exec()
            if response.has_error():
                return pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"{self.name}: encoder {self.encoder}: {response.error().message()}"))
            emb = pb_utils.get_output_tensor_by_name(response, self.encoder_output)
            # A GPU encoder (tests/gpu/measure_gpu.py) answers in GPU memory, which as_numpy()
            # cannot read; the copy to the host is part of the seed's per-request round trip.
            out[0, :n] = emb.as_numpy() if emb.is_cpu() else from_dlpack(emb.to_dlpack()).cpu().numpy()
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("box_embeddings", out)])
