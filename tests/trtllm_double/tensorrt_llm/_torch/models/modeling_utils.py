"""MODEL_CLASS_MAPPING and register_auto_model: the last registration of a name wins."""
MODEL_CLASS_MAPPING = {}


def register_auto_model(name):
    def decorator(cls):
        MODEL_CLASS_MAPPING[name] = cls
        return cls

    return decorator
