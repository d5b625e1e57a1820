#!/usr/bin/env node
// The Node.js peers of `scripts/bench` (crates/fencelock-bench, `--only peers,sem`):
// the `redlock` npm package (v5, on ioredis) and the `redis-semaphore` npm package,
// each at its documented default settings, measured by this process with the same
// definitions as the bench's Rust side, on the bench's own redis-server nodes.
//
// Protocol: the bench starts `node bench-peer.js --client C --workload W --urls ...`;
// this script connects, warms up, prints `ready` on stdout and waits for one line on
// stdin (the bench resets the nodes' command statistics meanwhile); then it runs the
// workload and prints one line of JSON with its figures, and exits 0. Any failure: a
// message on stderr and exit status 1 (2 for bad arguments).
//
// Workloads (times from `process.hrtime.bigint()`, percentiles nearest-rank over every
// sample, in µs):
//   w1   --client redlock: one task, acquire+release of a fresh key, --ops pairs in
//        sequence. JSON: {pairs, elapsed_s, p50_us, p99_us}.
//   w2   --client redlock: --tasks loops at once, each on its own fresh keys, for
//        --duration-ms. JSON: {pairs, elapsed_s} (pairs done within the time).
//   w3h  --client redlock: --contenders contenders, each with its own Redlock and
//        ioredis connections, take turns on one key for --duration-ms; under the lock
//        a read-yield-write increment of a shared counter (a lost update fails the run);
//        after its release a contender does not compete again until another one has
//        acquired, so every critical section is a hand-off.
//   sem  --client redis-semaphore: --contenders contenders, each with its own
//        connections, take permits of one semaphore of --permits (redis-semaphore's
//        `Semaphore` on one node, its `RedlockSemaphore` on several), for --duration-ms;
//        after its release a contender does not compete again until the permit it
//        freed has been granted to another contender. Holders at once are counted at
//        the resource (never fails the run: the figure is reported).
//   w3h and sem JSON: {grants, executed, elapsed_s, handoff_p50_us, handoff_p99_us,
//        wait_p50_us, wait_p99_us, wait_max_us, handoff_share, busiest_share,
//        max_inside, waiter_share (sem)}. Hand-off: w3h, from a holder starting its release to a different
//        contender's acquire returning; sem, from a permit's release starting to the
//        grant it is matched with (releases and grants matched first in, first out:
//        how long a freed permit stays free); waiter_share: the fraction of grants to
//        a contender that was asking before the matched release started. Wait: from
//        calling acquire to the grant (waits ending after the stop count too).
"use strict";

const { parseArgs } = require("node:util");
const readline = require("node:readline");
const Redis = require("ioredis");

const USAGE = `usage: node bench-peer.js --client redlock|redis-semaphore --workload w1|w2|w3h|sem
       --urls redis://127.0.0.1:P1,... [--ops N] [--tasks T] [--duration-ms D]
       [--contenders C=8] [--permits N=4] [--ttl-ms 10000] [--tag TAG]`;

function die(message, status = 1) {
  process.stderr.write(`bench-peer: error: ${message}\n`);
  process.exit(status);
}

