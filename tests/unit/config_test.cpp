#include "config/loader.hpp"
#include "tests/support/temp_dir.hpp"

#include <gtest/gtest.h>

using namespace troupe::config;
using namespace std::chrono_literals;
using troupe::test::temp_dir;

namespace {

/// Loads with config_dir pointing at a temp folder and no process env.
struct ConfigTest : ::testing::Test {
  temp_dir dir;
  load_options opts;

  ConfigTest() { opts.config_dir = dir.path(); }

  load_result load_now() { return load(opts); }

  /// Returns all problems joined, for assertion messages.
  static std::string all(const load_result& r) {
    std::string s;
    for (auto& p : r.problems)
      s += p.to_string() + "\n";
    return s;
  }
};

} // namespace

TEST_F(ConfigTest, EveryBuiltInDefaultParsesAndIsWithinLimits) {
  for (auto& k : all_keys()) {
    std::string err;
    EXPECT_TRUE(parse_text(k, k.default_text, err)) << k.name() << ": " << err;
  }
  auto r = load_now();
  ASSERT_TRUE(r.ok()) << all(r);
  EXPECT_EQ(r.effective.get_string("node.data_dir"), "data");
  EXPECT_EQ(r.effective.at("node.data_dir").source, "default");
  EXPECT_EQ(r.effective.get_string("storage.durability"), "process");
}

TEST_F(ConfigTest, LayersApplyLowestFirst) {
  dir.write("default.toml", "[node]\nname = \"from-default\"\n"
                            "data_dir = \"d1\"\n[log]\nlevel = \"warn\"\n");
  dir.write("staging.toml", "[node]\nname = \"from-env-file\"\n");
  auto extra = dir.write("extra.toml", "[node]\ndata_dir = \"d2\"\n"
                                       "[storage]\ndurability = \"machine\"\n");
  opts.env_name = "staging";
  opts.env_explicit = true;
  opts.config_file = extra;
  opts.environment
    = {{"TROUPE_STORAGE_DURABILITY", "process"}, {"TROUPE_LOG_FORMAT", "json"}};
  opts.flags = {{"--set", "log.format", "text"}};
  auto r = load_now();
  ASSERT_TRUE(r.ok()) << all(r);
  auto& s = r.effective;
  EXPECT_EQ(s.get_string("log.level"), "warn");
  EXPECT_EQ(s.at("log.level").source,
            (dir.path() / "default.toml").string() + ":5");
  EXPECT_EQ(s.get_string("node.name"), "from-env-file");
  EXPECT_EQ(s.get_string("node.data_dir"), "d2");
  EXPECT_EQ(s.get_string("storage.durability"), "process");
  EXPECT_EQ(s.at("storage.durability").source, "env TROUPE_STORAGE_DURABILITY");
  EXPECT_EQ(s.get_string("log.format"), "text");
  EXPECT_EQ(s.at("log.format").source, "flag --set");
  EXPECT_EQ(s.env_name(), "staging");
  EXPECT_EQ(s.layers().size(), 6u);
}

TEST_F(ConfigTest, MissingDefaultEnvFileIsFineButExplicitOneIsNot) {
  EXPECT_TRUE(load_now().ok());
  opts.env_name = "prodution";
  opts.env_explicit = true;
  auto r = load_now();
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].where.find("prodution.toml"), std::string::npos);
  EXPECT_NE(r.problems[0].message.find("does not exist"), std::string::npos);
}

TEST_F(ConfigTest, RejectsBadEnvName) {
  opts.env_name = "../etc";
  opts.env_explicit = true;
  auto r = load_now();
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].where, "environment TROUPE_ENV");
}

TEST_F(ConfigTest, ReportsEveryProblemInAFileWithFileKeyValueAndAllowed) {
  dir.write("default.toml", R"([node]
nmae = "x"
[storage]
durability = "fast"
group_commit_max_batch = 0
[log]
level = 3
[control]
idle_timeout = "10"
listen = "localhost"
[bogus]
a = 1
[http]
listen = "127.0.0.1:99999"
)");
  auto r = load_now();
  ASSERT_EQ(r.problems.size(), 8u) << all(r);
  auto text = all(r);
  auto file = (dir.path() / "default.toml").string();
  // Each problem names the file and line, the key, the value, what is allowed.
  EXPECT_NE(text.find(file
                      + ":2: node.nmae: unknown key; [node] has name, "
                        "data_dir, shutdown_grace (did you mean 'name'?)"),
            std::string::npos)
    << text;
  EXPECT_NE(text.find(file
                      + ":4: storage.durability = \"fast\": must be one "
                        "of process, machine"),
            std::string::npos)
    << text;
  EXPECT_NE(text.find("storage.group_commit_max_batch = 0: must be from 1 to "
                      "65536"),
            std::string::npos)
    << text;
  EXPECT_NE(text.find("log.level = 3: expected a string"), std::string::npos)
    << text;
  EXPECT_NE(text.find("control.idle_timeout = \"10\": duration '10' has no "
                      "unit"),
            std::string::npos)
    << text;
  EXPECT_NE(text.find("control.listen = \"localhost\": expected HOST:PORT"),
            std::string::npos)
    << text;
  EXPECT_NE(text.find(":11: bogus: unknown section"), std::string::npos)
    << text;
  EXPECT_NE(text.find("http.listen = \"127.0.0.1:99999\": port must be"),
            std::string::npos)
    << text;
}

