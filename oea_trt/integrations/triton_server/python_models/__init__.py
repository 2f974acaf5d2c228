"""Triton Python-backend models copied into generated repositories as <model>/1/model.py.

They run inside tritonserver (they import triton_python_backend_utils and transformers);
oea_trt never imports them."""
