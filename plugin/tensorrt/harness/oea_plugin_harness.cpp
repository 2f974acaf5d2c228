// oea_plugin_harness.cpp: drive the OeaRouting plugin library the way TensorRT does, without
// TensorRT. A small C ABI for Python (ctypes; tests/plugin_harness.py) that
//   - dlopens liboea_routing_trt.so and takes the creator from its getCreators export,
//   - creates plugins from field collections (build or runtime phase) and reloads them from
//     getFieldsToSerialize, as an engine load does,
//   - asks the build capability for output types, formats, shapes (through a minimal
//     IExprBuilder) and workspace size,
//   - runs onShapeChange + enqueue on caller-owned device buffers and stream.
// It needs the TensorRT headers only: every call is a virtual call into the plugin library,
// which itself does not link libnvinfer. Not thread-safe (one test process, one caller).
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <dlfcn.h>
#include <limits>
#include <string>
#include <vector>

#include "NvInferRuntime.h"

using namespace nvinfer1;

namespace harness
{

std::string gLastError;
IPluginCreatorV3One* gCreator = nullptr;

struct DimImpl : public apiv::VDimensionExpr
{
    bool constant{false};
    int64_t value{0};
    bool isConstant() const override
    {
        return constant;
    }
    int64_t getConstantValue() const override
    {
        return constant ? value : std::numeric_limits<int64_t>::min();
    }
    bool isSizeTensor() const override
    {
        return false;
    }
};

struct Dim : public IDimensionExpr
{
    explicit Dim(DimImpl* impl)
    {
        mImpl = impl;
    }
    ~Dim() noexcept override = default;
};

// Just enough of TensorRT's expression builder for getOutputShapes: constants and opaque
// symbols (the harness only needs to see which input expression an output reuses).
struct BuilderImpl : public apiv::VExprBuilder
{
    std::deque<DimImpl> impls;
    std::deque<Dim> dims;

    IDimensionExpr const* make(bool constant, int64_t value)
    {
        impls.emplace_back();
        impls.back().constant = constant;
        impls.back().value = value;
        dims.emplace_back(&impls.back());
        return &dims.back();
    }
    IDimensionExpr const* constant(int64_t value) override
    {
        return make(true, value);
    }
    IDimensionExpr const* operation(DimensionOperation, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return make(false, 0);
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return make(false, 0);
    }
};

struct Builder : public IExprBuilder
{
    explicit Builder(BuilderImpl* impl)
    {
        mImpl = impl;
    }
    ~Builder() noexcept override = default;
};

template <typename T>
T* capability(void* plugin, PluginCapabilityType type)
{
    return static_cast<T*>(static_cast<IPluginV3*>(plugin)->getCapabilityInterface(type));
}

Dims dims(std::initializer_list<int64_t> values)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int32_t i = 0;
    for (int64_t v : values)
    {
        d.d[i++] = v;
    }
    return d;
}

// Descriptors of the inputs for a call with T tokens: logits [T, E], then either token_kind
// [T] or host_request_types/host_context_lengths [num_seq]; outputs [T, k_max].
void describe(PluginTensorDesc* in, int32_t nb_inputs, PluginTensorDesc* out, int32_t logits_type, int64_t T,
    int64_t E, int64_t num_seq, int64_t k_max)
{
    in[0] = PluginTensorDesc{dims({T, E}), static_cast<DataType>(logits_type), TensorFormat::kLINEAR, 1.0F};
    for (int32_t i = 1; i < nb_inputs; ++i)
    {
        int64_t const rows = nb_inputs == 2 ? T : num_seq;
        in[i] = PluginTensorDesc{dims({rows}), DataType::kINT32, TensorFormat::kLINEAR, 1.0F};
    }
    out[0] = PluginTensorDesc{dims({T, k_max}), DataType::kINT32, TensorFormat::kLINEAR, 1.0F};
    out[1] = PluginTensorDesc{dims({T, k_max}), DataType::kFLOAT, TensorFormat::kLINEAR, 1.0F};
}

} // namespace harness

using namespace harness;

