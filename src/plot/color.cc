#include "plot/color.h"

#include <algorithm>
#include <cmath>

namespace nsa::plot {

Rgb palette(int i) {
  static constexpr Rgb kColors[8] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},
                                     {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {127, 127, 127}};
  return kColors[((i % 8) + 8) % 8];
}

Rgb mix(Rgb a, Rgb b, double t) {
  t = std::isnan(t) ? 0.0 : std::clamp(t, 0.0, 1.0);
  auto ch = [t](int x, int y) { return static_cast<std::uint8_t>(std::lround(x + (y - x) * t)); };
  return {ch(a.r, b.r), ch(a.g, b.g), ch(a.b, b.b)};
}

Rgb red_yellow_green(double t) {
  static constexpr Rgb kRed{215, 48, 39}, kYellow{254, 224, 120}, kGreen{26, 152, 80};
  t = std::isnan(t) ? 0.0 : std::clamp(t, 0.0, 1.0);
  return t < 0.5 ? mix(kRed, kYellow, 2 * t) : mix(kYellow, kGreen, 2 * t - 1);
}

Rgb white_blue(double t) {
  static constexpr Rgb kLight{247, 251, 255}, kMid{107, 174, 214}, kDark{8, 48, 107};
  t = std::isnan(t) ? 0.0 : std::clamp(t, 0.0, 1.0);
  return t < 0.5 ? mix(kLight, kMid, 2 * t) : mix(kMid, kDark, 2 * t - 1);
}

double luminance(Rgb c) { return (0.2126 * c.r + 0.7152 * c.g + 0.0722 * c.b) / 255.0; }

}  // namespace nsa::plot
