#pragma once

// What a closed store with partition logs has applied, read back whole, so
// that tests can compare replicas byte for byte.

#include "persistence/rocksdb/partition_log.hpp"

#include <gtest/gtest.h>
#include <rocksdb/db.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace troupe::test {

/// Every key and value of a closed store's applied state: all column
/// families but the logs, without the partition metas and the format.
inline std::map<std::string, std::string>
applied_state(const std::string& path) {
  namespace plog = persistence::plog;
  std::map<std::string, std::string> out;
  rocksdb::Options o;
  std::vector<std::string> names;
  auto s = rocksdb::DB::ListColumnFamilies(o, path, &names);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (auto& n : names)
    descs.emplace_back(n, rocksdb::ColumnFamilyOptions{});
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  s = rocksdb::DB::OpenForReadOnly(o, path, descs, &handles, &db);
  EXPECT_TRUE(s.ok()) << s.ToString();
  if (!s.ok())
    return out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == plog::plog_cf)
      continue;
    std::unique_ptr<rocksdb::Iterator> it{
      db->NewIterator(rocksdb::ReadOptions{}, handles[i])};
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto key = it->key().ToString();
      if (names[i] == rocksdb::kDefaultColumnFamilyName
          && (key == "format" || key.starts_with(plog::meta_prefix)))
        continue;
      out[names[i] + "|" + key] = it->value().ToString();
    }
  }
  for (auto* h : handles)
    db->DestroyColumnFamilyHandle(h).PermitUncheckedError();
  delete db;
  return out;
}

} // namespace troupe::test
