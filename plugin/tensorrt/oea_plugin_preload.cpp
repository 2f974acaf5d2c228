// oea_plugin_preload.cpp: static registration, for processes that can only LD_PRELOAD a
// library (Triton's TensorRT-LLM backend has no setting that loads plugins). This file goes
// into liboea_routing_trt_preload.so, which has NO getCreators export: a process must load
// either this library or liboea_routing_trt.so, never both (the registry refuses a creator
// registered twice).
//
// Registration needs libnvinfer's getPluginRegistry, found in this order:
//   1. linked: CMake found libnvinfer (TensorRT_NVINFER_LIBRARY) and made it DT_NEEDED;
//   2. already in the process: the weak reference below resolves (e.g. libnvinfer preloaded
//      first: LD_PRELOAD="libnvinfer.so.10 liboea_routing_trt_preload.so");
//   3. otherwise dlopen("libnvinfer.so.<major>") (or $OEA_TRT_NVINFER_LIBRARY) with
//      RTLD_GLOBAL: the backend's own libnvinfer.so.<major> later resolves to this same copy
//      (same soname), so the creator lands in the registry the engine is loaded with.
#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <string>

#include "NvInferRuntime.h"
#include "oea_routing_creator.h"
#include "oea_routing_plugin.h"

#pragma weak getPluginRegistry

namespace
{

using GetPluginRegistry = nvinfer1::IPluginRegistry* (*) () noexcept;

GetPluginRegistry findGetPluginRegistry(std::string& tried)
{
    if (&getPluginRegistry != nullptr)
    {
        return &getPluginRegistry;
    }
    char const* override_name = std::getenv("OEA_TRT_NVINFER_LIBRARY");
    std::string const name = override_name != nullptr && *override_name != '\0'
        ? override_name
        : "libnvinfer.so." + std::to_string(NV_TENSORRT_MAJOR);
    void* handle = dlopen(name.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (handle == nullptr)
    {
        char const* error = dlerror();
        tried = "dlopen(" + name + "): " + (error != nullptr ? error : "failed");
        return nullptr;
    }
    auto* symbol = reinterpret_cast<GetPluginRegistry>(dlsym(handle, "getPluginRegistry"));
    if (symbol == nullptr)
    {
        tried = name + " has no getPluginRegistry";
    }
    return symbol;
}

struct PreloadRegistrar
{
    PreloadRegistrar()
    {
        std::string tried;
        GetPluginRegistry get_registry = findGetPluginRegistry(tried);
        if (get_registry == nullptr)
        {
            std::fprintf(stderr,
                "[oea_trt] ERROR: liboea_routing_trt_preload.so found no libnvinfer (%s). Put TensorRT's lib directory "
                "on LD_LIBRARY_PATH, set OEA_TRT_NVINFER_LIBRARY=/path/libnvinfer.so.%d, or LD_PRELOAD libnvinfer "
                "first. OeaRouting is NOT registered.\n",
                tried.c_str(), NV_TENSORRT_MAJOR);
            return;
        }
        nvinfer1::IPluginRegistry* registry = get_registry();
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
