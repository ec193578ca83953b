"""Triton Python-backend model (KIND_GPU): returns its inputs unchanged, as the next stage
of an ensemble after box_embed. Inputs are kept where Triton delivers them
(FORCE_CPU_ONLY_INPUT_TENSORS "no"), and the memory each arrived in is logged once per
input and kind, so a check can see box_embed writing its outputs into GPU buffers.
"""
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.name = config["name"]
        self.pairs = [(i["name"], o["name"]) for i, o in zip(config["input"], config["output"])]
        self.seen = set()

    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = []
            for in_name, out_name in self.pairs:
                tensor = pb_utils.get_input_tensor_by_name(request, in_name)
                where = "CPU" if tensor.is_cpu() else "GPU"
                if (in_name, where) not in self.seen:
                    self.seen.add((in_name, where))
                    pb_utils.Logger.log_info(f"{self.name}: input '{in_name}' arrived in {where} memory")
                outputs.append(pb_utils.Tensor(out_name, tensor.as_numpy()) if tensor.is_cpu()
                               else pb_utils.Tensor.from_dlpack(out_name, tensor.to_dlpack()))
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
