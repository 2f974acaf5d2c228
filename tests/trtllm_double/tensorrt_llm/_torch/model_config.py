"""ModelConfig.from_pretrained: every model_kwargs entry becomes a pretrained-config attribute."""
import dataclasses


@dataclasses.dataclass
class ModelConfig:
    pretrained_config: object
    moe_backend: str = "CUTLASS"
    ep_size: int = 1
    use_dp: bool = False

    @classmethod
    def from_pretrained(cls, pretrained_config, model_kwargs=None, **kwargs):
        for key, value in (model_kwargs or {}).items():
            setattr(pretrained_config, key, value)
        return cls(pretrained_config=pretrained_config, **kwargs)
