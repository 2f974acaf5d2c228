// oea_k0_override.h: change k0 and its schedule when an engine is loaded, without rebuilding it.
//
// Users tune k0 against their quality budget; rebuilding a TensorRT-LLM engine for every k0
// would take an hour on a 235B model. The creator therefore applies a load-time override in
// createPlugin at TensorRTPhase::kRUNTIME (engine deserialization) only, to every OeaRouting
// layer of the process. It comes from, first match wins:
//   1. oeaSetK0Override (exported C function): a Python process that loads the plugin itself
//      sets it before deserializing (oea_trt.plugin.set_k0_override);
//   2. the environment, for processes that run none of our Python (Triton's TensorRT-LLM
//      backend, executor workers):
//        OEA_TRT_K0=3                  k0 for every layer (validated against the engine's k_max)
//        OEA_TRT_K0_SCHEDULE=8:4,16:3  replaces the schedule (MIN_DECODE_TOKENS:K0 pairs, the
//                                      format of oea_trt.routing.config.parse_k0_schedule);
//                                      "none" removes it
// Unset or empty: the engine's stored values are used. An invalid value fails createPlugin
// (and so the engine load) with a message naming its source: a typo must not silently run
// the engine with a k0 the user did not ask for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "oea_plugin_export.h"
#include "oea_plugin_fields.h"

namespace oea_trt
{

constexpr char const* kK0_ENV = "OEA_TRT_K0";
constexpr char const* kK0_SCHEDULE_ENV = "OEA_TRT_K0_SCHEDULE";

// Applies this process's override (oeaSetK0Override, else the environment) to config. Returns
// "" on success (config changed or not), else the error; `applied` describes the change for
// the log ("" when nothing was overridden).
std::string applyK0Override(OeaPluginConfig& config, std::string& applied);

// The same from explicit strings (nullptr or blank = keep the engine's value); k0_name and
// schedule_name say where the values came from in messages.
std::string applyK0Override(OeaPluginConfig& config, char const* k0_text, char const* schedule_text,
    char const* k0_name, char const* schedule_name, std::string& applied);

} // namespace oea_trt

// Sets this process's load-time override for every OeaRouting layer deserialized from now on;
// it takes precedence over OEA_TRT_K0 / OEA_TRT_K0_SCHEDULE.
//   k0:          "3", or NULL / "" to keep each engine's k0
//   k0_schedule: "8:4,16:3", "none" to remove the engine's schedule, or NULL / "" to keep it
// Both NULL or empty: clears the override (the environment applies again). Returns 0, or -1
// when a value does not parse; the message then goes to error (error_size bytes, always
// NUL-terminated; error may be NULL). Ranges are checked against each layer's k_max when an
// engine loads, which then fails with the reason.
extern "C" OEA_TRT_EXPORT int32_t oeaSetK0Override(
    char const* k0, char const* k0_schedule, char* error, size_t error_size);
