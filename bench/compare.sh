#!/usr/bin/env bash
# Troupe vs Restate on this machine, one after the other, printed as one Markdown table.
#
#   bench/compare.sh                 full sizes
#   QUICK=1 bench/compare.sh         smoke sizes (troupe bench --quick, Restate QUICK=1)
#   SKIP_RESTATE=1 bench/compare.sh  Troupe only (Restate columns say n/a)
#   SKIP_CLUSTER=1 bench/compare.sh  without the cluster section (both sides)
#
# Environment (all optional):
#   TROUPE=PATH          troupe binary (default: build/release/bin/troupe; `make build` makes it)
#   RESTATE_PEER=PATH    Restate peer benchmark (default: ../shared/peers/restate/run.sh next
#                        to the repository); it needs root, node and npm (see its header)
#   OUT=DIR              where raw results and table.md go (default: a new mktemp -d folder)
#   TROUPE_TIMEOUT=S     bound on each `troupe bench` invocation (default 1800, QUICK 600)
#   RESTATE_TIMEOUT=S    bound on the Restate run, npm install included (default 1800, QUICK 900)
#   ECHO_SERVER=PATH     the echo service http10's steps call (default: ../echo/server.mjs next
#                        to the Restate peer, which its chttp10 calls too; run with node)
#
# Troupe runs first (`troupe bench ... --durability machine --json`, then seq10 with
# --durability process, then `troupe bench --cluster 3 --json`: etcd and 3 members, R=3,
# min_insync 2, its http10 steps calling the echo service that Restate's chttp10 calls, started
# here with node for that run), Restate after it (ONLY=seq10,seq10c1,fan10,crash, then its 3-node cluster
# cases cseq10,chttp10,cfail with R=2, in the same run.sh), never both at once. Progress goes to stderr; the report (machine, versions, table, notes) goes to stdout
# and to $OUT/table.md. Every figure in the table comes from the JSON the two runs write.
# Exit status: 0 when both sides ran cleanly, 1 when either failed (the table still prints).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TROUPE="${TROUPE:-$REPO/build/release/bin/troupe}"
RESTATE_PEER="${RESTATE_PEER:-$REPO/../shared/peers/restate/run.sh}"
ECHO_SERVER="${ECHO_SERVER:-$(dirname "$RESTATE_PEER")/../echo/server.mjs}"
RESTATE_ONLY="seq10,seq10c1,fan10,crash"
QUICK="${QUICK:-0}"
SKIP_RESTATE="${SKIP_RESTATE:-0}"
SKIP_CLUSTER="${SKIP_CLUSTER:-0}"
cluster=1
case "$SKIP_CLUSTER" in "" | 0 | no | false) ;; *) cluster=0 ;; esac
# Each side's cluster survives one of three nodes dying and keeps two copies: Troupe R=3 with
# min_insync 2 (its defaults), Restate R=2 (its R=3 stalls when a node dies).
[ "$cluster" = 1 ] && RESTATE_ONLY="$RESTATE_ONLY,cseq10,chttp10,cfail"
quick=0
case "$QUICK" in "" | 0 | no | false) ;; *) quick=1 ;; esac
if [ "$quick" = 1 ]; then
  TROUPE_TIMEOUT="${TROUPE_TIMEOUT:-600}"
  RESTATE_TIMEOUT="${RESTATE_TIMEOUT:-900}"
else
  TROUPE_TIMEOUT="${TROUPE_TIMEOUT:-1800}"
  RESTATE_TIMEOUT="${RESTATE_TIMEOUT:-1800}"
fi

say() { echo "compare.sh: $*" >&2; }

command -v node >/dev/null || { say "node is needed to format the table (and by the Restate peer)"; exit 1; }
if [ ! -x "$TROUPE" ]; then
  say "troupe binary not found or not executable: $TROUPE"
  say "build it with \`make build\` in $REPO, or set TROUPE=/path/to/troupe"
  exit 1
fi

if [ -z "${OUT:-}" ]; then OUT="$(mktemp -d "${TMPDIR:-/tmp}/troupe-compare.XXXXXX")"; fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)" # absolute: run.sh copies RESULTS from inside its scratch folder
: >"$OUT/troupe.jsonl"
: >"$OUT/troupe.log"
rm -rf "$OUT/restate" "$OUT/restate-run.log"
LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
status=0

