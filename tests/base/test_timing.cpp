// Statistics of the timing helpers (lut, bench).
#include <gtest/gtest.h>

#include "llmc/core/timing.h"

using namespace llmc;

TEST(Timing, MedianAndQuantile) {
  EXPECT_EQ(median({}), 0.0);
  EXPECT_EQ(quantile({}, 0.1), 0.0);
  EXPECT_EQ(median({3, 1, 2}), 2.0);
  EXPECT_EQ(median({4, 1, 3, 2}), 2.5);
  const std::vector<double> v = {10, 0, 5, 20, 15, 30, 25, 35, 40, 45, 50};  // 0..50 step 5, shuffled
  EXPECT_DOUBLE_EQ(quantile(v, 0.0), 0.0);
  EXPECT_DOUBLE_EQ(quantile(v, 1.0), 50.0);
  EXPECT_DOUBLE_EQ(quantile(v, 0.5), median(v));
  EXPECT_DOUBLE_EQ(quantile(v, 0.1), 5.0);    // position 1 of 0..10
  EXPECT_DOUBLE_EQ(quantile(v, 0.25), 12.5);  // position 2.5: halfway between 10 and 15
  EXPECT_DOUBLE_EQ(quantile({7}, 0.1), 7.0);
  EXPECT_DOUBLE_EQ(quantile({1, 2}, 2.0), 2.0);  // clamped to [0, 1]
  for (double q : {0.1, 0.37, 0.5, 0.9}) EXPECT_DOUBLE_EQ(quantile({4, 1, 3, 2}, q), 1 + 3 * q) << q;
}
