"""Model files shipped with oea-trt (package data, no code)."""