# ---------- bounded runs ----------
# Each run gets its own session (setsid) under `timeout`. run.sh starts a nested
# `timeout` that moves into a process group of its own, which an outer timeout does not
# reach; so after every run whatever is left in that session (and only that) is stopped.
SESSION_FILE="$OUT/.session"
RUN_PID=""
ECHO_PID=""
sweep_session() {
  local sid
  sid="$(cat "$SESSION_FILE" 2>/dev/null || true)"
  rm -f "$SESSION_FILE"
  case "$sid" in "" | 0 | *[!0-9]*) return 0 ;; esac
  pgrep -s "$sid" >/dev/null || return 0
  say "stopping processes left over in session $sid"
  pkill -TERM -s "$sid" || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    pgrep -s "$sid" >/dev/null || return 0
    sleep 1
  done
  pkill -KILL -s "$sid" || true
}
# shellcheck disable=SC2317 # reached through the trap below
on_signal() {
  trap - INT TERM
  say "interrupted; stopping the running benchmark"
  if [ -n "$RUN_PID" ]; then
    kill -TERM "$RUN_PID" 2>/dev/null || true
    wait "$RUN_PID" 2>/dev/null || true
  fi
  sweep_session
  stop_echo
  exit 130
}
trap on_signal INT TERM

# run_bounded SECONDS LOG STDOUT CMD...: STDOUT "-" means stdout and stderr both go to LOG
# and to our stderr; otherwise stdout is appended to the file STDOUT and stderr goes to LOG
# and our stderr. Runs in the background so that Ctrl-C reaches on_signal.
run_bounded() {
  local secs=$1 log=$2 out=$3 rc=0
  shift 3
  rm -f "$SESSION_FILE"
  # shellcheck disable=SC2016 # $$ and $0 belong to the inner bash
  local wrap=(timeout -k 30 "$secs" setsid -w bash -c 'echo $$ >"$0"; exec "$@"' "$SESSION_FILE")
  if [ "$out" = - ]; then
    "${wrap[@]}" "$@" > >(tee -a "$log" >&2) 2>&1 &
  else
    "${wrap[@]}" "$@" >>"$out" 2> >(tee -a "$log" >&2) &
  fi
  RUN_PID=$!
  wait "$RUN_PID" || rc=$?
  RUN_PID=""
  sweep_session
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then say "timed out after ${secs} s: $*"; fi
  return "$rc"
}

# ---------- the echo service of http10 ----------
# The peers' echo service (node server.mjs PORT: GET any path -> 200 {"ok":true,...}), on a
# free port of 127.0.0.1, so that Troupe's http10 steps call the very service Restate's chttp10
# calls. Without it, `troupe bench` answers them with an echo service of its own.
ECHO_URL=""
ECHO_NOTE=""
start_echo() {
  if [ ! -f "$ECHO_SERVER" ]; then
    ECHO_NOTE="echo service $ECHO_SERVER not found: Troupe's http10 steps called troupe bench's own echo service."
    say "$ECHO_NOTE"
    return 0
  fi
  : >"$OUT/echo.log"
  node "$ECHO_SERVER" 0 >>"$OUT/echo.log" 2>&1 &
  ECHO_PID=$!
  local port=""
  for _ in $(seq 1 100); do
    port="$(sed -n 's/^listening \([0-9][0-9]*\)$/\1/p' "$OUT/echo.log" | head -n 1)"
    [ -n "$port" ] && break
    kill -0 "$ECHO_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    ECHO_NOTE="the echo service ($ECHO_SERVER) did not start, see echo.log: Troupe's http10 steps called troupe bench's own echo service."
    say "$ECHO_NOTE"
    stop_echo
    return 0
  fi
  ECHO_URL="http://127.0.0.1:$port/step"
  say "echo service $ECHO_SERVER listening at $ECHO_URL (pid $ECHO_PID)"
}
stop_echo() {
  [ -n "$ECHO_PID" ] || return 0
  kill -TERM "$ECHO_PID" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    kill -0 "$ECHO_PID" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$ECHO_PID" 2>/dev/null || true
  wait "$ECHO_PID" 2>/dev/null || true
  ECHO_PID=""
}

