// oea_plugin_exports.cpp: the entry points IPluginRegistry::loadLibrary looks up (the same
// pair as TensorRT's own "vc" plugin library). Nothing registers itself when this library is
// loaded, so it needs no libnvinfer at link or load time: TensorRT, trtexec
// (--staticPlugins / --setPluginsToSerialize) or the lean runtime load it and register the
// creators they get from getCreators.
#include "NvInferRuntime.h"
#include "oea_plugin_export.h"
#include "oea_plugin_log.h"
#include "oea_routing_creator.h"

extern "C" OEA_TRT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&oea_trt::creatorInstance()};
    nbCreators = 1;
    return creators;
}

extern "C" OEA_TRT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    oea_trt::setLoggerFinder(finder);
}
