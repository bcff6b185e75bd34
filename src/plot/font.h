// The built-in bitmap font: 5x7 glyphs for printable ASCII (32..126), advancing 6 columns,
// drawn at an integer scale; g j p q y , ; hang one row below (kDescent). Text is laid out
// on the 7-row cap height: the descender row lies below the text box, in the spacing
// every layout leaves between lines. Other bytes show as '?'.
#pragma once

#include <cstdint>
#include <string_view>

namespace nsa::plot::font {

inline constexpr int kGlyphWidth = 5, kGlyphHeight = 7, kDescent = 1, kAdvance = 6;

// Column c (0..4, left to right) of the glyph of `ch`: bit r (0..7) set when row r (top
// to bottom) is ink; row 7 is the descender.
std::uint8_t glyph_column(char ch, int c);

// Size in pixels of `text` drawn at `scale`: no spacing after the last glyph.
inline int text_width(std::string_view text, int scale) {
  return text.empty() ? 0 : (static_cast<int>(text.size()) * kAdvance - 1) * scale;
}
inline int text_height(int scale) { return kGlyphHeight * scale; }

}  // namespace nsa::plot::font
