// oea_plugin_fields.cpp: parse, validate and serialize the fields of OEA_PLUGIN_FIELDS.
#include "oea_plugin_fields.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;

namespace oea_trt
{
namespace
{

enum FieldKind
{
    kInt32,
    kBool,
    kFloat32,
    kSchedule
};

enum Presence
{
    kRequired,
    kOptional,
    kDerived
};

struct FieldRow
{
    char const* name;
    FieldKind kind;
    Presence presence;
};

#define OEA_ROW(fname, kind, member, presence, value) FieldRow{#fname, kind, presence},
constexpr FieldRow kRows[] = {OEA_PLUGIN_FIELDS(OEA_ROW)};
#undef OEA_ROW
constexpr int32_t kNbRows = static_cast<int32_t>(sizeof(kRows) / sizeof(kRows[0]));

PluginFieldType pluginType(FieldKind kind)
{
    return kind == kFloat32 ? PluginFieldType::kFLOAT32 : PluginFieldType::kINT32;
}

char const* typeName(PluginFieldType type)
{
    switch (type)
    {
    case PluginFieldType::kFLOAT16: return "kFLOAT16";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    case PluginFieldType::kINT8: return "kINT8";
    case PluginFieldType::kINT16: return "kINT16";
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kCHAR: return "kCHAR";
    case PluginFieldType::kINT64: return "kINT64";
    case PluginFieldType::kBF16: return "kBF16";
    default: return "another type";
    }
}

std::string fieldError(char const* name, std::string const& what)
{
    return std::string("OeaRouting field '") + name + "' " + what;
}

std::string checkScalar(PluginField const& f, PluginFieldType expected)
{
    if (f.type != expected || f.length != 1 || f.data == nullptr)
    {
        return fieldError(f.name,
            std::string("must be ") + typeName(expected) + " with 1 value, got " + typeName(f.type) + " with "
                + std::to_string(f.length) + " value(s)" + (f.data == nullptr ? " and no data" : ""));
    }
    return "";
}

// One overload per slot type, so a table row whose kind and member disagree does not compile.
std::string readField(PluginField const& f, FieldKind kind, int32_t& slot)
{
    std::string error = checkScalar(f, pluginType(kind));
    if (error.empty())
    {
        std::memcpy(&slot, f.data, sizeof(int32_t));
    }
    return error;
}

std::string readField(PluginField const& f, FieldKind kind, float& slot)
{
    std::string error = checkScalar(f, pluginType(kind));
    if (error.empty())
    {
        std::memcpy(&slot, f.data, sizeof(float));
    }
    return error;
}

std::string readField(PluginField const& f, FieldKind /*kind: kSchedule*/, OeaRoutingParams& params)
{
    if (f.type != PluginFieldType::kINT32 || f.length % 2 != 0 || f.length < 0
        || f.length > 2 * OEA_MAX_SCHEDULE || (f.length > 0 && f.data == nullptr))
    {
        return fieldError(f.name,
            "must be kINT32 pairs (min_decode_tokens, k0) flattened, 0.." + std::to_string(OEA_MAX_SCHEDULE)
                + " pairs, got " + typeName(f.type) + " with " + std::to_string(f.length) + " value(s)");
    }
    return setSchedule(params, static_cast<int32_t const*>(f.data), f.length / 2, "OeaRouting field 'k0_schedule'");
}

void assignDefault(int32_t& slot, int32_t value)
{
    slot = value;
}

void assignDefault(float& slot, float value)
{
    slot = value;
}

void assignDefault(OeaRoutingParams& params, int32_t /*no schedule*/)
{
    params.schedule_len = 0;
}

// Writers for getFieldsToSerialize: fields point at the stored config.
void addField(std::vector<PluginField>& out, char const* name, FieldKind kind, int32_t const& slot, std::vector<int32_t>&)
{
    out.emplace_back(name, &slot, pluginType(kind), 1);
}

void addField(std::vector<PluginField>& out, char const* name, FieldKind kind, float const& slot, std::vector<int32_t>&)
{
    out.emplace_back(name, &slot, pluginType(kind), 1);
}

void addField(std::vector<PluginField>& out, char const* name, FieldKind kind, OeaRoutingParams const& params,
    std::vector<int32_t>& schedule)
{
    // No schedule: the field is left out (absent == empty), so no zero-length field is stored.
    if (params.schedule_len == 0)
    {
        return;
    }
    schedule.clear();
    for (int32_t i = 0; i < params.schedule_len; ++i)
    {
        schedule.push_back(params.schedule_min_decode[i]);
        schedule.push_back(params.schedule_k0[i]);
    }
    out.emplace_back(name, schedule.data(), pluginType(kind), static_cast<int32_t>(schedule.size()));
}

std::string knownNames()
{
    std::string names;
    for (auto const& row : kRows)
    {
        names += (names.empty() ? "" : ", ") + std::string(row.name);
    }
    return names;
}

// "num_experts=128 top_k=8 k0=3 ... k0_schedule=8:4,16:3": the values a validation error refers to.
std::string describeConfig(OeaPluginConfig const& c)
{
    OeaRoutingParams const& p = c.params;
    std::string schedule;
    for (int32_t i = 0; i < p.schedule_len; ++i)
    {
        schedule += (i ? "," : "") + std::to_string(p.schedule_min_decode[i]) + ":" + std::to_string(p.schedule_k0[i]);
    }
    return "num_experts=" + std::to_string(p.num_experts) + " top_k=" + std::to_string(p.top_k) + " k0="
        + std::to_string(p.k0) + " k_max=" + std::to_string(p.k_max) + " max_rank=" + std::to_string(p.max_rank)
        + " top_p=" + std::to_string(p.top_p) + " renormalize=" + std::to_string(p.renormalize)
        + " fill=" + std::to_string(p.fill) + " piggyback_on_context=" + std::to_string(p.piggyback_on_context)
        + " k0_schedule=" + (schedule.empty() ? "none" : schedule);
}

} // namespace

std::string setSchedule(OeaRoutingParams& params, int32_t const* flat_pairs, int32_t nb_pairs, char const* what)
{
    if (nb_pairs < 0 || nb_pairs > OEA_MAX_SCHEDULE)
    {
        return std::string(what) + " must hold 0.." + std::to_string(OEA_MAX_SCHEDULE)
            + " (min_decode_tokens, k0) pairs, got " + std::to_string(nb_pairs);
    }
    std::vector<std::pair<int32_t, int32_t>> pairs(static_cast<size_t>(nb_pairs));
    for (int32_t i = 0; i < nb_pairs; ++i)
    {
        pairs[static_cast<size_t>(i)] = {flat_pairs[2 * i], flat_pairs[2 * i + 1]};
    }
    // Resolution as in OEAConfig: ascending by min_decode_tokens, so "the entry with the largest
    // min_decode_tokens <= decode tokens" is the last one that applies.
    std::stable_sort(pairs.begin(), pairs.end(), [](auto const& a, auto const& b) { return a.first < b.first; });
    for (size_t i = 1; i < pairs.size(); ++i)
    {
        if (pairs[i].first == pairs[i - 1].first)
        {
            return std::string(what) + " must have distinct min_decode_tokens, got "
                + std::to_string(pairs[i].first) + " twice";
        }
    }
    params.schedule_len = nb_pairs;
    for (int32_t i = 0; i < nb_pairs; ++i)
    {
        params.schedule_min_decode[i] = pairs[static_cast<size_t>(i)].first;
        params.schedule_k0[i] = pairs[static_cast<size_t>(i)].second;
    }
    return "";
}

std::string validateConfig(OeaPluginConfig const& config)
{
    if (char const* error = oea_validate_params(&config.params))
    {
        return std::string("OeaRouting: ") + error + " (got " + describeConfig(config) + ")";
    }
    if (config.token_kind_mode < kTOKEN_KIND_NONE || config.token_kind_mode > kTOKEN_KIND_TRTLLM)
    {
        return fieldError("token_kind_mode",
            "must be 0 (none: all rows decode), 1 (device token_kind input) or 2 (TensorRT-LLM host_request_types "
            "+ host_context_lengths), got "
                + std::to_string(config.token_kind_mode));
    }
    return "";
}

std::string parseFields(PluginFieldCollection const* fc, OeaPluginConfig& config)
{
    if (fc == nullptr || (fc->nbFields > 0 && fc->fields == nullptr))
    {
        return "OeaRouting: no field collection given (required fields: num_experts, top_k, k0)";
    }
    OeaPluginConfig parsed{};
#define OEA_DEFAULT(fname, kind, member, presence, value) assignDefault(parsed.member, value);
    OEA_PLUGIN_FIELDS(OEA_DEFAULT)
#undef OEA_DEFAULT

    std::array<bool, kNbRows> seen{};
    for (int32_t i = 0; i < fc->nbFields; ++i)
    {
        PluginField const& field = fc->fields[i];
        if (field.name == nullptr)
        {
            return "OeaRouting: field #" + std::to_string(i) + " has no name; known fields: " + knownNames();
        }
        int32_t row = 0; // index of the matching table row
        bool matched = false;
        std::string error;
#define OEA_PARSE(fname, kind, member, presence, value)                                                       \
    if (!matched && std::strcmp(field.name, #fname) == 0)                                                      \
    {                                                                                                          \
        matched = true;                                                                                        \
        error = readField(field, kind, parsed.member);                                                         \
    }                                                                                                          \
    row += matched ? 0 : 1;
        OEA_PLUGIN_FIELDS(OEA_PARSE)
#undef OEA_PARSE
        if (!matched)
        {
            return std::string("OeaRouting: unknown field '") + field.name + "'; known fields: " + knownNames();
        }
        if (!error.empty())
        {
            return error;
        }
        if (seen[static_cast<size_t>(row)])
        {
            return fieldError(field.name, "was given twice; give each field once");
        }
        seen[static_cast<size_t>(row)] = true;
    }

    for (int32_t row = 0; row < kNbRows; ++row)
    {
        if (kRows[row].presence == kRequired && !seen[static_cast<size_t>(row)])
        {
            return fieldError(kRows[row].name, "is required (required fields: num_experts, top_k, k0)");
        }
    }
    // Derived defaults, exactly OEAConfig's: k_max = top_k, max_rank = num_experts.
    for (int32_t row = 0; row < kNbRows; ++row)
    {
        if (kRows[row].presence != kDerived || seen[static_cast<size_t>(row)])
        {
            continue;
        }
        if (std::strcmp(kRows[row].name, "k_max") == 0)
        {
            parsed.params.k_max = parsed.params.top_k;
        }
        else if (std::strcmp(kRows[row].name, "max_rank") == 0)
        {
            parsed.params.max_rank = parsed.params.num_experts;
        }
    }

    std::string error = validateConfig(parsed);
    if (error.empty())
    {
        config = parsed;
    }
    return error;
}

PluginFieldCollection const* fieldNames()
{
    static std::vector<PluginField> const kNames = [] {
        std::vector<PluginField> names;
        for (auto const& row : kRows)
        {
            // The schedule has a variable count (0..2*OEA_MAX_SCHEDULE): reported as 0.
            names.emplace_back(row.name, nullptr, pluginType(row.kind), row.kind == kSchedule ? 0 : 1);
        }
        return names;
    }();
    static PluginFieldCollection const kCollection{static_cast<int32_t>(kNames.size()), kNames.data()};
    return &kCollection;
}

void SerializedFields::assign(OeaPluginConfig const& config)
{
    mConfig = config;
    mFields.clear();
#define OEA_SERIALIZE(fname, kind, member, presence, value) addField(mFields, #fname, kind, mConfig.member, mSchedule);
    OEA_PLUGIN_FIELDS(OEA_SERIALIZE)
#undef OEA_SERIALIZE
    mCollection.nbFields = static_cast<int32_t>(mFields.size());
    mCollection.fields = mFields.data();
}

} // namespace oea_trt
