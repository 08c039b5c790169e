#pragma once

// Network namespaces for tests of network partitions between real
// processes (as root): troupe::chaos::netns_lab (tools/chaos/netns.hpp),
// the one `troupe chaos` uses, with the names tests use ("troupe-t" PID)
// and answers tests check as booleans, errors gathered in error(). Hosts
// are added at the numbers a test gives; the CLI may run on the switch
// ("switch": prefix(), enter()), or in the root namespace, which reaches
// every host too. The target links troupe_chaos.

#include "tools/chaos/netns.hpp"

#include <string>
#include <vector>

namespace troupe::test {

class netns_lab {
 public:
  /// The prefix of every namespace a test's lab makes.
  static constexpr const char* name_prefix = "troupe-t";

  /// Why namespaces cannot be used here (not root, no `ip`), or empty:
  /// tests skip with this reason.
  static std::string unavailable() {
    return chaos::netns_lab::unavailable(false);
  }

  /// Why cut() cannot work here (no `nft`), or empty.
  static std::string no_nft() { return chaos::netns_lab::no_nft(); }

  /// Makes the switch namespace; check ok() (and error()).
  netns_lab() : lab_(name_prefix), error_(lab_.error()) {}

  bool ok() const noexcept { return lab_.error().empty(); }
  const std::string& error() const noexcept { return error_; }

  /// Adds host `name` as number `n` (1..252) of the subnet; returns its
  /// address, or empty on failure (then see error()).
  std::string add(const std::string& name, int n) {
    return took(lab_.add_host(name, n)) ? lab_.address(name) : std::string{};
  }

  /// Host `name`'s address ("" when unknown); "switch" is the switch's.
  std::string address(const std::string& name) const {
    return lab_.address(name);
  }

  /// What runs a command in host `name`'s namespace ("switch": the
  /// switch's): put it before the command's argv.
  std::vector<std::string> prefix(const std::string& name) const {
    return lab_.prefix(name);
  }

  /// Drops every packet between host `name` and each of `others`, both
  /// ways, from now on; returns whether nft took it.
  bool cut(const std::string& name, const std::vector<std::string>& others) {
    return took(lab_.cut(name, others));
  }

  /// Lets packets between host `name` and each of `others` through again
  /// (every one cut, when `others` is empty).
  bool heal(const std::string& name,
            const std::vector<std::string>& others = {}) {
    return took(lab_.heal(name, others));
  }

  /// Moves the calling thread (alone) into host `name`'s namespace
  /// ("switch": the switch's); returns whether it could.
  bool enter(const std::string& name) const { return lab_.enter(name); }

  /// Takes host `name`'s link to the switch down (`up`: back up).
  bool isolate(const std::string& name, bool down = true) {
    return took(down ? lab_.isolate(name) : lab_.rejoin(name));
  }

  /// The namespaces that exist now whose names start with `tag`.
  static std::vector<std::string> listed(const std::string& tag) {
    return chaos::netns_lab::listed(tag);
  }

  const std::string& tag() const noexcept { return lab_.tag(); }

  /// The lab itself.
  chaos::netns_lab& lab() noexcept { return lab_; }

 private:
  /// Whether `why` is empty; else adds it to error().
  bool took(const std::string& why) {
    error_ += why;
    return why.empty();
  }

  chaos::netns_lab lab_;
  std::string error_;
};

} // namespace troupe::test
