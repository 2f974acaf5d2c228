// oea_plugin_export.h: the library is built with hidden visibility; these symbols are its ABI.
#pragma once

#define OEA_TRT_EXPORT __attribute__((visibility("default")))
