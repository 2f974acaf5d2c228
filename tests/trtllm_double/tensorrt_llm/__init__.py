"""Stand-in for TensorRT-LLM 1.2.1 (tests/trtllm_double/README.md)."""
