#pragma once

// Throwaway certificates for TLS tests, made with the `openssl` command at
// test time in the test's temp dir (no private key is ever committed): a
// CA, and certificates it signs for 127.0.0.1 (and localhost), usable by
// servers and clients alike. EC P-256 keys, valid for two days.

#include "tests/support/process.hpp"

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace troupe::test {

/// A certificate and its key, as PEM files.
struct cert_files {
  std::string cert;
  std::string key;
};

class test_ca {
 public:
  /// Makes the CA `name` in `dir`; check ok() (and error()).
  test_ca(std::filesystem::path dir, std::string name)
      : dir_(std::move(dir)), name_(std::move(name)) {
    ca_ = {(dir_ / (name_ + "-ca.pem")).string(),
           (dir_ / (name_ + "-ca.key")).string()};
    run({openssl(), "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ca_.key, "-out",
         ca_.cert, "-days", "2", "-subj", "/CN=" + name_ + " test CA"});
  }

  bool ok() const noexcept { return error_.empty(); }
  const std::string& error() const noexcept { return error_; }

  /// The CA's certificate (what peers trust).
  const std::string& cert() const noexcept { return ca_.cert; }

  /// Issues a certificate named `name` (its files `CA-NAME.pem/.key`) for
  /// 127.0.0.1 and localhost, with the subject `subject` (default
  /// "/CN=NAME"; etcd's gateway wants none with a CommonName when auth is
  /// on, so "/O=troupe" then).
  cert_files issue(const std::string& name, std::string subject = {}) {
    if (subject.empty())
      subject = "/CN=" + name;
    auto base = dir_ / (name_ + "-" + name);
    cert_files out{base.string() + ".pem", base.string() + ".key"};
    auto csr = base.string() + ".csr";
    auto ext = base.string() + ".ext";
    std::ofstream{ext} << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    run({openssl(), "req", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", out.key, "-out",
         csr, "-subj", subject});
    run({openssl(), "x509", "-req", "-in", csr, "-CA", ca_.cert, "-CAkey",
         ca_.key, "-CAcreateserial", "-out", out.cert, "-days", "2", "-extfile",
         ext});
    return out;
  }

 private:
  static std::string openssl() {
    for (auto dir : {"/usr/bin", "/usr/local/bin"}) {
      auto p = std::filesystem::path{dir} / "openssl";
      std::error_code ec;
      if (std::filesystem::exists(p, ec))
        return p.string();
    }
    return "/usr/bin/openssl";
  }

  void run(const std::vector<std::string>& argv) {
    if (!error_.empty())
      return;
    auto r = run_process(argv);
    if (r.exit_code != 0)
      error_ = "openssl failed (" + argv[1] + "): " + r.err;
  }

  std::filesystem::path dir_;
  std::string name_;
  cert_files ca_;
  std::string error_;
};

} // namespace troupe::test
