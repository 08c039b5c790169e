#include "tests/support/store_surgery.hpp"

#include "persistence/rocksdb/key_layout.hpp"

#include <rocksdb/db.h>

#include <memory>
#include <stdexcept>

namespace troupe::test {

namespace kl = persistence::key_layout;

std::vector<std::string> corrupt_journal_record(const std::string& path,
                                                size_t nth, uint32_t seq) {
  std::vector<std::string> names;
  auto s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions{}, path, &names);
  if (!s.ok())
    throw std::runtime_error(s.ToString());
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (auto& n : names)
    cfs.emplace_back(n, rocksdb::ColumnFamilyOptions{});
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::Open(rocksdb::DBOptions{}, path, cfs, &handles, &raw);
  if (!s.ok())
    throw std::runtime_error(s.ToString());
  std::unique_ptr<rocksdb::DB> db{raw};
  rocksdb::ColumnFamilyHandle* journal = nullptr;
  rocksdb::ColumnFamilyHandle* runs = nullptr;
  for (auto* h : handles) {
    if (h->GetName() == kl::journal_cf)
      journal = h;
    if (h->GetName() == kl::runs_cf)
      runs = h;
  }
  std::vector<std::string> ids;
  {
    std::unique_ptr<rocksdb::Iterator> it{
      db->NewIterator(rocksdb::ReadOptions{}, runs)};
    for (it->SeekToFirst(); it->Valid(); it->Next())
      ids.push_back(it->key().ToString());
  }
  if (nth < ids.size())
    s = db->Put(rocksdb::WriteOptions{}, journal,
                kl::journal_key(ids[nth], seq), "\x01\xc1garbage");
  for (auto* h : handles)
    db->DestroyColumnFamilyHandle(h);
  if (!s.ok())
    throw std::runtime_error(s.ToString());
  db->Close();
  return ids;
}

namespace {

/// Opens the closed store at `path` with all its column families.
std::unique_ptr<rocksdb::DB>
open_raw(const std::string& path,
         std::vector<rocksdb::ColumnFamilyHandle*>& handles) {
  std::vector<std::string> names;
  auto s = rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions{}, path, &names);
  if (!s.ok())
    throw std::runtime_error(s.ToString());
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (auto& n : names)
    cfs.emplace_back(n, rocksdb::ColumnFamilyOptions{});
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::Open(rocksdb::DBOptions{}, path, cfs, &handles, &raw);
  if (!s.ok())
    throw std::runtime_error(s.ToString());
  return std::unique_ptr<rocksdb::DB>{raw};
}

void close_raw(std::unique_ptr<rocksdb::DB> db,
               std::vector<rocksdb::ColumnFamilyHandle*>& handles) {
  for (auto* h : handles)
    db->DestroyColumnFamilyHandle(h);
  handles.clear();
  db->Close();
}

} // namespace

void downgrade_to_format_one(const std::string& path) {
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  auto db = open_raw(path, handles);
  rocksdb::Status s;
  for (auto* h : handles)
    if (s.ok() && (h->GetName() == "unfinished" || h->GetName() == "finished"))
      s = db->DropColumnFamily(h);
  // Format 2's names are spelled out here, so that this helper also builds
  // against a tree that only knows format 1.
  const std::string reverse_prefix = "idemrun/";
  std::vector<std::string> reverse;
  {
    std::unique_ptr<rocksdb::Iterator> it{db->NewIterator({})};
    for (it->Seek(reverse_prefix);
         it->Valid() && it->key().ToStringView().starts_with(reverse_prefix);
         it->Next())
      reverse.push_back(it->key().ToString());
  }
  for (auto& k : reverse)
    if (s.ok())
      s = db->Delete({}, k);
  if (s.ok())
    s = db->Put({}, std::string{kl::format_key}, "1");
  close_raw(std::move(db), handles);
  if (!s.ok())
    throw std::runtime_error(s.ToString());
}

std::string store_format(const std::string& path) {
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  auto db = open_raw(path, handles);
  std::string value;
  auto s = db->Get({}, std::string{kl::format_key}, &value);
  close_raw(std::move(db), handles);
  if (!s.ok())
    throw std::runtime_error(s.ToString());
  return value;
}

} // namespace troupe::test
