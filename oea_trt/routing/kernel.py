"""The fused OEA routing kernel (plugin/oea_routing.cu) from Python.

library: find / build (CMake) / load liboea_routing.so (ctypes over plugin/oea_routing.h).
params:  KernelParams, the kernel's parameter record of an OEAConfig (kernel_params).
launch:  route_into, the kernel on torch CUDA tensors into caller-provided outputs.
op:      torch.ops.oea_trt.route (torch.compile and CUDA-graph friendly) and route_kernel,
         which returns a RoutingResult like oea_trt.routing.reference.oea_route.
signal:  the per-device flag by which the routing kernel tells the one-launch MoE kernel that
         the active set is final (route_kernel(..., signal=True)).
Most callers want oea_trt.routing.dispatch.route, which picks the kernel on CUDA tensors.
"""
from oea_trt.routing.library import KernelUnavailable, load_library
from oea_trt.routing.launch import device_supports_pdl, route_into, workspace_bytes
from oea_trt.routing.op import route_kernel
from oea_trt.routing.params import KernelParams, kernel_params
from oea_trt.routing.signal import active_ready_flag

__all__ = ["KernelParams", "KernelUnavailable", "active_ready_flag", "device_supports_pdl", "kernel_params",
           "load_library", "route_into", "route_kernel", "workspace_bytes"]
