"""The embedded Qwen3-MoE LM (128 experts, top-8): config.json, model.safetensors, tokenizer
files and TRAINING.md. Load it with oea_trt.eval.load_model() (no argument).

router_traces.pt: its vanilla router logits on held-out text (oea_trt.eval.traces format; 3 MoE
layers x 64 sequences x 32 positions x 128 experts, float32), the recorded routing that
`oea-trt bench moe` times by default next to the synthetic kinds (128 experts and top-8, as the
Qwen3-30B-A3B and 235B-A22B layers). How it was made: TRAINING.md.
"""
import os

ROUTER_TRACES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "router_traces.pt")