extern "C"
{

char const* oea_h_last_error()
{
    return gLastError.c_str();
}

// Opens the library with RTLD_LOCAL (as loadLibrary does) and takes its OeaRouting creator.
int32_t oea_h_open(char const* library_path)
{
    void* handle = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
    {
        gLastError = std::string("dlopen failed: ") + dlerror();
        return -1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
    if (getCreators == nullptr)
    {
        gLastError = std::string(library_path) + " exports no getCreators";
        return -1;
    }
    int32_t nb = 0;
    IPluginCreatorInterface* const* creators = getCreators(nb);
    for (int32_t i = 0; i < nb; ++i)
    {
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0)
        {
            auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
            if (std::strcmp(creator->getPluginName(), "OeaRouting") == 0)
            {
                gCreator = creator;
                return nb;
            }
        }
    }
    gLastError = "getCreators returned no OeaRouting IPluginCreatorV3One";
    return -1;
}

// "name version namespace" of the creator.
char const* oea_h_creator_info()
{
    static std::string info;
    info = gCreator == nullptr ? "" :
        std::string(gCreator->getPluginName()) + " " + gCreator->getPluginVersion() + " " + gCreator->getPluginNamespace();
    return info.c_str();
}

void* oea_h_create(int32_t nb_fields, char const* const* names, int32_t const* types, void const* const* data,
    int32_t const* lengths, int32_t phase)
{
    if (gCreator == nullptr)
    {
        gLastError = "oea_h_open first";
        return nullptr;
    }
    std::vector<PluginField> fields;
    for (int32_t i = 0; i < nb_fields; ++i)
    {
        fields.emplace_back(names[i], data[i], static_cast<PluginFieldType>(types[i]), lengths[i]);
    }
    PluginFieldCollection fc{nb_fields, fields.data()};
    return gCreator->createPlugin("harness", &fc, static_cast<TensorRTPhase>(phase));
}

void oea_h_destroy(void* plugin)
{
    delete static_cast<IPluginV3*>(plugin);
}

// What an engine load does: the runtime capability's serialized fields, fed back to the
// creator at TensorRTPhase::kRUNTIME.
void* oea_h_reload(void* plugin)
{
    auto* runtime = capability<IPluginV3OneRuntime>(plugin, PluginCapabilityType::kRUNTIME);
    PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
    return gCreator->createPlugin("harness_reloaded", fc, TensorRTPhase::kRUNTIME);
}

void* oea_h_clone(void* plugin)
{
    return static_cast<IPluginV3*>(plugin)->clone();
}

// Serialized fields as lines "name type_code length v0 v1 ...".
int32_t oea_h_serialized(void* plugin, char* buffer, int32_t size)
{
    auto* runtime = capability<IPluginV3OneRuntime>(plugin, PluginCapabilityType::kRUNTIME);
    PluginFieldCollection const* fc = runtime->getFieldsToSerialize();
    std::string text;
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& f = fc->fields[i];
        text += std::string(f.name) + " " + std::to_string(static_cast<int32_t>(f.type)) + " " + std::to_string(f.length);
        for (int32_t j = 0; j < f.length; ++j)
        {
            if (f.type == PluginFieldType::kFLOAT32)
            {
                char value[64];
                std::snprintf(value, sizeof(value), " %.9g", static_cast<double>(static_cast<float const*>(f.data)[j]));
                text += value;
            }
            else
            {
                text += " " + std::to_string(static_cast<int32_t const*>(f.data)[j]);
            }
        }
        text += "\n";
    }
    std::snprintf(buffer, static_cast<size_t>(size), "%s", text.c_str());
    return static_cast<int32_t>(text.size());
}

// "name version namespace" as the plugin's core capability reports it.
char const* oea_h_plugin_info(void* plugin)
{
    static std::string info;
    auto* core = capability<IPluginV3OneCore>(plugin, PluginCapabilityType::kCORE);
    info = std::string(core->getPluginName()) + " " + core->getPluginVersion() + " " + core->getPluginNamespace();
    return info.c_str();
}

int32_t oea_h_nb_outputs(void* plugin)
{
    return capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD)->getNbOutputs();
}

int32_t oea_h_output_types(void* plugin, int32_t nb_inputs, int32_t const* input_types, int32_t* output_types)
{
    DataType in[3];
    DataType out[2];
    for (int32_t i = 0; i < nb_inputs && i < 3; ++i)
    {
        in[i] = static_cast<DataType>(input_types[i]);
    }
    int32_t status = capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD)->getOutputDataTypes(out, 2, in, nb_inputs);
    output_types[0] = static_cast<int32_t>(out[0]);
    output_types[1] = static_cast<int32_t>(out[1]);
    return status;
}

// types/formats: nb_inputs + 2 entries (inputs then outputs); asks about position pos.
int32_t oea_h_supports(void* plugin, int32_t pos, int32_t nb_inputs, int32_t const* types, int32_t const* formats)
{
    DynamicPluginTensorDesc io[5]{};
    for (int32_t i = 0; i < nb_inputs + 2 && i < 5; ++i)
    {
        io[i].desc.type = static_cast<DataType>(types[i]);
        io[i].desc.format = static_cast<TensorFormat>(formats[i]);
    }
    return capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD)->supportsFormatCombination(pos, io, nb_inputs, 2)
        ? 1 : 0;
}