TEST_F(ConfigTest, SyntaxErrorNamesFileAndLine) {
  dir.write("default.toml", "[node]\nname = \"a\"\nbroken line\n");
  auto r = load_now();
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(r.problems[0].where, (dir.path() / "default.toml").string());
  EXPECT_NE(r.problems[0].message.find("syntax error: line 3"),
            std::string::npos)
    << r.problems[0].message;
}

TEST_F(ConfigTest, UnreadableFilesAreReported) {
  opts.config_file = dir.path() / "nope.toml";
  auto r = load_now();
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].to_string().find("nope.toml: file does not exist"),
            std::string::npos);
  opts.config_file = dir.path();
  r = load_now();
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].message.find("not a regular file"),
            std::string::npos);
  opts.config_file = dir.write("big.toml", std::string(2 << 20, '#'));
  r = load_now();
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].message.find("the limit is"), std::string::npos);
  opts.config_file = dir.write("bin.toml", std::string("\x00\x01\xff\xfe", 4));
  r = load_now();
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].message.find("syntax error"), std::string::npos);
}

TEST_F(ConfigTest, EnvironmentVariablesAreTypedAndChecked) {
  opts.environment = {{"TROUPE_STORAGE_GROUP_COMMIT_MAX_BATCH", "12x"},
                      {"TROUPE_AUTH_ENABLED", "maybe"},
                      {"TROUPE_NODE_DATADIR", "x"},
                      {"TROUPE_CLUSTER_SEEDS", "a:1,b:2"},
                      {"TROUPE_AUTH_SECRET", "s3cret"},
                      // Not configuration: CLI variables and unknown sections.
                      {"TROUPE_NODE", "127.0.0.1:7400"},
                      {"TROUPE_TOKEN", "abc"},
                      {"TROUPE_WHATEVER_X", "1"}};
  auto r = load_now();
  ASSERT_EQ(r.problems.size(), 3u) << all(r);
  auto text = all(r);
  EXPECT_NE(text.find("environment TROUPE_STORAGE_GROUP_COMMIT_MAX_BATCH: "
                      "storage.group_commit_max_batch = \"12x\": expected an "
                      "integer"),
            std::string::npos)
    << text;
  EXPECT_NE(text.find("TROUPE_AUTH_ENABLED: auth.enabled = \"maybe\": "
                      "expected true or false"),
            std::string::npos)
    << text;
  EXPECT_NE(text.find("did you mean 'TROUPE_NODE_DATA_DIR'?"),
            std::string::npos)
    << text;
  opts.environment.resize(2);
  opts.environment
    = {{"TROUPE_CLUSTER_SEEDS", "a:1,b:2"}, {"TROUPE_AUTH_SECRET", "s3cret"}};
  r = load_now();
  ASSERT_TRUE(r.ok()) << all(r);
  EXPECT_EQ(r.effective.get_list("cluster.seeds"),
            (std::vector<std::string>{"a:1", "b:2"}));
}

TEST_F(ConfigTest, FlagsAreCheckedAndUnknownKeysSuggested) {
  opts.flags = {{"--set", "storage.durabilty", "machine"},
                {"--data-dir", "node.data_dir", ""},
                {"--set", "nodot", "1"}};
  auto r = load_now();
  ASSERT_EQ(r.problems.size(), 3u) << all(r);
  auto text = all(r);
  EXPECT_NE(text.find("did you mean 'storage.durability'?"), std::string::npos)
    << text;
  EXPECT_NE(text.find("flag --data-dir: node.data_dir = \"\": must not be "
                      "empty"),
            std::string::npos)
    << text;
}

