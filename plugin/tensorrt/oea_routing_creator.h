// oea_routing_creator.h: the IPluginCreatorV3One of OeaRouting. One instance per process
// (creatorInstance), shared by the getCreators export and the LD_PRELOAD registrar.
#pragma once

#include "NvInferRuntime.h"

namespace oea_trt
{

class OeaRoutingCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    // kBUILD: fields as given. kRUNTIME (engine load): the engine's stored fields, then the
    // process's load-time k0 override (oeaSetK0Override or OEA_TRT_K0 / OEA_TRT_K0_SCHEDULE,
    // oea_k0_override.h). nullptr + a logged error on any invalid field.
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
};

OeaRoutingCreator& creatorInstance() noexcept;

} // namespace oea_trt
