// oea_k0_override.h: change k0 and its schedule when an engine is loaded, without rebuilding it.
//
// Users tune k0 against their quality budget; rebuilding a TensorRT-LLM engine for every k0
// would take an hour on a 235B model. The creator therefore applies these environment
// variables in createPlugin at TensorRTPhase::kRUNTIME (engine deserialization) only, to every
// OeaRouting layer of the process:
//   OEA_TRT_K0=3                 k0 for every layer (validated against the engine's k_max)
//   OEA_TRT_K0_SCHEDULE=8:4,16:3  replaces the schedule (MIN_DECODE_TOKENS:K0 pairs, the
//                                format of oea_trt.routing.config.parse_k0_schedule); "none" removes it
// Unset or empty: the engine's stored values are used. An invalid value fails createPlugin
// (and so the engine load) with a message naming the variable: a typo must not silently run
// the engine with a k0 the user did not ask for.
#pragma once

#include <string>

#include "oea_plugin_fields.h"

namespace oea_trt
{

constexpr char const* kK0_ENV = "OEA_TRT_K0";
constexpr char const* kK0_SCHEDULE_ENV = "OEA_TRT_K0_SCHEDULE";

// Applies the variables to config. Returns "" on success (config changed or not), else the
// error; `applied` describes the change for the log ("" when nothing was overridden).
std::string applyK0Override(OeaPluginConfig& config, std::string& applied);

// The same from explicit strings (nullptr = variable unset); what applyK0Override calls.
std::string applyK0Override(OeaPluginConfig& config, char const* k0_text, char const* schedule_text, std::string& applied);

} // namespace oea_trt