TEST_F(ConfigTest, CrossKeyChecks) {
  opts.flags = {{"--set", "cluster.heartbeat_interval", "2s"},
                {"--set", "cluster.connection_timeout", "1s"},
                {"--set", "tls.cert", "c.pem"}};
  auto r = load_now();
  ASSERT_EQ(r.problems.size(), 2u) << all(r);
  EXPECT_NE(all(r).find("must exceed cluster.heartbeat_interval (2s)"),
            std::string::npos);
  EXPECT_NE(all(r).find("set both tls.cert and tls.key"), std::string::npos);
}

TEST_F(ConfigTest, ShowMasksSecretsAndNamesSources) {
  opts.environment = {{"TROUPE_AUTH_SECRET", "hunter2"}};
  auto r = load_now();
  ASSERT_TRUE(r.ok()) << all(r);
  auto toml = render_toml(r.effective);
  EXPECT_EQ(toml.find("hunter2"), std::string::npos);
  EXPECT_NE(toml.find("secret = \"********\""), std::string::npos) << toml;
  EXPECT_NE(toml.find("# env TROUPE_AUTH_SECRET"), std::string::npos) << toml;
  EXPECT_NE(toml.find("durability = \"process\""), std::string::npos);
  auto json = render_json(r.effective);
  EXPECT_EQ(json.find("hunter2"), std::string::npos);
  EXPECT_NE(json.find("\"********\""), std::string::npos);
  // Secret values are masked in problems too.
  opts.flags = {{"--set", "auth.secret", std::string("a\0b", 3)}};
  r = load_now();
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].value.find("(secret)"), std::string::npos);
}

TEST(ConfigSchema, SecretsAreRecognisedByName) {
  EXPECT_TRUE(find_key("auth", "secret")->is_secret());
  EXPECT_FALSE(find_key("auth", "token_ttl")->is_secret());
  EXPECT_FALSE(find_key("node", "name")->is_secret());
}

TEST(ConfigSchema, RenderedTomlLoadsBackUnchanged) {
  temp_dir dir;
  load_options opts;
  opts.config_dir = dir.path();
  opts.flags = {{"--set", "cluster.seeds", "a:1,b:2"},
                {"--set", "node.name", "q\"uote"}};
  auto first = load(opts);
  ASSERT_TRUE(first.ok());
  opts.flags.clear();
  opts.config_file = dir.write("round.toml", render_toml(first.effective));
  auto second = load(opts);
  ASSERT_TRUE(second.ok()) << second.problems[0].to_string();
  for (auto& k : all_keys())
    EXPECT_EQ(to_text(first.effective.at(k.name()).v),
              to_text(second.effective.at(k.name()).v))
      << k.name();
}

TEST_F(ConfigTest, ClusterSectionIsCheckedKeyByKey) {
  dir.write("default.toml",
            "[cluster]\nname = \"prod\"\netcd = [\"http://127.0.0.1:2379\", "
            "\"https://10.0.0.1:2379\", \"127.0.0.1:2379\"]\n"
            "member = \"a/b\"\nlabels = [\"zone=eu\", \"zone=us\", \"bad\"]\n"
            "capacity = [\"exec=8\", \"http=-1\"]\nlease_ttl = \"1500ms\"\n"
            "etcd_password = \"hunter2\"\nlease = \"5s\"\n");
  auto r = load_now();
  auto text = all(r);
  for (auto needle :
       {"cluster.etcd: mixes http:// and https:// endpoints",
        "cluster.etcd = \"127.0.0.1:2379\": expected a URL",
        "cluster.member = \"a/b\": may hold only letters",
        "cluster.labels = \"zone=us\": 'zone' is given twice",
        "cluster.labels = \"bad\": expected NAME=VALUE",
        "cluster.capacity = \"http=-1\": N must be a whole number",
        "cluster.lease_ttl = \"1500ms\": must be whole seconds",
        "cluster.etcd_password: a password may not be written in a config "
        "file or given as a flag; set TROUPE_CLUSTER_ETCD_PASSWORD",
        "cluster.etcd_password: an etcd password needs "
        "cluster.etcd_username",
        "cluster.lease: unknown key; [cluster] has"})
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
  EXPECT_EQ(r.problems.size(), 10u) << text;
  EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
}

