"""The file trtllm-build loads with --model_cls_file (--model_cls_name OEAQwenForCausalLM).

trtllm-build imports this file under the module name "models"; the class itself lives in the
package (oea_trt.integrations.trtllm.model) so that --workers N can pickle it to worker processes by its
importable name. Importing it also loads the OEA plugin library.
"""
from oea_trt.integrations.trtllm.model import OEAQwenForCausalLM  # noqa: F401

__all__ = ["OEAQwenForCausalLM"]
