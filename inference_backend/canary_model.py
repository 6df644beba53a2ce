"""The de-identification canary: a Triton python-backend model that answers with exactly what it
received. The compliance check `deid.phi_models` sends synthetic identifiers through the gateway's
de-identification path to this model and compares the answer with what it sent: whatever comes back
is what reached Triton.

It holds no weights and needs nothing but numpy. The portal loads it (config and this file in the
repository `load` request) with :func:`canary_config`; input `TEXT` (BYTES, any length) is returned
unchanged as output `ECHO`.
"""

from __future__ import annotations

CANARY_MODEL = "sovereign-deid-canary"
CANARY_SIGNATURE = {
    "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [{"name": "ECHO", "datatype": "BYTES", "shape": [-1]}],
}


def canary_config(name: str = CANARY_MODEL) -> dict:
    """The model config of the canary for Triton's repository `load` call."""
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": 0,
        "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [-1]}],
        "output": [{"name": "ECHO", "data_type": "TYPE_STRING", "dims": [-1]}],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
    }


class TritonPythonModel:  # pragma: no cover - runs inside Triton's python backend stub
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils

    def execute(self, requests):
        pb = self.pb
        responses = []
        for request in requests:
            text = pb.get_input_tensor_by_name(request, "TEXT").as_numpy()
            responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor("ECHO", text)]))
        return responses
