#!/usr/bin/env node
// The npm package next to the `redlock` npm package (v5, on ioredis) on the same local
// redis-server nodes (1 and 3, started here on free 127.0.0.1 ports, killed by PID at
// the end), with the workloads of crates/fencelock-bench:
//
//   W1  uncontended latency: one task, acquire + release of a fresh key, N pairs.
//   W2  uncontended throughput: 64 async tasks at once, each on its own keys, for D ms.
//   W3  one hot key, 8 contenders (each its own Locker / its own Redlock and clients),
//       for D ms; under the lock a read-yield-write increment of a shared counter (a
//       lost update fails the run). Hand-off: from a holder starting its release to a
//       different contender's acquire returning.
//
// Prints a Markdown section (for docs/benchmarks.md) with every figure and the
// fencelock / redlock ratio, measured in this one run. Do not run it on a busy machine.
//
// Usage: crates/fencelock-node/scripts/build-addon.sh --release
//        node bench/bench.js [--quick | --smoke] [--runs N]
//   --quick   W1 300 pairs, W2/W3 1 s per run, 1 run (about half a minute)
//   default   W1 4000 pairs, W2/W3 3 s per run, 3 runs (medians reported)
"use strict";

const { parseArgs } = require("node:util");
const Redis = require("ioredis");
const Redlock = require("redlock").default;
const { Locker } = require("..");
const { Cluster } = require("../test/support/cluster.js");

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    // Only checks that the script runs (a few pairs, 200 ms runs): its figures mean nothing.
    smoke: { type: "boolean", default: false },
    runs: { type: "string" },
  },
});
const QUICK = values.quick || values.smoke;
const RUNS = Number(values.runs || (QUICK ? 1 : 3));
const W1_PAIRS = values.smoke ? 20 : QUICK ? 300 : 4000;
const DURATION_MS = values.smoke ? 200 : QUICK ? 1000 : 3000;
const W2_TASKS = 64;
const W3_TASKS = 8;
const TTL = 10_000;

const now = () => Number(process.hrtime.bigint()) / 1e3; // µs
const pct = (xs, p) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const median = (xs) => pct(xs, 50);
let seq = 0;
const fresh = (what) => `bench:${process.pid}:${what}:${seq++}`;

/** A client pair: fencelock or redlock, with acquire(key, {wait}) → release(). */
function fencelockClient(urls) {
  const locker = new Locker({ stores: urls });
  return {
    name: "fencelock",
    async acquire(key, wait) {
      const lease = await locker.acquire(key, TTL, { wait: wait ? Infinity : 0 });
      return () => lease.release();
    },
    close: () => locker.close(),
  };
}

function redlockClient(urls) {
  const clients = urls.map((u) => {
    const c = new Redis(u);
    c.on("error", () => {});
    return c;
  });
  // redlock's defaults (retryDelay 200 ms, retryJitter 200 ms) as services run it.
  const redlock = new Redlock(clients, {});
  redlock.on("error", () => {});
  return {
    name: "redlock",
    async acquire(key, wait) {
      const lock = await redlock.acquire([key], TTL, { retryCount: wait ? -1 : 0 });
      return () => lock.release();
    },
    close: async () => {
      await redlock.quit().catch(() => {});
    },
  };
}

async function w1(make, urls) {
  const client = make(urls);
  const lat = [];
  try {
    for (let i = 0; i < 50; i++) await (await client.acquire(fresh("w1-warm"), false))(); // warm-up
    const start = now();
    for (let i = 0; i < W1_PAIRS; i++) {
      const t = now();
      const release = await client.acquire(fresh("w1"), false);
      await release();
      lat.push(now() - t);
    }
    const secs = (now() - start) / 1e6;
    return { p50: pct(lat, 50), p99: pct(lat, 99), rate: W1_PAIRS / secs };
  } finally {
    await client.close();
  }
}

async function w2(make, urls) {
  const client = make(urls);
  let pairs = 0;
  try {
    const end = Date.now() + DURATION_MS;
    const start = now();
    await Promise.all(Array.from({ length: W2_TASKS }, async (_, t) => {
      while (Date.now() < end) {
        await (await client.acquire(fresh(`w2-${t}`), false))();
        pairs++;
      }
    }));
    return { rate: pairs / ((now() - start) / 1e6) };
  } finally {
    await client.close();
  }
}

