"""worker_main, reduced to the steps that decide which model a worker builds: the parent's class
mapping first, then ModelConfig.from_pretrained(model_kwargs=llm_args.model_kwargs), then
MODEL_CLASS_MAPPING[architecture](model_config)."""
from .._torch.model_config import ModelConfig
from .._torch.models.modeling_utils import MODEL_CLASS_MAPPING


def worker_main(pretrained_config, llm_args, _torch_model_class_mapping=None):
    if _torch_model_class_mapping is not None:
        MODEL_CLASS_MAPPING.update(**_torch_model_class_mapping)
    config = ModelConfig.from_pretrained(pretrained_config, model_kwargs=llm_args.model_kwargs,
                                         moe_backend=llm_args.moe_backend, ep_size=llm_args.moe_expert_parallel_size,
                                         use_dp=llm_args.enable_attention_dp)
    return MODEL_CLASS_MAPPING[pretrained_config.architectures[0]](config)