# ---------- Troupe ----------
troupe_flags=(--json)
[ "$quick" = 1 ] && troupe_flags+=(--quick)
TROUPE_NOTE=""
run_troupe() {
  say "running: $TROUPE bench $* ${troupe_flags[*]} (timeout ${TROUPE_TIMEOUT} s)"
  local rc=0
  run_bounded "$TROUPE_TIMEOUT" "$OUT/troupe.log" "$OUT/troupe.jsonl" \
    "$TROUPE" bench "$@" "${troupe_flags[@]}" || rc=$?
  if [ "$rc" != 0 ]; then
    say "troupe bench $* failed (exit $rc); see $OUT/troupe.log"
    TROUPE_NOTE="${TROUPE_NOTE}\`troupe bench $*\` failed (exit $rc), see troupe.log. "
    status=1
  fi
}
T0=$SECONDS
run_troupe seq10 seq10c1 fan10 sleepers recover idle --durability machine
run_troupe seq10 --durability process
if [ "$cluster" = 1 ]; then
  start_echo
  if [ -n "$ECHO_URL" ]; then run_troupe --cluster 3 --echo-url "$ECHO_URL"; else run_troupe --cluster 3; fi
  stop_echo
fi
TROUPE_WALL=$((SECONDS - T0))
say "troupe done in ${TROUPE_WALL} s"

# ---------- Restate ----------
RESTATE_NOTE=""
RESTATE_WALL=""
if [ "$SKIP_RESTATE" != 0 ] && [ -n "$SKIP_RESTATE" ]; then
  RESTATE_NOTE="Restate skipped (SKIP_RESTATE=$SKIP_RESTATE)."
elif [ ! -f "$RESTATE_PEER" ]; then
  RESTATE_NOTE="Restate peer benchmark not found at $RESTATE_PEER (set RESTATE_PEER=/path/to/run.sh)."
elif [ "$(id -u)" != 0 ]; then
  RESTATE_NOTE="Restate not run: $RESTATE_PEER needs root (it runs in its own network namespace); rerun as root or with SKIP_RESTATE=1."
else
  say "running: QUICK=$quick ONLY=$RESTATE_ONLY RESULTS=$OUT/restate $RESTATE_PEER (timeout ${RESTATE_TIMEOUT} s)"
  T0=$SECONDS
  rc=0
  run_bounded "$RESTATE_TIMEOUT" "$OUT/restate-run.log" - \
    env QUICK="$quick" ONLY="$RESTATE_ONLY" RESULTS="$OUT/restate" bash "$RESTATE_PEER" || rc=$?
  RESTATE_WALL=$((SECONDS - T0))
  say "restate done in ${RESTATE_WALL} s (exit $rc)"
  if [ "$rc" != 0 ]; then
    RESTATE_NOTE="Restate run.sh failed (exit $rc), see restate-run.log."
    status=1
  elif [ ! -f "$OUT/restate/results.json" ]; then
    RESTATE_NOTE="Restate run.sh finished but wrote no results.json, see restate-run.log."
    status=1
  else
    # run.sh leaves its scratch copy (node_modules, about 225 MiB) behind; its results are
    # in $OUT/restate now. A failed run keeps it for inspection.
    scratch="$(sed -n 's/^scratch folder: \(.*\) (results\/results.json)$/\1/p' "$OUT/restate-run.log" | tail -n 1)"
    if [[ "$(basename "${scratch:-x}")" == restate-peer.* ]] && [ -f "$scratch/bench.mjs" ]; then
      rm -rf -- "$scratch"
      say "removed run.sh scratch folder $scratch"
    fi
  fi
fi
[ -n "$RESTATE_NOTE" ] && say "$RESTATE_NOTE Restate columns show n/a."

