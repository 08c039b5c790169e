#include "cluster/mesh/tls.hpp"

#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>

#include <cstdio>
#include <cstdlib>
#include <dlfcn.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sstream>
#include <vector>

namespace troupe::cluster {

namespace {

struct bio_free {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct x509_free {
  void operator()(X509* x) const { X509_free(x); }
};
struct pkey_free {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct store_free {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
struct store_ctx_free {
  void operator()(X509_STORE_CTX* c) const { X509_STORE_CTX_free(c); }
};
using x509_ptr = std::unique_ptr<X509, x509_free>;

/// Never prompts: an encrypted key is refused, not asked about.
int no_passphrase(char*, int, int, void*) {
  return -1;
}

/// Reads `path` whole; sets `why` when it cannot.
std::string read_file(const std::string& path, std::string& why) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    why = "does not exist";
    return {};
  }
  if (std::filesystem::is_directory(path, ec)) {
    why = "is a directory, not a file";
    return {};
  }
  std::ifstream in{path, std::ios::binary};
  std::ostringstream text;
  if (in)
    text << in.rdbuf();
  if (!in || in.bad()) {
    why = "cannot be read (check its permissions)";
    return {};
  }
  return text.str();
}

std::unique_ptr<BIO, bio_free> memory_bio(const std::string& text) {
  return std::unique_ptr<BIO, bio_free>{
    BIO_new_mem_buf(text.data(), static_cast<int>(text.size()))};
}

/// Every certificate in a PEM text, in order.
std::vector<x509_ptr> read_certs(const std::string& text) {
  std::vector<x509_ptr> out;
  auto bio = memory_bio(text);
  while (auto* x
         = PEM_read_bio_X509(bio.get(), nullptr, no_passphrase, nullptr))
    out.emplace_back(x);
  ERR_clear_error();
  return out;
}

std::string where(const std::string& key, const std::string& path) {
  return key + " (" + path + ")";
}

} // namespace

std::string check_tls_files(const tls_files& f) {
  std::string why;
  std::vector<x509_ptr> certs, cas;
  if (!f.cert.empty()) {
    auto text = read_file(f.cert, why);
    if (!why.empty())
      return where(f.cert_key, f.cert) + " " + why;
    certs = read_certs(text);
    if (certs.empty())
      return where(f.cert_key, f.cert) + " holds no PEM certificate";
  }
  if (!f.key.empty()) {
    auto text = read_file(f.key, why);
    if (!why.empty())
      return where(f.key_key, f.key) + " " + why;
    auto bio = memory_bio(text);
    std::unique_ptr<EVP_PKEY, pkey_free> pkey{
      PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr)};
    ERR_clear_error();
    if (!pkey)
      return where(f.key_key, f.key)
             + " holds no PEM private key (or an encrypted one: give it "
               "unencrypted, readable by this user only)";
    if (!certs.empty()
        && X509_check_private_key(certs.front().get(), pkey.get()) != 1) {
      ERR_clear_error();
      return where(f.key_key, f.key) + " does not match the certificate in "
             + where(f.cert_key, f.cert);
    }
  }
  if (!f.ca.empty()) {
    auto text = read_file(f.ca, why);
    if (!why.empty())
      return where(f.ca_key, f.ca) + " " + why;
    cas = read_certs(text);
    if (cas.empty())
      return where(f.ca_key, f.ca) + " holds no PEM certificate";
  }
  if (f.cert_signed_by_ca && !certs.empty() && !cas.empty()) {
    std::unique_ptr<X509_STORE, store_free> store{X509_STORE_new()};
    for (auto& ca : cas)
      X509_STORE_add_cert(store.get(), ca.get());
    std::unique_ptr<X509_STORE_CTX, store_ctx_free> ctx{X509_STORE_CTX_new()};
    STACK_OF(X509)* chain = sk_X509_new_null();
    for (size_t i = 1; i < certs.size(); ++i)
      sk_X509_push(chain, certs[i].get());
    X509_STORE_CTX_init(ctx.get(), store.get(), certs.front().get(), chain);
    auto ok = X509_verify_cert(ctx.get()) == 1;
    auto err = X509_STORE_CTX_get_error(ctx.get());
    sk_X509_free(chain);
    ERR_clear_error();
    if (!ok)
      return where(f.cert_key, f.cert) + " does not verify against "
             + where(f.ca_key, f.ca) + ": "
             + X509_verify_cert_error_string(err);
  }
  return {};
}

void configure_mesh_tls(caf::actor_system_config& cfg, const tls_files& f) {
  // After the middleman: the manager uses its multiplexer and BASP broker.
  cfg.load<caf::openssl::manager>();
  cfg.openssl_certificate = f.cert;
  cfg.openssl_key = f.key;
  cfg.openssl_cafile = f.ca;
}

} // namespace troupe::cluster

// OpenSSL's rule: the calling thread's error queue must be empty before an
// SSL I/O call, or SSL_get_error() may report a stale error for a call that
// only wants more data. libcaf_openssl (0.17) leaves the queue filled after
// a failed handshake (a peer with a certificate from another CA, or one that
// speaks no TLS) on the middleman's one I/O thread, and the next healthy
// link on that thread then fails its read: every mesh link would drop while
// a stranger knocks. These definitions, in the executable, come before
// libssl's for every caller (libcaf_openssl included): each clears the
// queue, then calls libssl's own. Asio's TLS streams clear it themselves,
// so for them nothing changes.
namespace {

template<class F>
F real_ssl(const char* name) {
  auto* f = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
  if (!f) {
    std::fprintf(stderr, "troupe: cannot find libssl's %s\n", name);
    std::abort();
  }
  return f;
}

} // namespace

extern "C" {

__attribute__((visibility("default"))) int SSL_read(SSL* s, void* buf,
                                                    int num) {
  static auto real = real_ssl<int (*)(SSL*, void*, int)>("SSL_read");
  ERR_clear_error();
  return real(s, buf, num);
}

__attribute__((visibility("default"))) int SSL_write(SSL* s, const void* buf,
                                                     int num) {
  static auto real = real_ssl<int (*)(SSL*, const void*, int)>("SSL_write");
  ERR_clear_error();
  return real(s, buf, num);
}

__attribute__((visibility("default"))) int SSL_connect(SSL* s) {
  static auto real = real_ssl<int (*)(SSL*)>("SSL_connect");
  ERR_clear_error();
  return real(s);
}

__attribute__((visibility("default"))) int SSL_accept(SSL* s) {
  static auto real = real_ssl<int (*)(SSL*)>("SSL_accept");
  ERR_clear_error();
  return real(s);
}

} // extern "C"