TEST_F(ConfigTest, LogRetainRecordsIsCheckedAndDefaultsToTenThousand) {
  auto r = load_now();
  ASSERT_TRUE(r.ok()) << all(r);
  EXPECT_EQ(r.effective.get_int("cluster.log_retain_records"), 10000);
  opts.flags = {{"--set", "cluster.log_retain_records", "-1"}};
  r = load_now();
  EXPECT_NE(all(r).find("cluster.log_retain_records = \"-1\": must be from 0 "
                        "to 1000000000"),
            std::string::npos)
    << all(r);
  opts.flags = {{"--set", "cluster.log_retain_records", "lots"}};
  r = load_now();
  EXPECT_NE(all(r).find("cluster.log_retain_records"), std::string::npos)
    << all(r);
  EXPECT_FALSE(r.ok());
  opts.flags = {{"--set", "cluster.log_retain_records", "0"}};
  r = load_now();
  ASSERT_TRUE(r.ok()) << all(r);
  EXPECT_EQ(r.effective.get_int("cluster.log_retain_records"), 0);
}

TEST_F(ConfigTest, ReplicationKeysAreCheckedAndMinInsyncNeverExceedsR) {
  auto r = load_now();
  ASSERT_TRUE(r.ok()) << all(r);
  EXPECT_EQ(r.effective.get_int("cluster.replication"), 3);
  EXPECT_EQ(r.effective.get_int("cluster.min_insync"), 2);
  EXPECT_EQ(r.effective.get_duration("cluster.replica_lag"),
            std::chrono::milliseconds{2000});
  EXPECT_EQ(r.effective.get_int("cluster.rebalance_concurrency"), 2);
  opts.flags = {{"--set", "cluster.replication", "8"},
                {"--set", "cluster.min_insync", "0"},
                {"--set", "cluster.replica_lag", "10ms"},
                {"--set", "cluster.rebalance_concurrency", "65"}};
  r = load_now();
  auto text = all(r);
  for (auto needle :
       {"cluster.replication = \"8\": must be from 1 to 7",
        "cluster.min_insync = \"0\": must be from 1 to 7",
        "cluster.replica_lag = \"10ms\": must be from",
        "cluster.rebalance_concurrency = \"65\": must be from 0 to 64"})
    EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
  opts.flags = {{"--set", "cluster.replication", "2"},
                {"--set", "cluster.min_insync", "3"}};
  r = load_now();
  ASSERT_EQ(r.problems.size(), 1u) << all(r);
  EXPECT_NE(all(r).find("cluster.min_insync = \"3\": must not exceed "
                        "cluster.replication (2)"),
            std::string::npos)
    << all(r);
  opts.flags = {{"--set", "cluster.replication", "1"},
                {"--set", "cluster.min_insync", "1"},
                {"--set", "cluster.rebalance_concurrency", "0"}};
  EXPECT_TRUE(load_now().ok());
  opts.flags = {{"--set", "cluster.rebalance_concurrency", "two"}};
  r = load_now();
  ASSERT_EQ(r.problems.size(), 1u) << all(r);
  EXPECT_NE(all(r).find("cluster.rebalance_concurrency = \"two\""),
            std::string::npos)
    << all(r);
}

TEST_F(ConfigTest, AClusterNeedsEtcdAndEtcdNeedsACluster) {
  opts.flags = {{"--cluster", "cluster.name", "prod"}};
  auto r = load_now();
  ASSERT_EQ(r.problems.size(), 1u) << all(r);
  EXPECT_NE(all(r).find("flag --cluster"), std::string::npos) << all(r);
  EXPECT_NE(all(r).find("needs at least one etcd endpoint"), std::string::npos);
  opts.flags = {{"--etcd", "cluster.etcd", "http://127.0.0.1:2379"}};
  r = load_now();
  ASSERT_EQ(r.problems.size(), 1u) << all(r);
  EXPECT_NE(all(r).find("no cluster is named"), std::string::npos) << all(r);
  opts.flags
    = {{"--cluster", "cluster.name", "prod"},
       {"--etcd", "cluster.etcd", "http://127.0.0.1:2379,http://[::1]:2379"},
       {"--member", "cluster.member", "m-1.eu"}};
  r = load_now();
  ASSERT_TRUE(r.ok()) << all(r);
  EXPECT_EQ(r.effective.get_list("cluster.etcd").size(), 2u);
}

