// oea_routing.h: the one launcher API of the fused OEA routing kernel.
//
// Plain C++ (no TensorRT, no torch types) so that the TensorRT plugin, the Python binding
// (ctypes, oea_trt/routing/library.py) and any C++ harness call the same entry point. The rule it
// implements is docs/oea-spec.md; oea_trt/routing/reference.py is the reference it must match
// bit-exactly for expert ids and within 1e-6 relative for weights.
//
// Contract: no host synchronisation, no allocation (caller-provided workspace, size from
// oea_workspace_size), safe inside CUDA-graph capture, any num_tokens >= 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OEA_ROUTING_API_VERSION 3
#define OEA_MAX_SCHEDULE 16
#define OEA_MAX_EXPERTS 4096

// Logit element types; values match LOGITS_TYPE in oea_trt/routing/params.py and the plugin's type mapping.
enum OeaLogitsType { OEA_LOGITS_FP32 = 0, OEA_LOGITS_FP16 = 1, OEA_LOGITS_BF16 = 2 };

// What unused output slots hold; values are OEAConfig.fill_code (FILL_MODES order).
enum OeaFillMode { OEA_FILL_INVALID = 0, OEA_FILL_NUM_EXPERTS = 1, OEA_FILL_TOP1 = 2 };

// Token kinds of the optional token_kind input; any other value is padding.
enum OeaTokenKind { OEA_TOKEN_DECODE = 0, OEA_TOKEN_CONTEXT = 1, OEA_TOKEN_PADDING = 2 };

// Every knob of OEAConfig (oea_trt/routing/config.py), already validated and resolved
// (k_max and max_rank filled in, schedule sorted ascending by min_decode_tokens).
// oea_trt/routing/params.py (KernelParams) has exactly these fields; a test compares the two.
typedef struct OeaRoutingParams {
  int32_t num_experts;           // E, 1..OEA_MAX_EXPERTS
  int32_t top_k;                 // k, 1..E
  int32_t k0;                    // 1..k_max
  int32_t k_max;                 // top_k..E
  int32_t max_rank;              // 1..E
  float top_p;                   // (0, 1]; >= 1 means off
  int32_t renormalize;           // 0/1
  int32_t fill;                  // OeaFillMode
  int32_t piggyback_on_context;  // 0/1
  int32_t schedule_len;          // 0..OEA_MAX_SCHEDULE
  int32_t schedule_min_decode[OEA_MAX_SCHEDULE];
  int32_t schedule_k0[OEA_MAX_SCHEDULE];
} OeaRoutingParams;

// Returns NULL when params are valid, else a static message naming the field and range.
const char* oea_validate_params(const OeaRoutingParams* params);

// Bytes of device workspace oea_route_launch needs for num_tokens tokens (may be 0).
size_t oea_workspace_size(const OeaRoutingParams* params, int64_t num_tokens);

// Options of one launch (bitwise OR; 0 = none).
enum OeaLaunchFlags {
  // Programmatic dependent launch (sm_90+; ignored on older GPUs): the routing kernel may be
  // scheduled while the previous kernel in the stream drains. It waits for that kernel
  // (griddepcontrol.wait) before its first global memory access, so the result is the same;
  // only the launch latency overlaps. A consumer launched with PDL after it must itself wait
  // before reading the outputs, as after any PDL predecessor.
  OEA_LAUNCH_PDL = 1u << 0,
};

// OEA_ROUTING_API_VERSION of the headers the library was built from. A binding checks it
// before its first launch: the launcher's signature changes with the version.
int32_t oea_routing_api_version(void);

// Route num_tokens tokens.
//   logits:        [num_tokens, E] of logits_type (OeaLogitsType), row-major, device memory.
//   token_kind:    int32 [num_tokens] device memory, or NULL. When NULL, the first
//                  num_leading_context rows are context tokens and the rest decode tokens
//                  (TensorRT-LLM's packed in-flight batch: context requests first); pass 0
//                  for "all decode". Ignored when token_kind != NULL.
//   expert_ids:    int32 [num_tokens, k_max] out.
//   weights:       float32 [num_tokens, k_max] out.
//   active_mask:   uint8 [E] out (1 = some token selected it), or NULL.
//   num_active:    int32 [1] out (number of active experts), or NULL.
//   active_ready:  int32 [1] device memory, or NULL. The launch sets it to 0 before a kernel
//                  launched after it with PDL can start, and to non-zero (a release store) as
//                  soon as active_mask and num_active are final, BEFORE the expert_ids and
//                  weights rows are written. A consumer launched with PDL may poll it
//                  (acquire) and then read active_mask, and whatever was written before this
//                  launch in stream order, while the routing still runs; it must still wait
//                  (griddepcontrol.wait) before reading expert_ids or weights. Why: a decode
//                  MoE layer can start streaming the active experts' weights a routing kernel
//                  earlier.
//   workspace:     oea_workspace_size() bytes of device memory (may be NULL when that is 0).
//   launch_flags:  OeaLaunchFlags.
// Returns cudaSuccess or the launch error; never synchronises.
cudaError_t oea_route_launch(const OeaRoutingParams* params, const void* logits, int32_t logits_type,
                             const int32_t* token_kind, int64_t num_leading_context, int64_t num_tokens,
                             int32_t* expert_ids, float* weights, uint8_t* active_mask, int32_t* num_active,
                             int32_t* active_ready, void* workspace, size_t workspace_bytes,
                             uint32_t launch_flags, cudaStream_t stream);

#ifdef __cplusplus
}  // extern "C"
#endif
