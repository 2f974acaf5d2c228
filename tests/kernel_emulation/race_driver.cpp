// race_driver.cpp: runs the emulated kernel on a few batches so ThreadSanitizer can look for
// shared/global memory races between barriers (tests only; built by build.py's build_race_driver).
//   race_driver T [T ...]    (the debug build's launch knobs come from the environment)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "oea_routing.h"

int main(int argc, char** argv) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    const int T = std::atoi(argv[i]), E = 128;
    std::vector<uint16_t> logits(static_cast<size_t>(T) * E);
    for (auto& x : logits) {  // bf16: the high half of the float
      const float f = normal(rng);
      uint32_t u;
      std::memcpy(&u, &f, 4);
      x = static_cast<uint16_t>(u >> 16);
    }
    std::vector<int32_t> kinds(T);
    for (int t = 0; t < T; ++t) kinds[t] = static_cast<int32_t>(rng() % 3);
    for (int variant = 0; variant < 4; ++variant) {
      OeaRoutingParams p = {};
      p.num_experts = E;
      p.top_k = 8;
      p.k0 = variant == 1 ? 8 : 3;
      p.k_max = variant == 2 ? 12 : 8;
      p.max_rank = variant == 2 ? 20 : E;
      p.top_p = variant == 2 ? 0.6f : 1.0f;
      p.renormalize = variant != 3;
      p.fill = variant == 1 || variant == 3 ? OEA_FILL_TOP1 : OEA_FILL_INVALID;
      p.piggyback_on_context = variant != 3;
      if (variant == 1) {
        p.schedule_len = 2;
        p.schedule_min_decode[0] = 8, p.schedule_k0[0] = 4;
        p.schedule_min_decode[1] = 16, p.schedule_k0[1] = 3;
      }
      std::vector<int32_t> ids(static_cast<size_t>(T) * p.k_max, -7);
      std::vector<float> weights(ids.size(), -1.0f);
      std::vector<uint8_t> mask(E, 0xAB);
      int32_t num_active = -1;
      std::vector<unsigned char> ws(oea_workspace_size(&p, T) + 16, 0xCD);
      const cudaError_t err = oea_route_launch(&p, logits.data(), OEA_LOGITS_BF16, variant % 2 ? kinds.data() : nullptr,
                                               variant == 2 ? T / 3 : 0, T, ids.data(), weights.data(), mask.data(),
                                               &num_active, nullptr, ws.data(), ws.size(),
                                               variant == 3 ? 0u : OEA_LAUNCH_PDL, nullptr);
      if (err != cudaSuccess) ++failures;
      std::printf("T=%d variant=%d err=%d num_active=%d\n", T, variant, static_cast<int>(err), num_active);
    }
  }
  return failures ? 1 : 0;
}
