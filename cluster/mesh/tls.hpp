#pragma once

// TLS files: checking a certificate, its key and a CA before a node starts
// (so a mistake is a clear error naming the key and the file, never a
// failed handshake later), and mutual TLS on the peer mesh through
// libcaf_openssl. The mesh's TLS is on with all three of cluster.tls_cert,
// cluster.tls_key and cluster.tls_ca, and off with none; both ends then
// show a certificate the CA signed, and the cluster secret's challenge
// still runs over the encrypted link.

#include <caf/actor_system_config.hpp>

#include <string>

namespace troupe::cluster {

/// PEM files of one TLS identity, each with the configuration key that
/// named it (for errors). An empty path is not set.
struct tls_files {
  std::string cert;
  std::string key;
  std::string ca;
  std::string cert_key = "cluster.tls_cert";
  std::string key_key = "cluster.tls_key";
  std::string ca_key = "cluster.tls_ca";
  /// Whether the certificate must be signed by the CA (the mesh: every
  /// member trusts the same CA). Off for etcd, whose CA signs the server.
  bool cert_signed_by_ca = true;
};

/// Checks the files that are set: each exists and is readable, the
/// certificate and the CA are PEM certificates, the key is an unencrypted
/// PEM private key that matches the certificate, and (when asked) the CA
/// signed the certificate and it is valid now. Returns the first problem,
/// naming its key and file, or "". Reads no other file and prompts for
/// nothing.
std::string check_tls_files(const tls_files& files);

/// Loads libcaf_openssl's manager into `cfg` (after configure_mesh, which
/// loads the middleman) with `files` as this member's certificate, key and
/// trusted CA: CAF then requires a certificate the CA signed on both ends
/// of every mesh link. Only a cluster member with the TLS keys calls it.
void configure_mesh_tls(caf::actor_system_config& cfg, const tls_files& files);

} // namespace troupe::cluster