TEST_F(ConfigTest, ClusterTlsAndEtcdUserKeysComeTogetherAndNamedAlone) {
  auto base = std::vector<flag_override>{
    {"--cluster", "cluster.name", "prod"},
    {"--etcd", "cluster.etcd", "https://127.0.0.1:2379"}};
  auto with = [&](std::vector<flag_override> more) {
    opts.flags = base;
    opts.flags.insert(opts.flags.end(), more.begin(), more.end());
    return load_now();
  };
  // The mesh's three TLS files: each alone is refused, naming it and the
  // two missing.
  for (auto key : {"cluster.tls_cert", "cluster.tls_key", "cluster.tls_ca"}) {
    auto r = with({{"--set", key, "/x.pem"}});
    ASSERT_EQ(r.problems.size(), 1u) << key << ": " << all(r);
    EXPECT_EQ(r.problems[0].key, key) << all(r);
    EXPECT_NE(all(r).find("needs cluster.tls_cert, cluster.tls_key and "
                          "cluster.tls_ca together"),
              std::string::npos)
      << all(r);
  }
  auto all_three = with({{"--set", "cluster.tls_cert", "/c.pem"},
                         {"--set", "cluster.tls_key", "/k.pem"},
                         {"--set", "cluster.tls_ca", "/ca.pem"}});
  EXPECT_TRUE(all_three.ok()) << all(all_three);
  // etcd's client certificate needs its key; CA and certificate need an
  // https:// endpoint.
  auto cert_alone = with({{"--set", "cluster.etcd_cert", "/c.pem"}});
  ASSERT_EQ(cert_alone.problems.size(), 1u) << all(cert_alone);
  EXPECT_EQ(cert_alone.problems[0].key, "cluster.etcd_cert");
  auto key_alone = with({{"--set", "cluster.etcd_key", "/k.pem"}});
  ASSERT_EQ(key_alone.problems.size(), 1u) << all(key_alone);
  EXPECT_EQ(key_alone.problems[0].key, "cluster.etcd_key");
  auto ca_only = with({{"--set", "cluster.etcd_ca", "/ca.pem"}});
  EXPECT_TRUE(ca_only.ok()) << all(ca_only);
  opts.flags = {{"--cluster", "cluster.name", "prod"},
                {"--etcd", "cluster.etcd", "http://127.0.0.1:2379"},
                {"--set", "cluster.etcd_ca", "/ca.pem"}};
  auto plain = load_now();
  ASSERT_EQ(plain.problems.size(), 1u) << all(plain);
  EXPECT_NE(all(plain).find("cluster.etcd_ca: is for etcd client TLS, but no "
                            "cluster.etcd endpoint is https://"),
            std::string::npos)
    << all(plain);
  // A user needs a password, from the environment or a file; never a flag.
  auto no_password = with({{"--set", "cluster.etcd_username", "troupe"}});
  ASSERT_EQ(no_password.problems.size(), 1u) << all(no_password);
  EXPECT_NE(all(no_password).find("etcd user 'troupe' needs a password"),
            std::string::npos)
    << all(no_password);
  opts.environment = {{"TROUPE_CLUSTER_ETCD_PASSWORD", "s3cret-pw"}};
  auto from_env = with({{"--set", "cluster.etcd_username", "troupe"}});
  EXPECT_TRUE(from_env.ok()) << all(from_env);
  EXPECT_EQ(from_env.effective.get_string("cluster.etcd_password"),
            "s3cret-pw");
  auto twice = with({{"--set", "cluster.etcd_username", "troupe"},
                     {"--set", "cluster.etcd_password_file", "/pw"}});
  ASSERT_EQ(twice.problems.size(), 1u) << all(twice);
  EXPECT_EQ(twice.problems[0].key, "cluster.etcd_password_file");
  opts.environment.clear();
  auto flag = with({{"--set", "cluster.etcd_username", "troupe"},
                    {"--set", "cluster.etcd_password", "s3cret-pw"}});
  ASSERT_EQ(flag.problems.size(), 1u) << all(flag);
  EXPECT_NE(all(flag).find("cluster.etcd_password: a password may not be "
                           "written in a config file or given as a flag"),
            std::string::npos)
    << all(flag);
  EXPECT_EQ(all(flag).find("s3cret-pw"), std::string::npos) << all(flag);
  auto from_file = with({{"--set", "cluster.etcd_username", "troupe"},
                         {"--set", "cluster.etcd_password_file", "/pw"}});
  EXPECT_TRUE(from_file.ok()) << all(from_file);
  // The password is masked wherever settings are shown.
  opts.environment = {{"TROUPE_CLUSTER_ETCD_PASSWORD", "s3cret-pw"}};
  auto shown = with({{"--set", "cluster.etcd_username", "troupe"}});
  ASSERT_TRUE(shown.ok()) << all(shown);
  EXPECT_EQ(render_toml(shown.effective).find("s3cret-pw"), std::string::npos);
  EXPECT_EQ(render_json(shown.effective).find("s3cret-pw"), std::string::npos);
}
