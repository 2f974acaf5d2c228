"""BaseMoeRoutingMethod: apply(router_logits) -> (int32 ids, fp32 weights); top_k per token."""
import torch
from torch import nn


class BaseMoeRoutingMethod(nn.Module):
    def apply(self, router_logits):
        raise NotImplementedError

    @property
    def experts_per_token(self):
        return self.top_k


class RenormalizeMoeRoutingMethod(BaseMoeRoutingMethod):
    def __init__(self, top_k):
        super().__init__()
        self.top_k = top_k

    def apply(self, router_logits):
        values, ids = torch.topk(router_logits.float(), self.top_k, dim=-1)
        return ids.to(torch.int32), torch.softmax(values, dim=-1)
