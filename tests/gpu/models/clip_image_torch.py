"""Triton Python-backend model (KIND_GPU): the tiny stand-in image encoder in PyTorch.

The same graph and weights as the ONNX file clip_image serves (scripts/gen_encoders.py),
read from that file, run on the instance's GPU in FP32 without TF32, so it is a GPU
encoder whose outputs match clip_image's. Inputs are taken by DLPack where they arrive in
GPU memory (FORCE_CPU_ONLY_INPUT_TENSORS "no"), outputs are returned as GPU tensors, and
the memory each input arrived in is logged once per kind, so a check can see that
box_embed's GPU instances send crops in GPU memory.
"""
import json
import os

import onnx
import torch
import torch.nn.functional as F
import triton_python_backend_utils as pb_utils
from onnx import numpy_helper
from torch.utils.dlpack import from_dlpack, to_dlpack


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = config["name"]
        (inp,) = config["input"]
        (out,) = config["output"]
        self.input_name, self.output_name = inp["name"], out["name"]
        self.crop_size = int(inp["dims"][-1])
        # KIND_CPU only in check_gpu_instances.py --cpu-dry-run.
        on_gpu = args["model_instance_kind"] == "GPU"
        self.device = torch.device("cuda", int(args["model_instance_device_id"])) if on_gpu else torch.device("cpu")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        weights = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()).to(self.device)
                   for t in onnx.load(path).graph.initializer}
        self.w = weights
        self.pool = self.crop_size // 16
        self.logger = pb_utils.Logger
        self.seen = set()

    def _embed(self, x):
        w = self.w
        pixels = F.avg_pool2d(x - w["centre"], self.pool).flatten(1)
        edges = F.conv2d(x, w["lap"], padding=1, groups=3).abs()
        detail = F.avg_pool2d(edges, self.pool).flatten(1) * w["detail_gain"]
        hidden = torch.tanh(torch.cat([pixels, detail], 1) @ w["w1"] + w["b1"])
        raw = hidden @ w["w2"]
        return raw / torch.clamp(raw.norm(dim=1, keepdim=True), min=float(w["eps"]))

    def execute(self, requests):
        responses = []
        for request in requests:
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            where = "CPU" if tensor.is_cpu() else "GPU"
            if where not in self.seen:
                self.seen.add(where)
                self.logger.log_info(f"{self.name}: input '{self.input_name}' arrived in {where} memory")
            x = (torch.from_numpy(tensor.as_numpy()) if tensor.is_cpu() else from_dlpack(tensor.to_dlpack()))
            x = x.to(self.device, torch.float32)
            if x.ndim != 4 or tuple(x.shape[1:]) != (3, self.crop_size, self.crop_size):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"{self.name}: input must be [N,3,{self.crop_size},{self.crop_size}], got {list(x.shape)}",
                    pb_utils.TritonError.INVALID_ARG)))
                continue
            with torch.no_grad():
                y = self._embed(x).contiguous()
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor.from_dlpack(self.output_name, to_dlpack(y))]))
        return responses
