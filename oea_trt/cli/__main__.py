from oea_trt.cli import entry_point

entry_point()
