// oea_host_batch.h: which rows of a TensorRT-LLM packed batch are context tokens.
//
// In TensorRT-LLM 1.2.1's packed (remove_input_padding) mode a step's tokens are every context
// request's tokens first, then one token per generation sequence. Two int32 network inputs
// describe that batch and are bound to CPU memory at run time: host_request_types
// [num_seq] (0 = context, 1 = generation) and host_context_lengths [num_seq]. The plugin reads
// them on the CPU in enqueue (as TensorRT-LLM's own attention and LoRA plugins do) and hands
// the context/decode boundary to the kernel as num_leading_context.
#pragma once

#include <cstdint>

namespace oea_trt
{

constexpr int32_t kREQUEST_CONTEXT = 0;
constexpr int32_t kREQUEST_GENERATION = 1;

// Number of leading context rows, or -1 when the batch does not look like a packed
// TensorRT-LLM batch of num_tokens rows: a context request after a generation one, an
// unknown request type, a negative context length, or a row count that does not add up
// (num_tokens != context tokens + generation sequences, e.g. speculative decoding).
// -1 means "unknown split": the caller then routes every row with plain top-k.
int64_t leadingContextRows(int32_t const* host_request_types, int32_t const* host_context_lengths,
    int64_t num_seq, int64_t num_tokens) noexcept;

} // namespace oea_trt
