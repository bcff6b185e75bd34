// The built-in bitmap font: 5x7 glyphs for printable ASCII (32..126) in a 6x8 cell (one
// column and one row of spacing), drawn at an integer scale. Other bytes show as '?'.
#pragma once

#include <cstdint>
#include <string_view>

namespace nsa::plot::font {

inline constexpr int kGlyphWidth = 5, kGlyphHeight = 7, kAdvance = 6;

// Column c (0..4, left to right) of the glyph of `ch`: bit r (0..6) set when row r (top
// to bottom) is ink.
std::uint8_t glyph_column(char ch, int c);

// Size in pixels of `text` drawn at `scale`: no spacing after the last glyph.
inline int text_width(std::string_view text, int scale) {
  return text.empty() ? 0 : (static_cast<int>(text.size()) * kAdvance - 1) * scale;
}
inline int text_height(int scale) { return kGlyphHeight * scale; }

}  // namespace nsa::plot::font
