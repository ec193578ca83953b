"""Test-only encoder: sleeps `sleep_s` seconds per execute, then answers zero embeddings."""
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.sleep_s = float(config["parameters"]["sleep_s"]["string_value"])

    def execute(self, requests):
        time.sleep(self.sleep_s)
        responses = []
        for request in requests:
            images = pb_utils.get_input_tensor_by_name(request, "images").as_numpy()
            embeddings = np.zeros((images.shape[0], 512), np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("embeddings", embeddings)]))
        return responses