// Output shapes for inputs of the given ranks, with the experts dim a constant (experts >= 0)
// or symbolic (-1). out[o*3 + 0] = nbDims, then per dim: the constant, or -2 when it is the
// very expression of router_logits' dim 0 (T), or -1 for any other symbol.
int32_t oea_h_output_shapes(void* plugin, int32_t nb_inputs, int32_t const* ranks, int64_t experts, int64_t* out)
{
    BuilderImpl impl;
    Builder builder(&impl);
    DimsExprs in[3]{};
    IDimensionExpr const* tokens = impl.make(false, 0);
    for (int32_t i = 0; i < nb_inputs && i < 3; ++i)
    {
        in[i].nbDims = ranks[i];
        for (int32_t d = 0; d < ranks[i]; ++d)
        {
            in[i].d[d] = impl.make(false, 0);
        }
    }
    in[0].d[0] = tokens;
    if (ranks[0] >= 2)
    {
        in[0].d[1] = experts >= 0 ? impl.make(true, experts) : impl.make(false, 0);
    }
    DimsExprs outputs[2]{};
    int32_t status = capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD)
                         ->getOutputShapes(in, nb_inputs, nullptr, 0, outputs, 2, builder);
    for (int32_t o = 0; o < 2; ++o)
    {
        out[o * 3] = outputs[o].nbDims;
        for (int32_t d = 0; d < 2; ++d)
        {
            IDimensionExpr const* e = d < outputs[o].nbDims ? outputs[o].d[d] : nullptr;
            out[o * 3 + 1 + d] = e == nullptr ? -3 : e == tokens ? -2 : e->isConstant() ? e->getConstantValue() : -1;
        }
    }
    return status;
}

// configurePlugin + getWorkspaceSize for a profile whose token dim spans [1, max_tokens].
int64_t oea_h_workspace(void* plugin, int32_t nb_inputs, int32_t logits_type, int64_t max_tokens, int64_t experts,
    int64_t num_seq, int64_t k_max)
{
    PluginTensorDesc in[3];
    PluginTensorDesc out[2];
    describe(in, nb_inputs, out, logits_type, -1, experts, -1, k_max);
    DynamicPluginTensorDesc din[3]{};
    DynamicPluginTensorDesc dout[2]{};
    for (int32_t i = 0; i < nb_inputs; ++i)
    {
        din[i].desc = in[i];
        bool const per_token = i == 0 || nb_inputs == 2;
        din[i].min = din[i].opt = din[i].max = in[i].dims;
        din[i].min.d[0] = 1;
        din[i].opt.d[0] = din[i].max.d[0] = per_token ? max_tokens : num_seq;
    }
    for (int32_t o = 0; o < 2; ++o)
    {
        dout[o].desc = out[o];
        dout[o].min = dout[o].opt = dout[o].max = out[o].dims;
        dout[o].min.d[0] = 1;
        dout[o].opt.d[0] = dout[o].max.d[0] = max_tokens;
    }
    auto* build = capability<IPluginV3OneBuild>(plugin, PluginCapabilityType::kBUILD);
    if (build->configurePlugin(din, nb_inputs, dout, 2) != 0)
    {
        return -1;
    }
    return static_cast<int64_t>(build->getWorkspaceSize(din, nb_inputs, dout, 2));
}

// onShapeChange + enqueue on device buffers. input1/input2: token_kind (device) or
// host_request_types/host_context_lengths (host), by nb_inputs and the plugin's mode.
int32_t oea_h_enqueue(void* plugin, int32_t nb_inputs, int32_t logits_type, int64_t tokens, int64_t experts,
    int64_t num_seq, int64_t k_max, void const* logits, void const* input1, void const* input2, void* expert_ids,
    void* weights, void* workspace, void* stream)
{
    PluginTensorDesc in[3];
    PluginTensorDesc out[2];
    describe(in, nb_inputs, out, logits_type, tokens, experts, num_seq, k_max);
    auto* runtime = capability<IPluginV3OneRuntime>(plugin, PluginCapabilityType::kRUNTIME);
    if (runtime->onShapeChange(in, nb_inputs, out, 2) != 0)
    {
        return -2;
    }
    void const* inputs[3] = {logits, input1, input2};
    void* outputs[2] = {expert_ids, weights};
    return runtime->enqueue(in, out, inputs, outputs, workspace, static_cast<cudaStream_t>(stream));
}

} // extern "C"