# ---------- report ----------
CMP_TROUPE_JSONL="$OUT/troupe.jsonl" CMP_RESTATE_JSON="$OUT/restate/results.json" \
  CMP_RESTATE_VERSIONS="$OUT/restate/versions.txt" CMP_RESTATE_NOTE="$RESTATE_NOTE" \
  CMP_TROUPE_NOTE="$TROUPE_NOTE" CMP_QUICK="$quick" CMP_NPROC="$(nproc)" CMP_KERNEL="$(uname -r)" \
  CMP_DATE="$(date -u '+%Y-%m-%d %H:%M:%S UTC')" CMP_LOADAVG="$LOADAVG_START" CMP_OUT="$OUT" \
  CMP_TROUPE_WALL="$TROUPE_WALL" CMP_RESTATE_WALL="$RESTATE_WALL" CMP_CLUSTER="$cluster" \
  CMP_ECHO_NOTE="$ECHO_NOTE" \
  CMP_TROUPE_REV="$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)" \
  node - <<'JS' | tee "$OUT/table.md"
const fs = require("fs");
const E = process.env;
const read = (f) => { try { return fs.readFileSync(f, "utf8"); } catch { return null; } };
const warn = (m) => process.stderr.write(`compare.sh: ${m}\n`);

// Troupe: one JSON object per line, keyed workload/durability (the last one wins).
const T = {};
for (const line of (read(E.CMP_TROUPE_JSONL) || "").split("\n")) {
  const s = line.trim();
  if (!s) continue;
  try { const o = JSON.parse(s); if (o && o.workload) T[`${o.workload}/${o.durability || "?"}`] = o; else warn(`troupe line without workload: ${s}`); }
  catch { warn(`troupe stdout line is not JSON, ignored: ${s.slice(0, 120)}`); }
}
const tm = (w) => T[`${w}/machine`] || {};
const tp = (w) => T[`${w}/process`] || {};

// Restate: results.json written by bench.mjs.
let R = null;
if (!E.CMP_RESTATE_NOTE) { try { R = JSON.parse(read(E.CMP_RESTATE_JSON)); } catch (e) { warn(`cannot read ${E.CMP_RESTATE_JSON}: ${e.message}`); } }
const rc = (name) => ((R && R.cases) || []).find((c) => c.case === name) || {};
const crash = (R && R.crash) || null;
const b1 = ((crash && crash.results) || []).find((b) => String(b.batch).startsWith("b1")) || {};

const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
const div = (a, b) => (num(a) !== null && num(b) !== null && b !== 0 ? a / b : null);
const fmt = (v) => {
  v = num(v);
  if (v === null) return "n/a";
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString("en-US");
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(2);
};
const fmtX = (v) => (num(v) === null ? "n/a" : `${fmt(v)}x`);

// A row: metric, Troupe value, Restate value, ratio (or "–" when not comparable), target, met?
const rows = [];
const section = (title) => rows.push({ section: title });
const row = (metric, t, r, { ratio = true, target = "", met = null, count = false } = {}) => {
  t = num(t); r = num(r);
  const q = ratio ? div(t, r) : null;
  let m = "";
  if (met) { const v = met(t, q); m = v === null ? "n/a" : v ? "yes" : "no"; }
  const f = count ? (v) => (v === null ? "n/a" : String(Math.round(v))) : fmt;
  rows.push({ cells: [metric, f(t), f(r), ratio ? fmtX(q) : "–", target, m] });
};
const when = (x, f) => (x === null ? null : f(x));
// A Troupe-only row: Restate has no such measurement.
const troupeOnly = (metric, t, { target, ok }) => {
  t = num(t);
  rows.push({ cells: [metric, fmt(t), "–", "–", target, t === null ? "n/a" : ok(t) ? "yes" : "no"] });
};

const s10 = tm("seq10"), s10r = rc("seq10");
const c1 = tm("seq10c1"), c1r = rc("seq10c1");
const f10 = tm("fan10"), f10r = rc("fan10");
const idle = tm("idle"), park = tm("sleepers"), rec = tm("recover");
const p10 = tp("seq10");
const tc = T["cluster/?"] || {};
const rcl = (R && R.cluster) || null;
const rcc = (name) => ((rcl && rcl.cases) || []).find((c) => c.case === name) || {};
const rf = (rcl && rcl.fail) || {};
const get = (o, ...path) => path.reduce((x, k) => (x && typeof x === "object" ? x[k] : undefined), o);

