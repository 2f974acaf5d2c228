// oea_routing_plugin.cpp: see oea_routing_plugin.h.
#include "oea_routing_plugin.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include <cuda_runtime_api.h>

#include "oea_host_batch.h"
#include "oea_plugin_log.h"
#include "oea_routing.h"

using nvinfer1::DataType;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::PluginTensorDesc;

namespace oea_trt
{
namespace
{

constexpr int32_t kNB_OUTPUTS = 2; // expert_ids, weights

// Programmatic dependent launch (where the GPU has it, sm_90+): the routing kernel waits for the
// kernel before it in the stream ahead of any memory access, so this is safe after whatever
// TensorRT ran last, and it hides part of the launch latency behind that kernel's tail.
constexpr uint32_t kLAUNCH_FLAGS = OEA_LAUNCH_PDL;

bool isLogitsType(DataType type)
{
    return type == DataType::kFLOAT || type == DataType::kHALF || type == DataType::kBF16;
}

int32_t logitsTypeCode(DataType type)
{
    switch (type)
    {
    case DataType::kHALF: return OEA_LOGITS_FP16;
    case DataType::kBF16: return OEA_LOGITS_BF16;
    default: return OEA_LOGITS_FP32;
    }
}

// TensorRT-LLM's builder sets IS_BUILDING=1 while it builds an engine (its plugins skip work
// then). Its timing runs bind every input, host_request_types included, to device memory.
bool isBuildingEngine()
{
    char const* value = std::getenv("IS_BUILDING");
    return value != nullptr && std::strcmp(value, "1") == 0;
}

// A plain TensorRT build (trtexec, no IS_BUILDING) also times the layer with device buffers;
// reading those on the host would crash, so such pointers mean "split unknown". Pageable
// host memory reports cudaMemoryTypeUnregistered. This query neither synchronises nor
// enqueues work, so it is allowed inside CUDA-graph capture.
bool isHostReadable(void const* pointer)
{
    if (pointer == nullptr)
    {
        return false;
    }
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess)
    {
        (void) cudaGetLastError(); // not a CUDA allocation at all: plain host memory
        return true;
    }
    return attributes.type != cudaMemoryTypeDevice;
}

} // namespace

OeaRoutingPlugin::OeaRoutingPlugin(OeaPluginConfig const& config)
    : mConfig(config)
{
}

nvinfer1::IPluginCapability* OeaRoutingPlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* OeaRoutingPlugin::clone() noexcept
{
    return new (std::nothrow) OeaRoutingPlugin(mConfig);
}

char const* OeaRoutingPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* OeaRoutingPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* OeaRoutingPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

int32_t OeaRoutingPlugin::expectedInputs() const noexcept
{
    switch (mConfig.token_kind_mode)
    {
    case kTOKEN_KIND_DEVICE: return 2;
    case kTOKEN_KIND_TRTLLM: return 3;
    default: return 1;
    }
}

bool OeaRoutingPlugin::checkCounts(int32_t nbInputs, int32_t nbOutputs, char const* where) const noexcept
{
    if (nbInputs == expectedInputs() && nbOutputs == kNB_OUTPUTS)
    {
        return true;
    }
    logError(std::string("OeaRouting::") + where + ": token_kind_mode=" + std::to_string(mConfig.token_kind_mode)
        + " takes " + std::to_string(expectedInputs())
        + " input(s) (router_logits[, token_kind | host_request_types, host_context_lengths]) and 2 outputs, got "
        + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
    return false;
}

int32_t OeaRoutingPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t OeaRoutingPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (!checkCounts(nbInputs, nbOutputs, "getOutputDataTypes"))
    {
        return -1;
    }
    if (!isLogitsType(inputTypes[0]))
    {
        logError("OeaRouting: router_logits must be kFLOAT, kHALF or kBF16");
        return -1;
    }
    outputTypes[0] = DataType::kINT32; // expert_ids: MixtureOfExperts accepts ids only as kINT32
    outputTypes[1] = DataType::kFLOAT; // weights: and scales only as kFLOAT
    return 0;
}

int32_t OeaRoutingPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (!checkCounts(nbInputs, nbOutputs, "getOutputShapes"))
    {
        return -1;
    }
    if (inputs[0].nbDims != 2)
    {
        logError("OeaRouting: router_logits must be 2-D [tokens, num_experts], got " + std::to_string(inputs[0].nbDims)
            + " dims");
        return -1;
    }
    if (inputs[0].d[1]->isConstant() && inputs[0].d[1]->getConstantValue() != mConfig.params.num_experts)
    {
        logError("OeaRouting: router_logits has " + std::to_string(inputs[0].d[1]->getConstantValue())
            + " experts in dim 1, field num_experts=" + std::to_string(mConfig.params.num_experts));
        return -1;
    }
    for (int32_t i = 1; i < nbInputs; ++i)
    {
        if (inputs[i].nbDims != 1)
        {
            logError("OeaRouting: input " + std::to_string(i) + " (token kinds) must be 1-D, got "
                + std::to_string(inputs[i].nbDims) + " dims");
            return -1;
        }
    }
    for (int32_t o = 0; o < kNB_OUTPUTS; ++o)
    {
        outputs[o].nbDims = 2;
        outputs[o].d[0] = inputs[0].d[0]; // one row per token, T stays dynamic
        outputs[o].d[1] = exprBuilder.constant(mConfig.params.k_max);
    }
    return 0;
}

