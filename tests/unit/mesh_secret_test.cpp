// The cluster secret: where it comes from, what is refused, and the
// HMAC-SHA256 the mesh's challenges use.

#include "cluster/mesh/secret.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

#include <fstream>

using troupe::cluster::hmac_hex;
using troupe::cluster::random_nonce;
using troupe::cluster::resolve_secret;
using troupe::cluster::same_proof;

TEST(ClusterSecret, HmacMatchesTheRfc4231Vector) {
  // RFC 4231, test case 2.
  EXPECT_EQ(hmac_hex("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(ClusterSecret, ProofsCompareWholly) {
  auto a = hmac_hex("k-0123456789abcdef", "m");
  EXPECT_TRUE(same_proof(a, a));
  EXPECT_FALSE(same_proof(a, hmac_hex("k-0123456789abcdeF", "m")));
  EXPECT_FALSE(same_proof(a, a.substr(0, 63)));
  EXPECT_FALSE(same_proof("", ""));
  auto n = random_nonce();
  EXPECT_EQ(n.size(), 32u);
  EXPECT_NE(n, random_nonce());
}

TEST(ClusterSecret, ComesFromTheValueOrAFileAndIsRefusedWhenShort) {
  std::string secret;
  EXPECT_EQ(resolve_secret("0123456789abcdef", "", secret), "");
  EXPECT_EQ(secret, "0123456789abcdef");
  auto why = resolve_secret("", "", secret);
  EXPECT_NE(why.find("TROUPE_CLUSTER_SECRET"), std::string::npos) << why;
  why = resolve_secret("short-one", "", secret);
  EXPECT_NE(why.find("TROUPE_CLUSTER_SECRET must hold at least 16"),
            std::string::npos)
    << why;
  EXPECT_EQ(why.find("short-one"), std::string::npos) << why;
  EXPECT_TRUE(secret.empty());
  troupe::test::temp_dir dir;
  auto file = dir.path() / "secret";
  std::ofstream{file} << "from-a-file-0123456789\n\n";
  EXPECT_EQ(resolve_secret("", file.string(), secret), "");
  EXPECT_EQ(secret, "from-a-file-0123456789");
  why = resolve_secret("", (dir.path() / "none").string(), secret);
  EXPECT_NE(why.find("cannot read cluster.secret_file"), std::string::npos)
    << why;
}