section("Throughput and latency: Troupe `machine` durability vs Restate");
row("seq10 steps/s", s10.steps_per_s, s10r.stepsPerS, { target: "≥ 20x", met: (t, q) => when(q, (q) => q >= 20) });
row("seq10 p99 run latency ms", s10.p99_ms, s10r.p99, { target: "≤ 0.1x", met: (t, q) => when(q, (q) => q <= 0.1) });
row("seq10 p50 run latency ms", s10.p50_ms, s10r.p50);
row("seq10c1 median step latency ms ¹", c1.step_p50_ms, div(c1r.p50, 10), { target: "≤ 0.2 ms", met: (t) => when(t, (t) => t <= 0.2) });
rows.push({ cells: ["seq10c1 journal write + fsync per commit ms ⁵", fmt(num(c1.commit_ms)), "–", "–", "bounds the row above", ""] });
row("fan10 runs/s", f10.runs_per_s, f10r.perS);
row("fan10 p99 run latency ms", f10.p99_ms, f10r.p99);
section("Memory");
row("idle node RSS MiB ²", idle.rss_mib, s10r.serverPeakRssMiB, { ratio: false, target: "≤ 30 MiB", met: (t) => when(t, (t) => t <= 30) });
row("peak RSS under seq10 MiB ³", s10.peak_rss_mib, s10r.serverPeakRssMiB);
troupeOnly("bytes per parked run (sleepers)", park.bytes_per_run, { target: "≤ 4096", ok: (t) => t <= 4096 });
section(`Crash recovery ⁴ (Troupe: ${num(rec.n) === null ? "n/a" : rec.n.toLocaleString("en-US")} parked runs; Restate: ${crash ? crash.cfg.m : "n/a"} workflows)`);
row("restart → ready s (Restate: restartToHealthyMs)", rec.ready_s, div(b1.restartToHealthyMs, 1000), { ratio: false, target: "≤ 3 s", met: (t) => when(t, (t) => t <= 3) });
row("restart → runs resumed s (Restate: startToAllLeadersMs)", rec.resumed_s, div(b1.startToAllLeadersMs, 1000), { ratio: false, target: "≤ 3 s", met: (t) => when(t, (t) => t <= 3) });
section("Troupe `process` durability (no fsync per step; Restate has no counterpart)");
troupeOnly("seq10 steps/s (process durability)", p10.steps_per_s, { target: "≥ 100,000", ok: (t) => t >= 100000 });
if (E.CMP_CLUSTER === "1") {
  const cs = get(tc, "seq10", "cluster") || {}, fo = tc.failover || {};
  const ch = rcc("chttp10"), cq = rcc("cseq10");
  section(`Cluster of 3 on 127.0.0.1 ⁶ (Troupe: R=${tc.replication ?? "n/a"}, min_insync ${tc.min_insync ?? "n/a"}; Restate: R=${rcl ? rcl.replication : "n/a"})`);
  row("replicated seq10 steps/s", cs.steps_per_s, cq.stepsPerS, { target: "≥ 20x", met: (t, q) => when(q, (q) => q >= 20) });
  row("replicated seq10 p99 run latency ms", cs.p99_ms, cq.p99);
  troupeOnly("replicated seq10 / embedded `machine` seq10, same run", get(tc, "seq10", "ratio"), { target: "≥ 0.5", ok: (t) => t >= 0.5 });
  const th = get(tc, "http10", "cluster") || {};
  row("replicated http10 steps/s ⁷", th.steps_per_s, ch.stepsPerS);
  row("replicated http10 p99 run latency ms ⁷", th.p99_ms, ch.p99);
  rows.push({ cells: ["replicated http10 / embedded `machine` http10, same run", fmt(num(get(tc, "http10", "ratio"))), "–", "–", "", ""] });
  row("kill -9 of a leader → every stalled run progressing again ms (Troupe: median of kills)", get(fo, "all_progress_ms", "median"), rf.killToAllStalledProgressMs, { target: "≤ 1,000", met: (t) => when(t, (t) => t <= 1000) });
  row("  same, worst kill ms", get(fo, "all_progress_ms", "max"), rf.killToAllStalledProgressMs, { target: "≤ 3,000", met: (t) => when(t, (t) => t <= 3000) });
  row("  runs of the killed leader's partitions only: max ms (Troupe: median of kills)", get(fo, "victim_resumed_ms", "median"), get(rf, "onVictimPartitions", "gapMs", "max"));
  row("kill -9 of a leader → all done ms (Troupe: median of kills)", get(fo, "all_done_ms", "median"), rf.killToAllDoneMs);
  row("runs lost (Troupe: all kills)", fo.lost, rf.lost, { ratio: false, count: true, target: "0", met: (t) => when(t, (t) => t === 0) });
  row("completed steps run again (Troupe: all kills) ⁸", fo.completed_rerun, null, { ratio: false, count: true, target: "0", met: (t) => when(t, (t) => t === 0) });
  row("steps re-executed, in-flight included (Troupe: all kills) ⁸", fo.attempts_rerun, rf.dupSteps, { ratio: false, count: true });
}

