"""`oea-trt triton-repo`: a Triton model repository (tensorrtllm backend) for an OEA engine."""
from __future__ import annotations

import os

from oea_trt.cli import CLIError
from oea_trt.cli.types import port, positive_int
from oea_trt.inputs import check_engine_dir, check_output_dir, check_tokenizer_dir

NAME = "triton-repo"
ORDER = 40
HELP = "write a Triton model repository + launch script serving an OEA TensorRT-LLM engine"
DESCRIPTION = (
    "Write OUT/model_repository with ensemble, preprocessing, tensorrt_llm and postprocessing "
    "models for Triton's tensorrtllm backend (in-flight batching) pointing at ENGINE_DIR, and "
    "OUT/launch_triton.sh, which LD_PRELOADs the OEA plugin library (TensorRT-LLM engines do not "
    "embed plugins) and starts tritonserver. Query it at /v2/models/ensemble/generate with "
    '{"text_input": ..., "max_tokens": ...}.'
)


def add_arguments(p):
    p.add_argument("engine_dir", metavar="ENGINE_DIR", help="engine directory written by `oea-trt build`")
    p.add_argument("--tokenizer-dir", required=True, metavar="HF_DIR", help="HF model directory with the tokenizer")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT", help="where the repository and script go")
    p.add_argument("--max-batch-size", type=positive_int, help="Triton max_batch_size (default: the engine's)")
    p.add_argument("--streaming", action="store_true", help="decoupled models: stream tokens as they are generated")
    p.add_argument("--kv-cache-free-gpu-mem-fraction", type=float, default=0.9,
                   help="share of free GPU memory the KV cache takes, in (0, 1]")
    p.add_argument("--batch-scheduler-policy", default="guaranteed_no_evict",
                   choices=["guaranteed_no_evict", "max_utilization"], help="in-flight batching admission policy")
    p.add_argument("--enable-chunked-context", action="store_true", help="split long prompts into chunks")
    p.add_argument("--plugin-library", metavar="SO",
                   help="OEA plugin library the launch script preloads (default: the one in ENGINE_DIR/oea_config.json)")
    p.add_argument("--http-port", type=port, default=8000, help="Triton's HTTP/REST port")
    p.add_argument("--grpc-port", type=port, default=8001, help="Triton's gRPC port")
    p.add_argument("--metrics-port", type=port, default=8002, help="Triton's Prometheus metrics port")
    p.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                   help="replace a non-empty OUT (--force: the old name)")
    p.add_argument("--no-validate", action="store_true",
                   help="skip parsing the written configs with Triton's ModelConfig (needs tritonclient)")


def run(args) -> int:
    from oea_trt.integrations.triton_server import RepoSettings, TritonRepoError, engine_info, write_repository
    from oea_trt.integrations.triton_server.writer import default_plugin_library

    check_engine_dir(args.engine_dir, "ENGINE_DIR")
    check_tokenizer_dir(args.tokenizer_dir, "--tokenizer-dir")
    check_output_dir(args.output_dir, "--output-dir")
    try:
        info = engine_info(args.engine_dir)
        if info.oea is None:
            print(f"warning: {args.engine_dir} has no oea_config.json; was it built by `oea-trt build`?", flush=True)
        mbs = args.max_batch_size or info.max_batch_size or 64
        if info.max_batch_size and mbs > info.max_batch_size:
            raise CLIError(f"--max-batch-size must not exceed the engine's max_batch_size={info.max_batch_size}, got {mbs}")
        settings = RepoSettings(
            engine_dir=os.path.abspath(args.engine_dir), tokenizer_dir=os.path.abspath(args.tokenizer_dir),
            max_batch_size=mbs, max_input_len=info.max_input_len, decoupled=args.streaming,
            kv_cache_free_gpu_mem_fraction=args.kv_cache_free_gpu_mem_fraction,
            batch_scheduler_policy=args.batch_scheduler_policy, enable_chunked_context=args.enable_chunked_context,
            world_size=info.world_size,
        )
        plugin = args.plugin_library or default_plugin_library(info)
        written = write_repository(args.output_dir, settings, plugin_library=plugin, http_port=args.http_port,
                                   grpc_port=args.grpc_port, metrics_port=args.metrics_port, force=args.overwrite)
    except TritonRepoError as exc:
        raise CLIError(str(exc)) from None
    for what, path in written.items():
        print(f"wrote {path}")
    if not args.no_validate:
        try:
            from oea_trt.integrations.triton_server.validate import RepoValidationError, validate_repository
            configs = validate_repository(os.path.join(args.output_dir, "model_repository"))
        except ImportError as exc:
            print(f"note: not validated ({exc})")
        except RepoValidationError as exc:
            raise CLIError(f"written repository is invalid: {exc}") from None
        else:
            print(f"validated {len(configs)} model configs with Triton's ModelConfig: {', '.join(sorted(configs))}")
    if not plugin:
        print("note: no plugin library known; set OEA_PLUGIN_LIBRARY before running launch_triton.sh")
    print(f"start: {os.path.join(args.output_dir, 'launch_triton.sh')}")
    return 0
