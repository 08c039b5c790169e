#!/usr/bin/env bash
# Checks the dependency direction between Troupe's folders:
#   config <- persistence <- runtime <- actors <- cluster <- tools
# A folder may include only itself and the folders to its left (tests/ and
# bench/ may include anything). Also keeps RocksDB and msgpack types inside
# persistence/rocksdb, persistence/codec and runtime/control (frames), and
# the parts of cluster/ in their own order (below).
set -euo pipefail
cd "$(dirname "$0")/.."

layers=(config persistence runtime actors cluster tools)
status=0

for i in "${!layers[@]}"; do
  folder=${layers[$i]}
  allowed=("${layers[@]:0:$((i + 1))}")
  pattern=$(IFS='|'; echo "${allowed[*]}")
  # Every quoted Troupe include in this folder that names a folder not allowed.
  while IFS= read -r hit; do
    [ -z "$hit" ] && continue
    echo "layering: $hit (${folder}/ may include only: ${allowed[*]})"
    status=1
  done < <(grep -rnE '^\s*#\s*include\s+"[a-z_]+/' "$folder" \
             --include='*.hpp' --include='*.cpp' 2>/dev/null \
           | grep -vE "#\s*include\s+\"(${pattern})/" || true)
done

# Inside cluster/, each part is its own library and dependencies point one
# way. "part:cluster parts it may include:whether it may include the layers
# below cluster/". The coordination parts know nothing of runs.
cluster_parts=(
  "etcd::no"
  "coordination::no"
  "mesh:coordination:yes"
  "membership:coordination etcd mesh:no"
  "endpoint::no"
  "control::yes"
  "node:control coordination:yes"
  "forward:control coordination mesh:yes"
  "replication:mesh:yes"
)
for entry in "${cluster_parts[@]}"; do
  IFS=: read -r part others lower <<<"$entry"
  [ -d "cluster/$part" ] || continue
  read -r -a others_list <<<"$others"
  parts=("$part" "${others_list[@]}")
  pattern="cluster/($(IFS='|'; echo "${parts[*]}"))/"
  what="cluster/${part}/ may include only cluster/{$(IFS=,; echo "${parts[*]}")}"
  if [ "$lower" = "yes" ]; then
    pattern="(config|persistence|runtime|actors)/|${pattern}"
    what="${what} and the layers below cluster/"
  fi
  while IFS= read -r hit; do
    [ -z "$hit" ] && continue
    echo "layering: $hit ($what)"
    status=1
  done < <(grep -rnE '^\s*#\s*include\s+"[a-z_]+/' "cluster/$part" \
             --include='*.hpp' --include='*.cpp' 2>/dev/null \
           | grep -vE "#\s*include\s+\"(${pattern})" || true)
done

while IFS= read -r hit; do
  [ -z "$hit" ] && continue
  echo "layering: $hit (RocksDB and msgpack only in persistence/rocksdb, persistence/codec and runtime/control)"
  status=1
done < <(grep -rnE '^\s*#\s*include\s+<(rocksdb|msgpack)' \
           config persistence runtime actors cluster tools \
           --include='*.hpp' --include='*.cpp' 2>/dev/null \
         | grep -vE '^(persistence/(rocksdb|codec)|runtime/control)/' || true)

[ $status -eq 0 ] && echo "layering: ok"
exit $status
