// oea_plugin_preload.cpp: static registration, for processes that can only LD_PRELOAD a
// library (Triton's TensorRT-LLM backend has no setting that loads plugins). This file goes
// into liboea_routing_trt_preload.so, which has NO getCreators export: a process must load
// either this library or liboea_routing_trt.so, never both (the registry refuses a creator
// registered twice).
//
// The registrar needs libnvinfer's getPluginRegistry. When CMake found a TensorRT library the
// preload library links it (DT_NEEDED, so preloading it alone is enough); otherwise the symbol
// is a weak reference and libnvinfer must be preloaded first:
//   LD_PRELOAD="libnvinfer.so.10 /path/liboea_routing_trt_preload.so" tritonserver ...
#include <cstdio>

#include "NvInferRuntime.h"
#include "oea_routing_creator.h"
#include "oea_routing_plugin.h"

#pragma weak getPluginRegistry

namespace
{

struct PreloadRegistrar
{
    PreloadRegistrar()
    {
        if (&getPluginRegistry == nullptr)
        {
            std::fprintf(stderr,
                "[oea_trt] ERROR: liboea_routing_trt_preload.so found no libnvinfer in the process; preload it first "
                "(LD_PRELOAD=\"libnvinfer.so.%d <this library>\") or use liboea_routing_trt.so with "
                "IPluginRegistry::loadLibrary. OeaRouting is NOT registered.\n",
                NV_TENSORRT_MAJOR);
            return;
        }
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr || !registry->registerCreator(oea_trt::creatorInstance(), oea_trt::kPLUGIN_NAMESPACE))
        {
            std::fprintf(stderr,
                "[oea_trt] ERROR: could not register %s (version %s, namespace %s); is liboea_routing_trt.so loaded "
                "in this process too? Load only one of the two.\n",
                oea_trt::kPLUGIN_NAME, oea_trt::kPLUGIN_VERSION, oea_trt::kPLUGIN_NAMESPACE);
        }
    }
};

PreloadRegistrar const gRegistrar;

} // namespace
