// The spec cache: parsed workflows shared by their runs, bounded by count and
// by bytes of text, least recently used dropped first.

#include "actors/services.hpp"

#include <gtest/gtest.h>

#include <string>

using namespace troupe;

namespace {

std::string source(int i, size_t padding = 0) {
  return "name: wf-" + std::to_string(i) + "\n# " + std::string(padding, 'x')
         + "\nnodes:\n  a: {kind: noop}\n";
}

} // namespace

TEST(SpecCache, ForgetsOldWorkflowsWhileRunsKeepTheirs) {
  actors::spec_cache cache; // default bounds
  std::string error;
  auto first = cache.get(source(0), error);
  ASSERT_TRUE(first) << error;
  EXPECT_EQ(cache.get(source(0), error), first);
  // Many more distinct workflows than the cache keeps.
  for (int i = 1; i <= 3000; ++i)
    ASSERT_TRUE(cache.get(source(i), error)) << error;
  // The first was dropped: asked again, it is parsed again; a run that holds
  // the old one still has it whole.
  auto again = cache.get(source(0), error);
  ASSERT_TRUE(again);
  EXPECT_NE(again, first);
  EXPECT_EQ(first->name, "wf-0");
  EXPECT_EQ(first->nodes.size(), 1u);
}

TEST(SpecCache, DropsTheLeastRecentlyUsedByCountAndBytes) {
  actors::spec_cache cache;
  cache.set_limits(3, 1 << 20);
  std::string error;
  auto a = cache.get(source(1), error);
  auto b = cache.get(source(2), error);
  auto c = cache.get(source(3), error);
  EXPECT_EQ(cache.get(source(1), error), a); // now the most recent
  cache.get(source(4), error);               // drops 2, the least recent
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_EQ(cache.get(source(1), error), a);
  EXPECT_EQ(cache.get(source(3), error), c);
  EXPECT_NE(cache.get(source(2), error), b);
  // By bytes: three texts of about 400 bytes in 1000.
  cache.set_limits(100, 1000);
  EXPECT_LE(cache.bytes(), 1000u);
  for (int i = 10; i < 13; ++i)
    cache.get(source(i, 400), error);
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_LE(cache.bytes(), 1000u);
  // Text bigger than the whole cache is parsed but not kept.
  auto big = cache.get(source(99, 2000), error);
  ASSERT_TRUE(big) << error;
  EXPECT_NE(cache.get(source(99, 2000), error), big);
  EXPECT_LE(cache.bytes(), 1000u);
  // A workflow that does not parse is not kept either.
  EXPECT_FALSE(cache.get("name: [", error));
  EXPECT_FALSE(error.empty());
}

TEST(SpecCache, GivesEveryProblemOfAnInvalidWorkflowAndKeepsOnlyValidOnes) {
  actors::spec_cache cache;
  runtime::diagnostics errors;
  // Two problems, on two lines: both come back, in file order.
  const std::string bad = "name: wf\nnodes:\n  a: {kind: nosuchkind}\n"
                          "  b: {kind: noop, after: [zz]}\n";
  EXPECT_FALSE(cache.get(bad, errors));
  ASSERT_GE(errors.size(), 2u);
  EXPECT_LT(errors[0].line, errors[1].line);
  EXPECT_EQ(cache.size(), 0u);
  // A valid one is kept and shared: the submission path and the runs
  // parse each text once.
  errors.clear();
  auto spec = cache.get(source(1), errors);
  ASSERT_TRUE(spec);
  EXPECT_TRUE(errors.empty());
  EXPECT_EQ(cache.get(source(1), errors), spec);
  EXPECT_EQ(cache.size(), 1u);
}
