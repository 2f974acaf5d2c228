"""`python -m oea_trt`: the same as the `oea-trt` command."""
from oea_trt.cli import entry_point

entry_point()
