"""The embedded Qwen3-MoE LM (128 experts, top-8): config.json, model.safetensors, tokenizer
files and TRAINING.md. Load it with oea_trt.eval.load_model() (no argument)."""
