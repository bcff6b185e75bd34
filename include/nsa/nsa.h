// Umbrella header of the nsa library.
#pragma once

#include "nsa/attention.h"
#include "nsa/backward.h"
#include "nsa/config.h"
#include "nsa/cpu_features.h"
#include "nsa/decode.h"
#include "nsa/error.h"
#include "nsa/tensor.h"
#include "nsa/thread_pool.h"
#include "nsa/version.h"