async function w3(make, urls) {
  const clients = Array.from({ length: W3_TASKS }, () => make(urls));
  const key = fresh("w3");
  let counter = 0;
  let sections = 0;
  let lastHolder = -1;
  let releaseStarted = 0;
  const handoffs = [];
  try {
    const end = Date.now() + DURATION_MS;
    const start = now();
    await Promise.all(clients.map(async (client, me) => {
      while (Date.now() < end) {
        const release = await client.acquire(key, true);
        const got = now();
        if (lastHolder !== -1 && lastHolder !== me) handoffs.push(got - releaseStarted);
        lastHolder = me;
        const read = counter;
        await new Promise((r) => setImmediate(r));
        counter = read + 1;
        sections++;
        releaseStarted = now();
        await release();
      }
    }));
    if (counter !== sections) throw new Error(`lost update: counter ${counter}, sections ${sections}`);
    return {
      rate: sections / ((now() - start) / 1e6),
      handoffP50: pct(handoffs, 50),
      handoffP99: pct(handoffs, 99),
      share: handoffs.length / Math.max(1, sections),
    };
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
}

async function measure(fn, make, urls) {
  const runs = [];
  for (let r = 0; r < RUNS; r++) runs.push(await fn(make, urls));
  const out = {};
  for (const k of Object.keys(runs[0])) out[k] = median(runs.map((x) => x[k]));
  return out;
}

const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : "–");
const f0 = (x) => (Number.isFinite(x) ? x.toFixed(0) : "–");
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}×` : "–");

let running = null; // the cluster of the moment, killed on Ctrl-C too
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    const c = running;
    running = null;
    (c ? c.stop() : Promise.resolve()).finally(() => process.exit(130));
  });
}

async function main() {
  const profile = require("../binding.js").load().buildProfile();
  if (profile !== "release" && !values.smoke) {
    throw new Error(`the addon is a ${profile} build: run crates/fencelock-node/scripts/build-addon.sh --release first`);
  }
  const lines = [];
  lines.push("## Node.js: the `fencelock` npm package next to `redlock` npm");
  lines.push("");
  const flag = values.smoke ? " --smoke" : values.quick ? " --quick" : "";
  lines.push(`\`node crates/fencelock-node/bench/bench.js${flag}\`, ${new Date().toISOString()}, ` +
    `Node.js ${process.version}, ${RUNS} run(s) per figure (median). redlock 5.0.0-beta.2 on ioredis with its default ` +
    "retry settings; fencelock with its defaults (release notices on).");
  lines.push("");
  lines.push("| workload | nodes | figure | fencelock | redlock | fencelock / redlock |");
  lines.push("|---|---|---|---|---|---|");
  for (const n of [1, 3]) {
    const cluster = await Cluster.start(n);
    running = cluster;
    try {
      const urls = cluster.urls;
      const [a1, b1] = [await measure(w1, fencelockClient, urls), await measure(w1, redlockClient, urls)];
      lines.push(`| W1 | ${n} | p50 µs | ${f1(a1.p50)} | ${f1(b1.p50)} | ${ratio(a1.p50, b1.p50)} |`);
      lines.push(`| W1 | ${n} | p99 µs | ${f1(a1.p99)} | ${f1(b1.p99)} | ${ratio(a1.p99, b1.p99)} |`);
      lines.push(`| W1 | ${n} | pairs/s | ${f0(a1.rate)} | ${f0(b1.rate)} | ${ratio(a1.rate, b1.rate)} |`);
      const [a2, b2] = [await measure(w2, fencelockClient, urls), await measure(w2, redlockClient, urls)];
      lines.push(`| W2 (64 tasks) | ${n} | pairs/s | ${f0(a2.rate)} | ${f0(b2.rate)} | ${ratio(a2.rate, b2.rate)} |`);
      const [a3, b3] = [await measure(w3, fencelockClient, urls), await measure(w3, redlockClient, urls)];
      lines.push(`| W3 (8 on one key) | ${n} | critical sections/s | ${f0(a3.rate)} | ${f0(b3.rate)} | ${ratio(a3.rate, b3.rate)} |`);
      lines.push(`| W3 (8 on one key) | ${n} | hand-off p50 µs | ${f0(a3.handoffP50)} | ${f0(b3.handoffP50)} | ${ratio(a3.handoffP50, b3.handoffP50)} |`);
      lines.push(`| W3 (8 on one key) | ${n} | hand-off p99 µs | ${f0(a3.handoffP99)} | ${f0(b3.handoffP99)} | ${ratio(a3.handoffP99, b3.handoffP99)} |`);
      lines.push(`| W3 (8 on one key) | ${n} | hand-off share | ${a3.share.toFixed(2)} | ${b3.share.toFixed(2)} | – |`);
    } finally {
      running = null;
      await cluster.stop();
    }
  }
  process.stdout.write(`${lines.join("\n")}\n`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
