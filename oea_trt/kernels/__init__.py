"""The fused OEA routing kernel (plugin/oea_routing.cu) from Python.

library: find / build / load liboea_routing.so (ctypes over plugin/oea_routing.h).
launch:  route_into, the kernel on torch CUDA tensors into caller-provided outputs.
op:      torch.ops.oea_trt.route (torch.compile and CUDA-graph friendly) and route_kernel,
         which returns a RoutingResult like oea_trt.routing.oea_route.
Most callers want oea_trt.dispatch.route, which picks the kernel on CUDA tensors.
"""
from .library import KernelUnavailable, load_library
from .launch import route_into, workspace_bytes
from .op import route_kernel

__all__ = ["KernelUnavailable", "load_library", "route_into", "route_kernel", "workspace_bytes"]
