// oea_k0_override.cpp: see oea_k0_override.h.
#include "oea_k0_override.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace oea_trt
{
namespace
{

bool parseInt32(std::string const& text, int32_t& value)
{
    if (text.empty())
    {
        return false;
    }
    errno = 0;
    char* end = nullptr;
    long const parsed = std::strtol(text.c_str(), &end, 10);
    if (errno != 0 || end == nullptr || *end != '\0' || parsed < INT32_MIN || parsed > INT32_MAX)
    {
        return false;
    }
    value = static_cast<int32_t>(parsed);
    return true;
}

std::string trim(std::string const& text)
{
    size_t const begin = text.find_first_not_of(" \t");
    if (begin == std::string::npos)
    {
        return "";
    }
    size_t const end = text.find_last_not_of(" \t");
    return text.substr(begin, end - begin + 1);
}

std::string describeSchedule(OeaRoutingParams const& params)
{
    if (params.schedule_len == 0)
    {
        return "none";
    }
    std::string text;
    for (int32_t i = 0; i < params.schedule_len; ++i)
    {
        text += (i ? "," : "") + std::to_string(params.schedule_min_decode[i]) + ":" + std::to_string(params.schedule_k0[i]);
    }
    return text;
}

// "8:4,16:3" -> flattened pairs; "" on success, else the error (naming `name`).
std::string parseSchedule(std::string const& text, char const* name, std::vector<int32_t>& flat)
{
    std::string const usage = std::string(name)
        + " must be MIN_DECODE_TOKENS:K0 pairs separated by commas (e.g. 8:4,16:3) or 'none', got '" + text + "'";
    size_t start = 0;
    while (start <= text.size())
    {
        size_t const comma = text.find(',', start);
        std::string const item = trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
        start = comma == std::string::npos ? text.size() + 1 : comma + 1;
        if (item.empty())
        {
            continue;
        }
        size_t const colon = item.find(':');
        int32_t min_decode = 0;
        int32_t k0 = 0;
        if (colon == std::string::npos || !parseInt32(trim(item.substr(0, colon)), min_decode)
            || !parseInt32(trim(item.substr(colon + 1)), k0))
        {
            return usage;
        }
        flat.push_back(min_decode);
        flat.push_back(k0);
    }
    return flat.empty() ? usage : "";
}

std::string k0SyntaxError(std::string const& value, char const* name, int32_t k_max)
{
    std::string const range = k_max > 0 ? " in [1, k_max=" + std::to_string(k_max) + "]" : "";
    return std::string(name) + " must be an integer k0" + range + ", got '" + value + "'";
}

// What oeaSetK0Override stored; `set` false: the environment applies.
struct ProcessOverride
{
    bool set{false};
    std::string k0;
    std::string schedule;
};

std::mutex gOverrideMutex;
ProcessOverride gOverride;

constexpr char const* kK0_FUNCTION = "k0 (oeaSetK0Override)";
constexpr char const* kK0_SCHEDULE_FUNCTION = "k0_schedule (oeaSetK0Override)";

} // namespace

std::string applyK0Override(OeaPluginConfig& config, char const* k0_text, char const* schedule_text,
    char const* k0_name, char const* schedule_name, std::string& applied)
{
    applied.clear();
    OeaPluginConfig overridden = config;
    std::string const k0_value = trim(k0_text != nullptr ? k0_text : "");
    std::string const schedule_value = trim(schedule_text != nullptr ? schedule_text : "");
    if (!k0_value.empty())
    {
        if (!parseInt32(k0_value, overridden.params.k0))
        {
            return k0SyntaxError(k0_value, k0_name, config.params.k_max);
        }
        applied += std::string(k0_name) + ": k0 " + std::to_string(config.params.k0) + " -> "
            + std::to_string(overridden.params.k0);
    }
    if (!schedule_value.empty())
    {
        if (schedule_value == "none")
        {
            overridden.params.schedule_len = 0;
        }
        else
        {
            std::vector<int32_t> flat;
            std::string error = parseSchedule(schedule_value, schedule_name, flat);
            if (error.empty())
            {
                error = setSchedule(overridden.params, flat.data(), static_cast<int32_t>(flat.size() / 2), schedule_name);
            }
            if (!error.empty())
            {
                return error;
            }
        }
        applied += std::string(applied.empty() ? "" : "; ") + schedule_name + ": k0_schedule "
            + describeSchedule(config.params) + " -> " + describeSchedule(overridden.params);
    }
    if (applied.empty())
    {
        return "";
    }
    std::string const error = validateConfig(overridden);
    if (!error.empty())
    {
        applied.clear();
        return "load-time override (" + std::string(k0_name) + "=" + (k0_value.empty() ? "<unset>" : k0_value) + ", "
            + schedule_name + "=" + (schedule_value.empty() ? "<unset>" : schedule_value)
            + ") is invalid for this engine: " + error;
    }
    config = overridden;
    return "";
}

std::string applyK0Override(OeaPluginConfig& config, std::string& applied)
{
    ProcessOverride process;
    {
        std::lock_guard<std::mutex> lock(gOverrideMutex);
        process = gOverride;
    }
    if (process.set)
    {
        return applyK0Override(
            config, process.k0.c_str(), process.schedule.c_str(), kK0_FUNCTION, kK0_SCHEDULE_FUNCTION, applied);
    }
    return applyK0Override(config, std::getenv(kK0_ENV), std::getenv(kK0_SCHEDULE_ENV), kK0_ENV, kK0_SCHEDULE_ENV, applied);
}

} // namespace oea_trt

extern "C" OEA_TRT_EXPORT int32_t oeaSetK0Override(
    char const* k0, char const* k0_schedule, char* error, size_t error_size)
{
    using namespace oea_trt;
    std::string const k0_value = trim(k0 != nullptr ? k0 : "");
    std::string const schedule_value = trim(k0_schedule != nullptr ? k0_schedule : "");
    std::string problem;
    int32_t parsed = 0;
    std::vector<int32_t> flat;
    if (!k0_value.empty() && !parseInt32(k0_value, parsed))
    {
        problem = k0SyntaxError(k0_value, kK0_FUNCTION, 0);
    }
    else if (!schedule_value.empty() && schedule_value != "none")
    {
        problem = parseSchedule(schedule_value, kK0_SCHEDULE_FUNCTION, flat);
    }
    if (!problem.empty())
    {
        if (error != nullptr && error_size > 0)
        {
            std::strncpy(error, problem.c_str(), error_size - 1);
            error[error_size - 1] = '\0';
        }
        return -1;
    }
    std::lock_guard<std::mutex> lock(gOverrideMutex);
    gOverride.set = !k0_value.empty() || !schedule_value.empty();
    gOverride.k0 = k0_value;
    gOverride.schedule = schedule_value;
    if (error != nullptr && error_size > 0)
    {
        error[0] = '\0';
    }
    return 0;
}
