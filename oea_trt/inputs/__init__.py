"""Every input a user gives, checked once, before any expensive work, by every front end.

    errors.py            InputError: a bad input; the message names it and what would be right
    numbers.py           check_int / parse_int / check_float / parse_float (a bool or float is never an int)
    json_file.py         read_json(path, what, kind): errors name the file
    model_dir.py         check_model_dir(path) -> Qwen3MoeSpec: config, weights, optional tokenizer
    safetensors_file.py  safetensors_shapes(path): header and completeness of one weight file
    tokenizer_dir.py     check_tokenizer_dir(path)
    engine_dir.py        check_engine_dir(path) -> the engine's config.json (an HF directory is refused)
    device.py            check_device(name) -> "cpu" / "cuda[:N]" that exists here
    memory.py            check_fits(bytes, what, fix): refuse sizes that cannot fit, say what would
    outputs.py           check_output_file / check_output_dir first, StagedOutputs to write all-or-nothing
    generation.py        a generation run's prompts, model or engine, backend and lengths (imported on use)
The CLI (oea_trt.cli) prints an InputError as one line and exits with status 2; library callers
(the runtime, examples, benchmarks) raise it to theirs.
"""
from oea_trt.inputs.device import check_device
from oea_trt.inputs.engine_dir import check_engine_dir
from oea_trt.inputs.errors import InputError
from oea_trt.inputs.json_file import read_json
from oea_trt.inputs.memory import available_bytes, check_fits, format_bytes
from oea_trt.inputs.model_dir import check_model_dir, weight_files
from oea_trt.inputs.numbers import check_float, check_int, parse_float, parse_int
from oea_trt.inputs.outputs import StagedOutputs, check_output_dir, check_output_file
from oea_trt.inputs.safetensors_file import safetensors_shapes
from oea_trt.inputs.tokenizer_dir import check_tokenizer_dir

__all__ = ["InputError", "StagedOutputs", "available_bytes", "check_device", "check_engine_dir", "check_fits",
           "check_float", "check_int", "check_model_dir", "check_output_dir", "check_output_file",
           "check_tokenizer_dir", "format_bytes", "parse_float", "parse_int", "read_json", "safetensors_shapes",
           "weight_files"]
