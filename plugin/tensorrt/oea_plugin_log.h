// oea_plugin_log.h: messages to TensorRT's logger, found through the ILoggerFinder that
// IPluginRegistry::loadLibrary hands to setLoggerFinder. The plugin library never links
// libnvinfer, so without a finder (LD_PRELOAD variant, harnesses) messages go to stderr.
#pragma once

#include <string>

#include "NvInferRuntime.h"

namespace oea_trt
{

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

inline void logError(std::string const& message) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kERROR, message);
}

inline void logWarning(std::string const& message) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kWARNING, message);
}

inline void logInfo(std::string const& message) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kINFO, message);
}

} // namespace oea_trt
