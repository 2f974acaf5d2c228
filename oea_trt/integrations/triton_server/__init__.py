"""Triton Inference Server model repository for an OEA TensorRT-LLM engine (tensorrtllm backend).

models     the four model configs (ensemble, preprocessing, tensorrt_llm, postprocessing)
pbtxt      our protobuf text-format writer
writer     writes the repository and launch_triton.sh (LD_PRELOAD of the plugin library)
validate   parses every config.pbtxt with Triton's ModelConfig (tritonclient) and checks the ensemble
"""
from oea_trt.integrations.triton_server.models import RepoSettings
from oea_trt.integrations.triton_server.writer import TritonRepoError, engine_info, write_repository

__all__ = ["RepoSettings", "TritonRepoError", "engine_info", "write_repository"]