// ---------- print ----------
const out = [];
const p = (s = "") => out.push(s);
const cpu = ((read("/proc/cpuinfo") || "").match(/^model name\s*:\s*(.*)$/m) || [, "unknown"])[1].trim();
const memKiB = +(((read("/proc/meminfo") || "").match(/^MemTotal:\s+(\d+)/m) || [, NaN])[1]);
const versions = (read(E.CMP_RESTATE_VERSIONS) || "").trim().split("\n").filter(Boolean).join("; ");
p(`# Troupe vs Restate${E.CMP_QUICK === "1" ? " (QUICK=1: smoke sizes, not for conclusions)" : ""}`);
p();
p(`- Date: ${E.CMP_DATE}`);
p(`- Machine: nproc ${E.CMP_NPROC}, CPU ${cpu}, memory ${Number.isFinite(memKiB) ? (memKiB / 1048576).toFixed(1) : "?"} GiB, kernel ${E.CMP_KERNEL}, load average at start ${E.CMP_LOADAVG}`);
p(`- Troupe: commit ${E.CMP_TROUPE_REV}${E.CMP_TROUPE_WALL ? `, bench wall time ${E.CMP_TROUPE_WALL} s` : ""}`);
p(`- Restate: ${versions || "n/a"}${E.CMP_RESTATE_WALL ? `, run.sh wall time ${E.CMP_RESTATE_WALL} s (npm install included)` : ""}`);
p();
if (R) p(`Troupe and Restate ran one after the other on the same machine; each shares its ${E.CMP_NPROC} cores between server, load generator and (for Restate) the SDK service.`);
else p(`Restate figures are n/a: ${E.CMP_RESTATE_NOTE || "no usable results.json."} Troupe ran on ${E.CMP_NPROC} cores shared between node and load generator.`);
if (E.CMP_TROUPE_NOTE) p(`**Troupe:** ${E.CMP_TROUPE_NOTE.trim()}`);
p();
p("| metric | Troupe | Restate | ratio | target | met? |");
p("|---|---:|---:|---:|---|---|");
for (const r of rows) p(r.section ? `| **${r.section}** | | | | | |` : `| ${r.cells.join(" | ")} |`);
p();
p("ratio = Troupe / Restate (higher is better for throughput, lower for latency and memory); – = not comparable or not measured.");
p();
p("1. Restate figure: p50 run latency of seq10c1 (one client, 10 sequential steps per run) divided by 10; Troupe: its step_p50_ms.");
p("2. Restate: server peak RSS in seq10 (bench.mjs has no idle measurement), so no ratio.");
p(`3. Restate: the restate-server process only${num(s10r.servicePeakRssMiB) !== null ? `; its SDK service (node) peaked at ${fmt(s10r.servicePeakRssMiB)} MiB on top` : " (its SDK service, a separate node process, comes on top)"}. Troupe: the one node process.`);
p(`4. Restate's crash test has only ${crash ? crash.cfg.m : "200 (50 with QUICK=1)"} workflows of ${crash ? crash.cfg.k : 20} steps (step + ${crash ? crash.cfg.sleepMs : 50} ms durable sleep), restate-server killed with SIGKILL at ~30% progress and restarted (batch b1${num(b1.killToFirstNewStepMs) !== null ? `; kill → first re-executed step ${fmt(b1.killToFirstNewStepMs)} ms` : ""}); restartToHealthyMs is restart → admin and ingress healthy, startToAllLeadersMs is server start → all partition processors leader (from its log). Troupe's recover restarts a node with its parked runs (ready_s: accepting work, resumed_s: all runs resumed). Different sizes, so no ratio.`);
p("5. Troupe makes every step durable before the next starts: one group commit (a RocksDB write with fsync) per step, plus one for the submission and one for the first step's start, so a step cannot take less than this mean commit time measured in the same run.");
if (E.CMP_CLUSTER === "1") {
  const fo = tc.failover || {};
  p(`6. Both clusters run on this one machine, requests round-robin over the 3 members (Restate: ingresses). Troupe: \`troupe bench --cluster 3\` (etcd and 3 members; seq10 N=${get(tc, "seq10", "cluster", "n") ?? "n/a"} C=${get(tc, "seq10", "cluster", "concurrency") ?? "n/a"}, beside seq10 on an embedded node with \`machine\` durability in the same run; then ${fo.trials ?? "n/a"} kills of a partition leader, each with ${fo.runs ?? "n/a"} runs of ${fo.steps ?? 20} steps each followed by a 50 ms durable sleep in flight, killed at about 30% of their steps, the member restarted between kills). Restate: one kill -9 of the node leading most partitions in its cfail (${rf.cfg ? `${rf.cfg.m} workflows of ${rf.cfg.k} steps + ${rf.cfg.sleepMs} ms sleeps` : "n/a"}). Troupe's "progressing again" is each run's second journal event after the kill (a run writes its next event only once the one before is committed on its in-sync replicas); Restate's is each stalled workflow's first lasting side effect.`);
  const th = get(tc, "http10", "cluster") || {}, ch = rcc("chttp10");
  const failed = th.failed ? `, **${th.failed} failed**` : "";
  const echo = E.CMP_ECHO_NOTE ? `Troupe's steps did not call it: ${E.CMP_ECHO_NOTE.replace(/\.$/, "")}` : `Both sides' steps called the same echo service (${get(tc, "http10", "echo") ?? "n/a"}), started once for each side's run`;
  p(`7. http10: seq10 whose 10 steps each GET the echo service (../echo/server.mjs, node) with ?i=K and take its JSON answer; Troupe: a step is an \`http\` node, N=${th.n ?? "n/a"} C=${th.concurrency ?? "n/a"}${failed}; Restate: ctx.run(fetch), N=${ch.n ?? "n/a"} C=${ch.c ?? "n/a"}. ${echo}. Troupe's http node opens a connection per request (Connection: close) and sends an Idempotency-Key header; Restate's fetch keeps its connections alive.`);
  p("8. Troupe: journal events of each run read back through the survivors; a completed node run again would show a second node_completed, an attempt started again a second attempt_started. Restate: step side effects executed more than once (dupSteps), in-flight ones included.");
  if (rcl && rcl.error) p(`**Restate cluster:** failed: ${String(rcl.error).split("\n")[0]}`);
}
// sizes and errors, so that a reader can tell what was measured
const tsize = (o) => (o.workload ? `${o.workload} n=${o.n}${o.concurrency !== undefined ? ` c=${o.concurrency}` : ""}${o.failed ? ` **failed=${o.failed}**` : ""}` : null);
const rsize = (c) => (c.case ? `${c.case} N=${c.n} C=${c.c} ok=${c.ok}${c.errs ? ` **errors=${c.errs}**` : ""}` : null);
p();
p(`Sizes: Troupe machine: ${["seq10", "seq10c1", "fan10", "sleepers", "recover"].map((w) => tsize(tm(w))).filter(Boolean).join(", ") || "n/a"}; Troupe process: ${tsize(p10) || "n/a"}; Restate: ${[s10r, c1r, f10r].map(rsize).filter(Boolean).join(", ") || "n/a"}${crash ? `, crash b1 completed ${b1.done}/${crash.cfg.m}, outputs ok ${b1.outputsOk}` : ""}.`);
p();
p(`Raw data: ${E.CMP_OUT} (troupe.jsonl, troupe.log, restate/results.json, restate-run.log).`);
process.stdout.write(out.join("\n") + "\n");
JS
say "results in $OUT (table.md, troupe.jsonl, restate/)"
exit "$status"
