"""Stand-in package (tests/trtllm_double/README.md)."""
