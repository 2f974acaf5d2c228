"""One module per `oea-trt` subcommand (see oea_trt/cli/__init__.py for the interface)."""
