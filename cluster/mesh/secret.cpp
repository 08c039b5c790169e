#include "cluster/mesh/secret.hpp"

#include <fstream>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <random>
#include <sstream>

namespace troupe::cluster {

namespace {

std::string to_hex(const unsigned char* p, size_t n) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 0xf];
  }
  return out;
}

} // namespace

std::string resolve_secret(const std::string& value, const std::string& file,
                           std::string& secret) {
  secret.clear();
  std::string where = "TROUPE_CLUSTER_SECRET (cluster.secret)";
  if (!file.empty()) {
    std::ifstream in{file, std::ios::binary};
    if (!in)
      return "cannot read cluster.secret_file " + file
             + "; set TROUPE_CLUSTER_SECRET or give a readable file";
    std::ostringstream text;
    text << in.rdbuf();
    secret = text.str();
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r'))
      secret.pop_back();
    where = "cluster.secret_file " + file;
  } else {
    secret = value;
  }
  if (secret.empty())
    return "a cluster member needs the cluster secret: set "
           "TROUPE_CLUSTER_SECRET (or cluster.secret_file) to the same value "
           "of at least "
           + std::to_string(min_secret_bytes) + " bytes on every member";
  if (secret.size() < min_secret_bytes) {
    auto n = secret.size();
    secret.clear();
    return "the cluster secret from " + where + " is " + std::to_string(n)
           + " bytes; TROUPE_CLUSTER_SECRET must hold at least "
           + std::to_string(min_secret_bytes);
  }
  return {};
}

std::string hmac_hex(const std::string& secret, const std::string& message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(),
       out, &len);
  return to_hex(out, len);
}

bool same_proof(const std::string& a, const std::string& b) {
  return a.size() == b.size() && !a.empty()
         && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string random_nonce() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    // OpenSSL's generator failed: fall back to the OS's.
    std::random_device rd;
    for (auto& b : bytes)
      b = static_cast<unsigned char>(rd());
  }
  return to_hex(bytes, sizeof bytes);
}

} // namespace troupe::cluster
