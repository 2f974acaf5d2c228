// oea_routing_creator.cpp: see oea_routing_creator.h.
#include "oea_routing_creator.h"

#include <mutex>
#include <new>
#include <set>
#include <string>

#include "oea_k0_override.h"
#include "oea_plugin_fields.h"
#include "oea_plugin_log.h"
#include "oea_routing_plugin.h"

namespace oea_trt
{

nvinfer1::IPluginV3* OeaRoutingCreator::createPlugin(
    char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept
{
    std::string const layer = name != nullptr ? name : "<unnamed>";
    OeaPluginConfig config{};
    std::string error = parseFields(fc, config);
    if (error.empty() && phase == nvinfer1::TensorRTPhase::kRUNTIME)
    {
        std::string applied;
        error = applyK0Override(config, applied);
        if (!applied.empty())
        {
            // A warning once per distinct change (an engine has one OeaRouting layer per MoE
            // layer, all usually alike), the per-layer detail at INFO.
            static std::mutex mutex;
            static std::set<std::string> announced;
            bool first = false;
            {
                std::lock_guard<std::mutex> lock(mutex);
                first = announced.insert(applied).second;
            }
            if (first)
            {
                logWarning("OeaRouting: engine value(s) overridden at load time: " + applied);
            }
            logInfo("OeaRouting layer '" + layer + "': " + applied);
        }
    }
    if (!error.empty())
    {
        logError("OeaRouting createPlugin('" + layer + "'): " + error);
        return nullptr;
    }
    return new (std::nothrow) OeaRoutingPlugin(config);
}

nvinfer1::PluginFieldCollection const* OeaRoutingCreator::getFieldNames() noexcept
{
    return fieldNames();
}

char const* OeaRoutingCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* OeaRoutingCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* OeaRoutingCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

OeaRoutingCreator& creatorInstance() noexcept
{
    static OeaRoutingCreator creator;
    return creator;
}

} // namespace oea_trt
