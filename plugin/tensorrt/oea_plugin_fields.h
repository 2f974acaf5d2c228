// oea_plugin_fields.h: the plugin's fields, declared once.
//
// OEA_PLUGIN_FIELDS is the only place a field is named. The creator's getFieldNames, the
// parser used by createPlugin (build and runtime phase alike) and getFieldsToSerialize all
// expand it, so a knob cannot be created under one name and serialized under another.
// oea_trt/plugin.py mirrors this table for Python callers and
// tests/test_plugin_fields.py fails when the two drift apart.
//
// Ranges are NOT checked here: oea_validate_params (the kernel's launcher API) does that, so
// the plugin, the Python binding and OEAConfig reject exactly the same values. This file
// only checks structure (known name, type, count, required, no duplicates) and resolves the
// derived defaults (k_max = top_k, max_rank = num_experts, schedule sorted), as OEAConfig does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "NvInferRuntime.h"
#include "oea_routing.h"

namespace oea_trt
{

// How the plugin learns which rows are decode tokens (docs/plugin.md, "Inputs").
enum TokenKindMode : int32_t
{
    kTOKEN_KIND_NONE = 0,   // one input (router_logits); every row is a decode token
    kTOKEN_KIND_DEVICE = 1, // + token_kind int32 [T] in device memory (0 decode, 1 context, else padding)
    kTOKEN_KIND_TRTLLM = 2, // + host_request_types, host_context_lengths int32 [num_seq] bound to
                            //   CPU memory by TensorRT-LLM; context rows lead the packed batch
};

// Everything a plugin instance needs: the routing knobs plus how token kinds arrive.
struct OeaPluginConfig
{
    OeaRoutingParams params{};
    int32_t token_kind_mode{kTOKEN_KIND_NONE};
};

// X(name, kind, member of OeaPluginConfig, presence, default)
//   kind: kInt32 / kBool (both PluginFieldType::kINT32, one value), kFloat32 (one value),
//         kSchedule (kINT32, 2*n values: min_decode_tokens0, k0_0, min_decode_tokens1, k0_1, ...).
//   presence: kRequired, kOptional (default used when absent), kDerived (absent: resolved from
//         other fields, see resolveDerivedDefaults).
#define OEA_PLUGIN_FIELDS(X)                                                                                   \
    X(num_experts, kInt32, params.num_experts, kRequired, 0)                                                   \
    X(top_k, kInt32, params.top_k, kRequired, 0)                                                               \
    X(k0, kInt32, params.k0, kRequired, 0)                                                                     \
    X(k_max, kInt32, params.k_max, kDerived, 0)                                                                \
    X(max_rank, kInt32, params.max_rank, kDerived, 0)                                                          \
    X(top_p, kFloat32, params.top_p, kOptional, 1.0F)                                                          \
    X(renormalize, kBool, params.renormalize, kOptional, 1)                                                    \
    X(fill, kInt32, params.fill, kOptional, OEA_FILL_INVALID)                                                  \
    X(piggyback_on_context, kBool, params.piggyback_on_context, kOptional, 1)                                  \
    X(k0_schedule, kSchedule, params, kOptional, 0)                                                            \
    X(token_kind_mode, kInt32, token_kind_mode, kOptional, kTOKEN_KIND_NONE)

// Parses a field collection into `config`. Returns "" on success, else a message that names
// the field, what was wrong and what is allowed. Runs oea_validate_params on the result.
std::string parseFields(nvinfer1::PluginFieldCollection const* fc, OeaPluginConfig& config);

// Checks a fully-populated config (after an override, say): oea_validate_params plus the
// plugin's own token_kind_mode. Returns "" when valid.
std::string validateConfig(OeaPluginConfig const& config);

// Sets params' k0 schedule from nb_pairs flattened (min_decode_tokens, k0) pairs: sorted
// ascending, distinct minimums (ranges are left to validateConfig). `what` names the source
// (a field or an environment variable) in the error message. Returns "" on success.
std::string setSchedule(OeaRoutingParams& params, int32_t const* flat_pairs, int32_t nb_pairs, char const* what);

// The field descriptions the creator reports from getFieldNames (no data, declared counts).
nvinfer1::PluginFieldCollection const* fieldNames();

// Serialized form of one config: fields point into this object, so keep it alive (and
// unmoved) while TensorRT reads them.
class SerializedFields
{
public:
    void assign(OeaPluginConfig const& config);
    nvinfer1::PluginFieldCollection const* collection() const noexcept
    {
        return &mCollection;
    }

private:
    OeaPluginConfig mConfig{};
    std::vector<int32_t> mSchedule;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
};

} // namespace oea_trt
