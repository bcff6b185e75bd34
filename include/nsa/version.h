#pragma once

namespace nsa {
inline constexpr const char* kVersion = "0.1.0";
}