function parseCli() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        client: { type: "string" },
        workload: { type: "string" },
        urls: { type: "string" },
        ops: { type: "string", default: "1000" },
        tasks: { type: "string", default: "64" },
        "duration-ms": { type: "string", default: "1000" },
        contenders: { type: "string", default: "8" },
        permits: { type: "string", default: "4" },
        "ttl-ms": { type: "string", default: "10000" },
        tag: { type: "string", default: "n" },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    die(`${err.message}\n${USAGE}`, 2);
  }
  const int = (name, min) => {
    const raw = values[name];
    if (!/^\d+$/.test(raw) || Number(raw) < min) {
      die(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`, 2);
    }
    return Number(raw);
  };
  const clients = { redlock: ["w1", "w2", "w3h"], "redis-semaphore": ["sem"] };
  if (!clients[values.client]) die(`--client must be redlock or redis-semaphore\n${USAGE}`, 2);
  if (!clients[values.client].includes(values.workload)) {
    die(`--client ${values.client} runs ${clients[values.client].join(", ")}, ` +
      `not ${JSON.stringify(values.workload)}`, 2);
  }
  if (!values.urls) die(`--urls is required\n${USAGE}`, 2);
  const urls = values.urls.split(",").map((u) => u.trim()).filter((u) => u.length > 0);
  if (urls.length === 0) die("--urls lists no URL", 2);
  return {
    client: values.client,
    workload: values.workload,
    urls,
    ops: int("ops", 1),
    tasks: int("tasks", 1),
    durationMs: int("duration-ms", 1),
    contenders: int("contenders", 2),
    permits: int("permits", 1),
    ttlMs: int("ttl-ms", 1),
    tag: values.tag,
  };
}

const now = () => process.hrtime.bigint();
const us = (ns) => Number(ns) / 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Nearest-rank percentile `q` (0–100) of `samples` (µs); null when empty. */
function percentile(samples, q) {
  if (samples.length === 0) return null;
  const sorted = Float64Array.from(samples).sort();
  const rank = Math.max(1, Math.ceil((q / 100) * sorted.length));
  return sorted[rank - 1];
}

/** One ioredis client per URL (default options), connected. */
async function connect(urls) {
  const clients = urls.map((url) => {
    const c = new Redis(url, { lazyConnect: true });
    c.on("error", (err) => process.stderr.write(`bench-peer: ${url}: ${err.message}\n`));
    return c;
  });
  await Promise.all(clients.map((c) => c.connect()));
  return clients;
}

/** A Redlock at its default settings over `clients`. */
function redlockOver(clients) {
  const Redlock = require("redlock").default;
  return new Redlock(clients);
}

/** Prints `ready` and resolves when the bench says go (one line on stdin). */
function readyThenGo() {
  process.stdout.write("ready\n");
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: process.stdin });
    rl.once("line", () => {
      resolve();
      rl.close();
    });
    rl.once("close", () => reject(new Error("stdin closed before `go`")));
  });
}

async function w1(opts) {
  const clients = await connect(opts.urls);
  const redlock = redlockOver(clients);
  const pass = async (tag, n, samples) => {
    const start = now();
    for (let i = 0; i < n; i++) {
      const t = now();
      const key = `bench:w1:${tag}:${String(i).padStart(8, "0")}`;
      const lock = await redlock.acquire([key], opts.ttlMs);
      await lock.release();
      if (samples) samples.push(us(now() - t));
    }
    return Number(now() - start) / 1e9;
  };
  await pass(`${opts.tag}w`, 200, null);
  await readyThenGo();
  const samples = [];
  const elapsed = await pass(opts.tag, opts.ops, samples);
  return {
    clients,
    result: {
      pairs: opts.ops,
      elapsed_s: elapsed,
      p50_us: percentile(samples, 50),
      p99_us: percentile(samples, 99),
    },
  };
}

async function w2(opts) {
  const clients = await connect(opts.urls);
  const redlock = redlockOver(clients);
  const key = (task, i) =>
    `bench:w2:${opts.tag}:${String(task).padStart(3, "0")}:${String(i).padStart(8, "0")}`;
  for (let i = 0; i < 50; i++) {
    await (await redlock.acquire([key(999, i)], opts.ttlMs)).release();
  }
  await readyThenGo();
  let stop = false;
  let counted = 0;
  const start = now();
  const loops = [];
  for (let t = 0; t < opts.tasks; t++) {
    loops.push((async () => {
      for (let i = 0; !stop; i++) {
        const lock = await redlock.acquire([key(t, i)], opts.ttlMs);
        await lock.release();
        if (!stop) counted++;
      }
    })());
  }
  await sleep(opts.durationMs);
  stop = true;
  const pairs = counted;
  const elapsed = Number(now() - start) / 1e9;
  await Promise.all(loops);
  return { clients, result: { pairs, elapsed_s: elapsed } };
}

/** What the contenders of w3h and sem share: the bench's Arena, in Node. */
class Arena {
  constructor(contenders, fifo) {
    this.stopped = false;
    this.fifo = fifo;
    this.counter = 0;
    this.executed = 0;
    this.inside = 0;
    this.maxInside = 0;
    this.grants = 0;
    this.handoffs = 0;
    this.toWaiters = 0;
    this.lastHolder = null;
    this.lastRelease = null;
    this.pending = [];
    this.per = new Array(contenders).fill(0);
    this.handoffSamples = [];
    this.waitSamples = [];
    this.grantSeq = 0;
    this.turnWaiters = [];
  }

  granted(me, asked) {
    const t = now();
    this.waitSamples.push(us(t - asked));
    this.grantSeq++;
    if (!this.fifo) {
      const waiters = this.turnWaiters;
      this.turnWaiters = [];
      for (const w of waiters) w();
    }
    if (this.stopped) return;
    this.grants++;
    this.per[me]++;
    if (this.lastHolder !== null && this.lastHolder !== me) this.handoffs++;
    if (this.fifo) {
      const r = this.pending.shift();
      if (r !== undefined) {
        this.handoffSamples.push(us(t - r.at));
        // To a contender asking since before the release started, not a newcomer.
        if (asked < r.at) this.toWaiters++;
        r.matched();
      }
    } else if (this.lastRelease && this.lastRelease.who !== me) {
      this.handoffSamples.push(us(t - this.lastRelease.at));
    }
    this.lastHolder = me;
  }

  async criticalSection() {
    this.inside++;
    this.maxInside = Math.max(this.maxInside, this.inside);
    const v = this.counter;
    await new Promise((resolve) => setImmediate(resolve));
    this.counter = v + 1;
    this.executed++;
    this.inside--;
  }

  /**
   * `me` is about to release. Returns what `nextTurn` waits for: w3h, the grant count
   * now (another contender must acquire after it); sem, a promise of the permit's
   * grant to another contender.
   */
  releasing(me) {
    const t = now();
    if (this.fifo) {
      if (this.stopped) return Promise.resolve();
      return new Promise((matched) => this.pending.push({ at: t, matched }));
    }
    this.lastRelease = { who: me, at: t };
    return this.grantSeq;
  }

  /** After a release: until its turn comes again (see `releasing`) or the run stopped. */
  nextTurn(turn) {
    if (this.fifo) return turn;
    if (this.stopped || this.grantSeq > turn) return Promise.resolve();
    return new Promise((resolve) => this.turnWaiters.push(resolve));
  }

  stop() {
    this.stopped = true;
    const waiters = this.turnWaiters;
    this.turnWaiters = [];
    for (const w of waiters) w();
    const pending = this.pending;
    this.pending = [];
    for (const r of pending) r.matched();
  }

  result(elapsed) {
    const total = Math.max(this.grants, 1);
    return {
      grants: this.grants,
      executed: this.executed,
      elapsed_s: elapsed,
      handoff_p50_us: percentile(this.handoffSamples, 50),
      handoff_p99_us: percentile(this.handoffSamples, 99),
      wait_p50_us: percentile(this.waitSamples, 50),
      wait_p99_us: percentile(this.waitSamples, 99),
      wait_max_us: this.waitSamples.length ? Math.max(...this.waitSamples) : null,
      handoff_share: this.handoffs / total,
      busiest_share: Math.max(...this.per) / total,
      max_inside: this.maxInside,
      waiter_share: this.fifo ? this.toWaiters / total : undefined,
      // A semaphore admits several at once: its check is max_inside, not the counter.
      counter: this.fifo ? undefined : this.counter,
    };
  }
}

/**
 * w3h and sem: `acquire()` resolves to a release function, looping over the peer's
 * own give-ups (redlock's retries exhausted, redis-semaphore's acquire timeout) as an
 * application waiting for the resource would.
 */
async function contest(opts, makeContender, fifo) {
  const contenders = [];
  for (let me = 0; me < opts.contenders; me++) contenders.push(await makeContender(me));
  const arena = new Arena(opts.contenders, fifo);
  await readyThenGo();
  const start = now();
  const loops = contenders.map(async (c, me) => {
    while (!arena.stopped) {
      const asked = now();
      const release = await c.acquire();
      arena.granted(me, asked);
      await arena.criticalSection();
      const turn = arena.releasing(me);
      await release();
      await arena.nextTurn(turn);
    }
  });
  await sleep(opts.durationMs);
  arena.stop();
  const elapsed = Number(now() - start) / 1e9;
  await Promise.all(loops);
  return { clients: contenders.flatMap((c) => c.clients), result: arena.result(elapsed) };
}

async function w3h(opts) {
  const key = `bench:w3h:${opts.tag}:hot`;
  return contest(opts, async () => {
    const clients = await connect(opts.urls);
    const redlock = redlockOver(clients);
    return {
      clients,
      async acquire() {
        for (;;) {
          try {
            const lock = await redlock.acquire([key], opts.ttlMs);
            return () => lock.release();
          } catch (err) {
            // Default retries (10 × 200 ± 100 ms) exhausted: ask again.
            if (err && err.name === "ExecutionError") continue;
            throw err;
          }
        }
      },
    };
  }, false);
}

async function sem(opts) {
  const { Semaphore, RedlockSemaphore, TimeoutError } = require("redis-semaphore");
  const key = `bench:sem:${opts.tag}`;
  return contest(opts, async () => {
    const clients = await connect(opts.urls);
    // Default options: lockTimeout 10 s, acquireTimeout 10 s, retryInterval 10 ms,
    // refreshInterval 8 s. A new object per acquisition, as the package's README does.
    const make = () => (clients.length === 1
      ? new Semaphore(clients[0], key, opts.permits)
      : new RedlockSemaphore(clients, key, opts.permits));
    return {
      clients,
      async acquire() {
        for (;;) {
          const s = make();
          try {
            await s.acquire();
            return () => s.release();
          } catch (err) {
            if (err instanceof TimeoutError) continue;
            throw err;
          }
        }
      },
    };
  }, true);
}

async function main() {
  const opts = parseCli();
  const run = { w1, w2, w3h, sem }[opts.workload];
  const { clients, result } = await run(opts);
  if (result.counter !== undefined && result.counter !== result.executed) {
    die(`${result.executed} critical sections ran but the counter says ${result.counter}: ` +
      "two holders at once");
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  for (const c of clients) c.disconnect();
  process.exit(0);
}

main().catch((err) => die(err && err.stack ? err.stack : String(err)));
