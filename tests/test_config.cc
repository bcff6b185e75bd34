// Config: the paper's defaults, the derived block counts against hand-computed values
// (spec, "Branch 1": N_cmp(T) = floor((T - l)/d) + 1 when T >= l, else 0), the resolved
// scale and phi hidden size, phi kind names, and describe(). Invalid configs are in
// test_errors.cc.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "nsa/config.h"
#include "nsa/error.h"

namespace nsa {
namespace {

TEST(Config, PaperDefaults) {
  const Config c;
  EXPECT_EQ(c.block_len(), 32);
  EXPECT_EQ(c.stride(), 16);
  EXPECT_EQ(c.sel_block(), 64);
  EXPECT_EQ(c.top_n(), 16);
  EXPECT_EQ(c.n_init(), 1);
  EXPECT_EQ(c.n_local(), 2);
  EXPECT_EQ(c.window(), 512);
  EXPECT_EQ(c.phi(), PhiKind::mlp);
  EXPECT_EQ(c.options().scale, 0.0);
  EXPECT_EQ(c.options().phi_hidden, 0);
}

TEST(Config, OptionsRoundTrip) {
  ConfigOptions o;
  o.block_len = 8;
  o.stride = 4;
  o.sel_block = 24;
  o.top_n = 5;
  o.n_init = 2;
  o.n_local = 3;
  o.window = 7;
  o.scale = 0.25;
  o.phi = PhiKind::linear;
  o.phi_hidden = 12;
  const Config c(o);
  EXPECT_EQ(c.block_len(), 8);
  EXPECT_EQ(c.stride(), 4);
  EXPECT_EQ(c.sel_block(), 24);
  EXPECT_EQ(c.top_n(), 5);
  EXPECT_EQ(c.n_init(), 2);
  EXPECT_EQ(c.n_local(), 3);
  EXPECT_EQ(c.window(), 7);
  EXPECT_EQ(c.phi(), PhiKind::linear);
  EXPECT_EQ(c.options().phi_hidden, 12);
  const Config copy = c;
  EXPECT_EQ(copy.describe(), c.describe());
}

TEST(Config, ScaleDefaultsToInverseSqrtDk) {
  const Config c;
  EXPECT_DOUBLE_EQ(c.scale_for(192), 1.0 / std::sqrt(192.0));
  EXPECT_DOUBLE_EQ(c.scale_for(64), 0.125);
  ConfigOptions o;
  o.scale = 0.3;
  EXPECT_DOUBLE_EQ(Config(o).scale_for(64), 0.3);
  EXPECT_DOUBLE_EQ(Config(o).scale_for(192), 0.3);
}

TEST(Config, PhiHiddenDefaultsToHeadDim) {
  const Config c;
  EXPECT_EQ(c.phi_hidden_for(192), 192);
  EXPECT_EQ(c.phi_hidden_for(128), 128);
  ConfigOptions o;
  o.phi_hidden = 48;
  EXPECT_EQ(Config(o).phi_hidden_for(192), 48);
  EXPECT_EQ(Config(o).phi_hidden_for(128), 48);
}

TEST(Config, NumCmpBlocksPaperDefaults) {  // l = 32, d = 16
  const Config c;
  EXPECT_EQ(c.num_cmp_blocks(0), 0);
  EXPECT_EQ(c.num_cmp_blocks(1), 0);
  EXPECT_EQ(c.num_cmp_blocks(31), 0);
  EXPECT_EQ(c.num_cmp_blocks(32), 1);   // block 0 = [0, 32)
  EXPECT_EQ(c.num_cmp_blocks(47), 1);
  EXPECT_EQ(c.num_cmp_blocks(48), 2);   // block 1 = [16, 48)
  EXPECT_EQ(c.num_cmp_blocks(64), 3);
  EXPECT_EQ(c.num_cmp_blocks(1000), 61);  // (1000 - 32) / 16 = 60.5 -> 60, + 1
  EXPECT_EQ(c.num_cmp_blocks(4097), 255);  // 4065 / 16 = 254.06 -> 254, + 1
  EXPECT_EQ(c.num_cmp_blocks(16384), 1023);
  EXPECT_EQ(c.num_cmp_blocks(index_t{1} << 40), ((index_t{1} << 40) - 32) / 16 + 1);  // 64-bit
}

TEST(Config, NumCmpBlocksOtherStrides) {
  ConfigOptions o;
  o.block_len = 8;
  o.stride = 4;
  o.sel_block = 16;
  o.top_n = 4;
  const Config small(o);
  EXPECT_EQ(small.num_cmp_blocks(7), 0);
  EXPECT_EQ(small.num_cmp_blocks(8), 1);
  EXPECT_EQ(small.num_cmp_blocks(37), 8);  // (37 - 8) / 4 = 7.25 -> 7, + 1
  EXPECT_EQ(small.num_cmp_blocks(100), 24);
  o.stride = 8;  // non-overlapping blocks
  const Config disjoint(o);
  EXPECT_EQ(disjoint.num_cmp_blocks(100), 12);  // floor(100 / 8)
  EXPECT_EQ(disjoint.num_cmp_blocks(8), 1);
}

TEST(Config, NumSelBlocks) {  // ceil(T / l'), l' = 64
  const Config c;
  EXPECT_EQ(c.num_sel_blocks(0), 0);
  EXPECT_EQ(c.num_sel_blocks(1), 1);
  EXPECT_EQ(c.num_sel_blocks(64), 1);
  EXPECT_EQ(c.num_sel_blocks(65), 2);
  EXPECT_EQ(c.num_sel_blocks(1000), 16);
  EXPECT_EQ(c.num_sel_blocks(4097), 65);
  EXPECT_EQ(c.num_sel_blocks(16384), 256);
}

TEST(Config, VisibleCmpBlocks) {  // block i visible to query t iff i*d + l - 1 <= t
  const Config c;
  EXPECT_EQ(c.visible_cmp_blocks(0), 0);
  EXPECT_EQ(c.visible_cmp_blocks(30), 0);
  EXPECT_EQ(c.visible_cmp_blocks(31), 1);  // the query's own token closes block 0
  EXPECT_EQ(c.visible_cmp_blocks(46), 1);
  EXPECT_EQ(c.visible_cmp_blocks(47), 2);
  EXPECT_EQ(c.visible_cmp_blocks(999), 61);
  for (index_t t = 0; t < 300; ++t) {  // the rule itself, block by block
    index_t visible = 0;
    while (visible * c.stride() + c.block_len() - 1 <= t) ++visible;
    ASSERT_EQ(c.visible_cmp_blocks(t), visible) << "t=" << t;
  }
}

TEST(Config, PhiKindNames) {
  for (PhiKind k : {PhiKind::mlp, PhiKind::linear, PhiKind::mean})
    EXPECT_EQ(parse_phi_kind(phi_kind_name(k)), k);
  EXPECT_STREQ(phi_kind_name(PhiKind::mlp), "mlp");
  EXPECT_STREQ(phi_kind_name(PhiKind::linear), "linear");
  EXPECT_STREQ(phi_kind_name(PhiKind::mean), "mean");
  EXPECT_THROW(parse_phi_kind("MLP"), Error);
  EXPECT_THROW(parse_phi_kind(""), Error);
}

TEST(Config, Describe) {
  EXPECT_EQ(Config().describe(), "l=32 d=16 l'=64 n=16 n_init=1 n_local=2 w=512 phi=mlp");
  ConfigOptions o;
  o.block_len = 8;
  o.stride = 4;
  o.sel_block = 16;
  o.top_n = 4;
  o.window = 32;
  o.phi = PhiKind::mean;
  o.phi_hidden = 24;
  o.scale = 0.5;
  EXPECT_EQ(Config(o).describe(), "l=8 d=4 l'=16 n=4 n_init=1 n_local=2 w=32 phi=mean hidden=24 scale=0.5");
}

}  // namespace
}  // namespace nsa
