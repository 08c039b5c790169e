#pragma once

// Network namespaces in which `troupe chaos` (as root) runs each member and
// the etcd, so that the `partition` fault can cut the network between them
// as a broken network would, while the runner, in the root namespace, still
// reaches every one of them. Tests of partitions use the same lab.

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace troupe::chaos {

/// A private network of hosts, each a network namespace: a "switch"
/// namespace holds bridge br0, and every host is joined to it by a veth
/// pair (eth0 in the host, p-NAME on the bridge), with address
/// SUBNET.N/24. The root namespace has a veth into the switch too, with
/// SUBNET.254, so a process there (the runner and its control client)
/// reaches SUBNET.N:port of every host directly; the switch's own bridge
/// has SUBNET.253. The subnet is 10.213.X.0/24, X chosen when the lab is
/// made so that labs living at once (a chaos run and a test, say) never
/// share one: the root-side veth is named troupeX, and a name the kernel
/// already has is taken.
///
/// cut() drops, with nftables inside a host's namespace, every packet
/// between it and some other hosts, both ways and silently; heal() lets
/// them through again. Neither touches what the host exchanges with the
/// root namespace, so the runner can still ask a member for its state
/// during a partition. isolate() takes a host's link down (the root
/// namespace loses it too); rejoin() takes it back up.
///
/// Every namespace is named TAG + host, where TAG is the prefix given to
/// the constructor, the PID and a dash ("troupe-c4242-m1"); the root-side
/// veth carries TAG as its alias. The destructor deletes everything the lab
/// made; namespaces and root-side veths of labs with the same prefix whose
/// process is gone are deleted when a lab is made. Commands (`ip`, `nft`)
/// each run for at most 10 s; an error names the command that failed and
/// what it printed on stderr. A lab is used from one thread (enter() and
/// enter_path() may be called from any). It reaps the commands it runs by
/// their PID, so its user must not reap with waitpid(-1) nor ignore
/// SIGCHLD.
///
/// A member runs in its host's namespace when its forked child enters it
/// before exec; the path is taken before fork(), as the child may only make
/// async-signal-safe calls:
///
///     netns_lab lab{"troupe-c"};                // check lab.error()
///     lab.add_host("m1");                       // SUBNET.1; check the error
///     auto where = lab.path("m1");
///     auto listen = lab.address("m1") + ":7400";
///     pid_t pid = fork();
///     if (pid == 0) {
///       prctl(PR_SET_PDEATHSIG, SIGTERM);
///       if (!netns_lab::enter_path(where.c_str()))
///         _exit(126);
///       execv(...);                              // troupe node ... --listen
///     }
///     lab.cut("m1", {"etcd"});                   // m1 and etcd lose each
///     lab.heal("m1");                            // other, not the runner
class netns_lab {
 public:
  // -- availability ---------------------------------------------------------

  /// Returns why labs cannot be used here (not root, no `ip`, no `nft`,
  /// the last unless `need_nft` is false), or an empty string.
  static std::string unavailable(bool need_nft = true);

  /// Returns why cut() cannot work here (no `nft`), or an empty string.
  static std::string no_nft();

  // -- making and unmaking --------------------------------------------------

  /// Makes the switch namespace, its bridge, and the root namespace's veth
  /// into it, after deleting what labs of `prefix` whose process is gone
  /// left behind; check error(). `prefix` tells the users apart (the
  /// runner's "troupe-c", tests' "troupe-t"): a lab deletes only leftovers
  /// with its own prefix.
  explicit netns_lab(std::string prefix);

  /// Deletes the root-side veth and every namespace of this lab (which
  /// deletes their links). Processes still running in them are not
  /// killed: stop them first.
  ~netns_lab();

  netns_lab(const netns_lab&) = delete;
  netns_lab& operator=(const netns_lab&) = delete;

  /// Why the constructor failed, or an empty string when the lab works.
  const std::string& error() const noexcept { return error_; }

  /// Adds host `name` (letters, digits, `_` and `-`, at most 12 of them;
  /// not `switch`) as number `number` of the subnet (1..252; 0: the lowest
  /// free one). Returns an error message, else an empty string; address()
  /// then gives its address.
  [[nodiscard]] std::string add_host(const std::string& name, int number = 0);

  // -- addresses and namespaces ---------------------------------------------

  /// The subnet's first three octets, "10.213.X".
  const std::string& subnet() const noexcept { return subnet_; }

  /// Host `name`'s address, "switch" giving the bridge's (SUBNET.253) and
  /// "root" the root namespace's (SUBNET.254); empty when unknown.
  std::string address(const std::string& name) const;

  /// The hosts added, by name.
  std::vector<std::string> hosts() const;

  /// The path of host `name`'s namespace ("switch": the switch's), for
  /// enter_path(); empty when unknown.
  std::string path(const std::string& name) const;

  /// What runs a command in host `name`'s namespace ("switch": the
  /// switch's) through `ip netns exec`: put it before the command's argv.
  /// A process that forks its children itself should use enter_path() in
  /// the child instead, so that the child is the command (signals and
  /// PR_SET_PDEATHSIG reach it, its PID is the command's).
  std::vector<std::string> prefix(const std::string& name) const;

  /// Moves the calling thread (alone) into the network namespace at `path`
  /// (from path()); returns whether it could. Calls open(), setns() and
  /// close() only, so a child may call it between fork() and exec().
  static bool enter_path(const char* path) noexcept;

  /// Moves the calling thread (alone) into host `name`'s namespace, so that
  /// sockets it makes from now on live there; returns whether it could.
  bool enter(const std::string& name) const;

  // -- faults ---------------------------------------------------------------

  /// Drops every packet between host `name` and each of `others` (host
  /// names), both ways, from now on, adding to what is cut already.
  /// Returns an error message, else an empty string.
  [[nodiscard]] std::string cut(const std::string& name,
                                const std::vector<std::string>& others);

  /// Lets packets between host `name` and each of `others` through again
  /// (every host cut from it, when `others` is empty). Returns an error
  /// message, else an empty string.
  [[nodiscard]] std::string heal(const std::string& name,
                                 const std::vector<std::string>& others = {});

  /// Heals every host cut from any; returns the errors, one a line.
  [[nodiscard]] std::string heal_all();

  /// Takes host `name`'s link to the switch down: it reaches nothing and
  /// nothing reaches it, the root namespace included. Returns an error
  /// message, else an empty string.
  [[nodiscard]] std::string isolate(const std::string& name);

  /// Takes host `name`'s link back up. Returns an error message, else an
  /// empty string.
  [[nodiscard]] std::string rejoin(const std::string& name);

  // -- inspection -----------------------------------------------------------

  /// TAG: the start of every namespace name of this lab.
  const std::string& tag() const noexcept { return tag_; }

  /// The root namespace's veth into the switch ("troupeX"); empty if the
  /// constructor failed before making it.
  const std::string& root_link() const noexcept { return root_link_; }

  /// The namespaces that exist now whose names start with `start`.
  static std::vector<std::string> listed(const std::string& start);

  /// The root namespace's links whose alias starts with `start`.
  static std::vector<std::string> root_links(const std::string& start);

 private:
  bool known(const std::string& name) const;
  std::string apply(const std::string& name);
  void remove_ours();

  std::string prefix_;
  std::string tag_;
  std::string subnet_;
  std::string root_link_;
  std::string error_;
  std::map<std::string, std::string> hosts_;
  std::map<std::string, std::set<std::string>> cut_;
};

} // namespace troupe::chaos