bool OeaRoutingPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != expectedInputs() || nbOutputs != kNB_OUTPUTS || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0)
    {
        return isLogitsType(desc.type);
    }
    if (pos == nbInputs + 1)
    {
        return desc.type == DataType::kFLOAT; // weights
    }
    return desc.type == DataType::kINT32; // token kinds / host batch description / expert_ids
}

int32_t OeaRoutingPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (!checkCounts(nbInputs, nbOutputs, "configurePlugin"))
    {
        return -1;
    }
    nvinfer1::Dims const& logits = in[0].desc.dims;
    if (logits.nbDims != 2 || (logits.d[1] >= 0 && logits.d[1] != mConfig.params.num_experts))
    {
        logError("OeaRouting: router_logits must be [tokens, num_experts=" + std::to_string(mConfig.params.num_experts)
            + "]");
        return -1;
    }
    return 0;
}

size_t OeaRoutingPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    if (nbInputs < 1 || inputs[0].max.nbDims != 2)
    {
        return 0;
    }
    // The most tokens any profile allows; enqueue then uses oea_workspace_size(actual T) <= this.
    int64_t const max_tokens = inputs[0].max.d[0] > 0 ? inputs[0].max.d[0] : 0;
    return oea_workspace_size(&mConfig.params, max_tokens);
}

int32_t OeaRoutingPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (!checkCounts(nbInputs, nbOutputs, "onShapeChange"))
    {
        return -1;
    }
    nvinfer1::Dims const& logits = in[0].dims;
    if (logits.nbDims != 2 || logits.d[1] != mConfig.params.num_experts)
    {
        logError("OeaRouting: router_logits must be [tokens, num_experts=" + std::to_string(mConfig.params.num_experts)
            + "]");
        return -1;
    }
    if (mConfig.token_kind_mode == kTOKEN_KIND_DEVICE && (in[1].dims.nbDims != 1 || in[1].dims.d[0] != logits.d[0]))
    {
        logError("OeaRouting: token_kind must be [tokens=" + std::to_string(logits.d[0]) + "], one kind per row");
        return -1;
    }
    return 0;
}

int64_t OeaRoutingPlugin::leadingContextRows(
    PluginTensorDesc const* inputDesc, void const* const* inputs, int64_t num_tokens) noexcept
{
    if (mConfig.token_kind_mode != kTOKEN_KIND_TRTLLM)
    {
        return 0; // all decode (mode 0), or the token_kind tensor decides (mode 1)
    }
    if (isBuildingEngine())
    {
        return num_tokens; // plain top-k for every row; the inputs are not host memory now
    }
    int64_t const num_seq = inputDesc[1].dims.d[0];
    int64_t rows = -1;
    if (inputDesc[2].dims.d[0] == num_seq && isHostReadable(inputs[1]) && isHostReadable(inputs[2]))
    {
        rows = oea_trt::leadingContextRows(static_cast<int32_t const*>(inputs[1]),
            static_cast<int32_t const*>(inputs[2]), num_seq, num_tokens);
    }
    if (rows >= 0)
    {
        return rows;
    }
    if (!mWarnedSplit)
    {
        mWarnedSplit = true;
        logWarning("OeaRouting: host_request_types/host_context_lengths do not describe a packed batch of "
            + std::to_string(num_tokens)
            + " rows (device memory, speculative decoding or padding?): routing every row with plain top-k");
    }
    return num_tokens;
}

int32_t OeaRoutingPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    nvinfer1::Dims const& logits = inputDesc[0].dims;
    if (logits.nbDims != 2 || logits.d[1] != mConfig.params.num_experts || !isLogitsType(inputDesc[0].type))
    {
        logError("OeaRouting::enqueue: router_logits must be [tokens, " + std::to_string(mConfig.params.num_experts)
            + "] kFLOAT/kHALF/kBF16");
        return -1;
    }
    int64_t const num_tokens = logits.d[0];
    int32_t const* token_kind
        = mConfig.token_kind_mode == kTOKEN_KIND_DEVICE ? static_cast<int32_t const*>(inputs[1]) : nullptr;
    int64_t const num_leading_context = leadingContextRows(inputDesc, inputs, num_tokens);
    size_t const workspace_bytes = oea_workspace_size(&mConfig.params, num_tokens);
    cudaError_t const status = oea_route_launch(&mConfig.params, inputs[0], logitsTypeCode(inputDesc[0].type),
        token_kind, num_leading_context, num_tokens, static_cast<int32_t*>(outputs[0]), static_cast<float*>(outputs[1]),
        /*active_mask=*/nullptr, /*num_active=*/nullptr, /*active_ready=*/nullptr, workspace, workspace_bytes,
        kLAUNCH_FLAGS, stream);
    if (status != cudaSuccess)
    {
        logError(std::string("OeaRouting::enqueue: oea_route_launch failed: ") + cudaGetErrorString(status));
        return -1;
    }
    return 0;
}

nvinfer1::IPluginV3* OeaRoutingPlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone(); // no per-context resources: the workspace comes from TensorRT
}

nvinfer1::PluginFieldCollection const* OeaRoutingPlugin::getFieldsToSerialize() noexcept
{
    mSerialized.assign(mConfig);
    return mSerialized.collection();
}

} // namespace oea_trt
