// oea_host_batch.cpp: see oea_host_batch.h.
#include "oea_host_batch.h"

#include "oea_plugin_export.h"

namespace oea_trt
{

int64_t leadingContextRows(int32_t const* host_request_types, int32_t const* host_context_lengths,
    int64_t num_seq, int64_t num_tokens) noexcept
{
    if (num_seq < 0 || num_tokens < 0 || (num_seq > 0 && (host_request_types == nullptr || host_context_lengths == nullptr)))
    {
        return -1;
    }
    int64_t seq = 0;
    int64_t context_rows = 0;
    for (; seq < num_seq && host_request_types[seq] == kREQUEST_CONTEXT; ++seq)
    {
        if (host_context_lengths[seq] < 0)
        {
            return -1;
        }
        context_rows += host_context_lengths[seq];
    }
    int64_t const generation_seqs = num_seq - seq;
    for (; seq < num_seq; ++seq)
    {
        if (host_request_types[seq] != kREQUEST_GENERATION)
        {
            return -1;
        }
    }
    return context_rows + generation_seqs == num_tokens ? context_rows : -1;
}

} // namespace oea_trt

// C entry point so tests (ctypes) check the split without a GPU or TensorRT.
extern "C" OEA_TRT_EXPORT int64_t oea_trt_leading_context_rows(int32_t const* host_request_types,
    int32_t const* host_context_lengths, int64_t num_seq, int64_t num_tokens)
{
    return oea_trt::leadingContextRows(host_request_types, host_context_lengths, num_seq, num_tokens);
}
