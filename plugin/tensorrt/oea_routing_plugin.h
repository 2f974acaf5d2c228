// oea_routing_plugin.h: OEA routing as a TensorRT IPluginV3 (name/version/namespace below).
//
// Inputs (token_kind_mode field decides how many; docs/plugin.md):
//   0 router_logits   [T, E]  kFLOAT / kHALF / kBF16, T dynamic
//   1 token_kind      [T]     kINT32, device              (token_kind_mode = 1)
//   1 host_request_types   [num_seq] kINT32, CPU memory   (token_kind_mode = 2)
//   2 host_context_lengths [num_seq] kINT32, CPU memory   (token_kind_mode = 2)
// Outputs: expert_ids [T, k_max] kINT32, weights [T, k_max] kFLOAT (the types TensorRT-LLM's
// MixtureOfExperts plugin takes), all linear. The routing itself is oea_route_launch: the one
// CUDA kernel of the project; this class only adapts TensorRT's calls to it.
#pragma once

#include <string>

#include "NvInferRuntime.h"
#include "oea_plugin_fields.h"

namespace oea_trt
{

constexpr char const* kPLUGIN_NAME = "OeaRouting";
constexpr char const* kPLUGIN_VERSION = "1";
constexpr char const* kPLUGIN_NAMESPACE = "oea_trt";

class OeaRoutingPlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit OeaRoutingPlugin(OeaPluginConfig const& config);
    ~OeaRoutingPlugin() override = default;

    OeaPluginConfig const& config() const noexcept
    {
        return mConfig;
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    int32_t expectedInputs() const noexcept;
    // Rows [0, result) route as context tokens (plain top-k), the rest as decode tokens.
    int64_t leadingContextRows(nvinfer1::PluginTensorDesc const* inputDesc, void const* const* inputs,
        int64_t num_tokens) noexcept;
    bool checkCounts(int32_t nbInputs, int32_t nbOutputs, char const* where) const noexcept;

    OeaPluginConfig mConfig;
    SerializedFields mSerialized;
    bool mWarnedSplit{false};
};

} // namespace oea_trt
