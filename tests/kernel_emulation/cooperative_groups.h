// Host emulation of CUDA for the routing kernel (tests only): see cuda_emulation.h.
#pragma once
#include "cuda_emulation.h"
