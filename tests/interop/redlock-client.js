#!/usr/bin/env node
// A client of the `redlock` npm package (v5) on ioredis, driven by fencelock's Rust
// interop tests. It takes the same lock as a fencelock client running at the same
// time, so a test can check that the two implementations exclude each other on the
// wire (same key, random value, PX ttl).
//
// Modes:
//   --mode loop (default): K times: acquire KEY, append "<name> enter <seq>" to the
//     log file, sleep H ms, append "<name> exit <seq>", release. A checker reads the
//     file afterwards: enter/exit pairs of all clients must never interleave.
//     With --duration-ms D instead: loop for D ms (rest --rest-ms R between a release
//     and the next acquire), then print "done <count>" (the mixed-fleet benchmark).
//   --mode hold: acquire once, print "acquired <value>" on stdout, hold H ms,
//     release, print "released <wall clock ms>". Used by the hand-off tests.
//
// --cluster: the URLs are seed nodes of ONE Redis Cluster, reached through one ioredis
//   `Cluster` client (which follows MOVED/ASK); redlock then has a single "node", as
//   fencelock's redis+cluster:// store counts a cluster as one Redlock node.
//
// Exit status: 0 when everything was done; 1 with a message on stderr otherwise
// (could not acquire within --acquire-timeout-ms, release failed, bad arguments…).
"use strict";

const fs = require("node:fs");
const { parseArgs } = require("node:util");
const Redis = require("ioredis");
const Redlock = require("redlock").default;

const USAGE = `usage: node redlock-client.js --urls redis://127.0.0.1:P1,... --key KEY
       [--ttl-ms N=2000] [--iterations K=1] [--hold-ms H=0] [--log FILE]
       [--mode loop|hold] [--name NAME=npm] [--retry-delay-ms 20]
       [--retry-jitter-ms 10] [--acquire-timeout-ms 30000]
       [--command-timeout-ms 1000] [--duration-ms D] [--rest-ms R] [--cluster]
       [--verbose]`;

/** Fail with a message on stderr and exit status 1 (or 2 for usage errors). */
function die(message, status = 1) {
  process.stderr.write(`redlock-client: error: ${message}\n`);
  process.exit(status);
}

function parseCli() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        urls: { type: "string" },
        key: { type: "string" },
        "ttl-ms": { type: "string", default: "2000" },
        iterations: { type: "string", default: "1" },
        "hold-ms": { type: "string", default: "0" },
        log: { type: "string" },
        mode: { type: "string", default: "loop" },
        name: { type: "string", default: "npm" },
        "retry-delay-ms": { type: "string", default: "20" },
        "retry-jitter-ms": { type: "string", default: "10" },
        "acquire-timeout-ms": { type: "string", default: "30000" },
        "command-timeout-ms": { type: "string", default: "1000" },
        "duration-ms": { type: "string", default: "0" },
        "rest-ms": { type: "string", default: "0" },
        cluster: { type: "boolean", default: false },
        verbose: { type: "boolean", default: false },
        help: { type: "boolean", default: false },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    die(`${err.message}\n${USAGE}`, 2);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const int = (name, min) => {
    const raw = values[name];
    if (!/^\d+$/.test(raw) || Number(raw) < min) {
      die(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`, 2);
    }
    return Number(raw);
  };
  if (!values.urls) die(`--urls is required\n${USAGE}`, 2);
  if (!values.key) die(`--key is required\n${USAGE}`, 2);
  if (values.mode !== "loop" && values.mode !== "hold") {
    die(`--mode must be loop or hold, got ${JSON.stringify(values.mode)}`, 2);
  }
  if (values.mode === "loop" && !values.log) {
    die("--log is required in loop mode", 2);
  }
  const opts = {
    urls: values.urls.split(",").map((u) => u.trim()).filter((u) => u.length > 0),
    key: values.key,
    ttlMs: int("ttl-ms", 1),
    iterations: int("iterations", 1),
    holdMs: int("hold-ms", 0),
    log: values.log,
    mode: values.mode,
    name: values.name,
    retryDelayMs: int("retry-delay-ms", 1),
    retryJitterMs: int("retry-jitter-ms", 0),
    acquireTimeoutMs: int("acquire-timeout-ms", 1),
    commandTimeoutMs: int("command-timeout-ms", 1),
    durationMs: int("duration-ms", 0),
    restMs: int("rest-ms", 0),
    cluster: values.cluster,
    verbose: values.verbose,
  };
  if (opts.urls.length === 0) die("--urls lists no URL", 2);
  return opts;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One whole line per append: `appendFileSync` opens with O_APPEND and writes the
 * line in one write(2), so lines of concurrent writers never mix mid-line.
 */
function logLine(file, line) {
  if (file) fs.appendFileSync(file, `${line}\n`);
}

/** Summarise the per-node votes of a failed redlock operation for an error message. */
async function describeAttempts(err) {
  if (!err || !Array.isArray(err.attempts) || err.attempts.length === 0) return "";
  try {
    const last = await err.attempts[err.attempts.length - 1];
    const against = [...last.votesAgainst.values()].map((e) => e && e.message);
    return ` (${err.attempts.length} attempts; last: ${last.votesFor.size} for, ` +
      `${last.votesAgainst.size} against: ${JSON.stringify(against)})`;
  } catch {
    return ` (${err.attempts.length} attempts)`;
  }
}

async function main() {
  const opts = parseCli();

  // No offline queue and a command timeout: a killed or paused node must count as
  // a vote against quickly, not hold every operation until it comes back.
  const nodeOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
    commandTimeout: opts.commandTimeoutMs,
    retryStrategy: (times) => Math.min(times * 50, 500),
  };
  const seeds = opts.urls.map((url) => {
    const u = new URL(url);
    return { host: u.hostname, port: Number(u.port || 6379) };
  });
  const clients = (opts.cluster ? [seeds.map((s) => `${s.host}:${s.port}`).join(",")] : opts.urls).map((url) => {
    const client = opts.cluster
      ? new Redis.Cluster(seeds, {
        lazyConnect: true,
        enableOfflineQueue: false,
        redisOptions: { ...nodeOptions, lazyConnect: undefined },
      })
      : new Redis(url, nodeOptions);
    // Without a listener ioredis prints "Unhandled error event" for every failed
    // reconnect; node failures are part of the tests, so only report them if asked.
    client.on("error", (err) => {
      if (opts.verbose) process.stderr.write(`redlock-client: ${url}: ${err.message}\n`);
    });
    return client;
  });
  const connected = await Promise.allSettled(clients.map((c) => c.connect()));
  const up = connected.filter((r) => r.status === "fulfilled").length;
  const quorum = Math.floor(clients.length / 2) + 1;
  if (up < quorum) {
    const errors = connected
      .map((r, i) => (r.status === "rejected" ? `${opts.urls[i]}: ${r.reason.message}` : null))
      .filter((e) => e);
    die(`only ${up} of ${clients.length} nodes reachable, need ${quorum}: ${errors.join("; ")}`);
  }

  const redlock = new Redlock(clients, {
    driftFactor: 0.01,
    // redlock treats retryCount as "attempts after the first"; derive it from the
    // acquire deadline so a stuck test fails instead of hanging forever.
    retryCount: Math.ceil(opts.acquireTimeoutMs / opts.retryDelayMs),
    retryDelay: opts.retryDelayMs,
    retryJitter: Math.min(opts.retryJitterMs, opts.retryDelayMs),
  });

  /** Per-operation promises that resolve once every node has answered. */
  const inFlight = [];

  /**
   * Acquire the key, insisting on a lock that is still valid when we get it:
   * redlock v5 computes `expiration` but does not itself refuse a lock whose
   * acquisition took longer than its validity, as the Redlock algorithm says to.
   */
  async function acquire(until = Date.now() + opts.acquireTimeoutMs, giveUp = null) {
    const deadline = until;
    for (;;) {
      let lock;
      try {
        // Bounded calls (redlock's default retry count), repeated until the deadline:
        // within one call redlock v5 retries with the same value and leaves the
        // minority grants of failed attempts in place until the call gives up, so with
        // one long call its own stale keys, expiring at different times on different
        // nodes, can refuse it for the whole call (seen with MONITOR).
        lock = await redlock.acquire([opts.key], opts.ttlMs, { retryCount: 10 });
      } catch (err) {
        if (Date.now() <= deadline) continue;
        if (giveUp) return giveUp;
        die(`could not acquire ${JSON.stringify(opts.key)} within ${opts.acquireTimeoutMs} ms: ` +
          `${err.message}${await describeAttempts(err)}`);
      }
      if (lock.expiration > Date.now()) return lock;
      process.stderr.write("redlock-client: lock acquired after its validity ended; retrying\n");
      await release(lock).catch(() => {});
      if (Date.now() > deadline) {
        die(`could not acquire a still-valid lock on ${JSON.stringify(opts.key)} ` +
          `within ${opts.acquireTimeoutMs} ms`);
      }
    }
  }

  /**
   * Release with a few retries only: the instance settings (many retries) would
   * also apply to release, and a release that finds the key gone counts as a
   * failed vote, so it would spin until the acquire deadline.
   */
  async function release(lock) {
    const { attempts } = await redlock.release(lock, { retryCount: 3 });
    // redlock resolves as soon as a quorum answered; the other nodes' requests
    // may still be in flight (a NOSCRIPT reply followed by EVAL is two round
    // trips). Remember them so we do not exit before they are done.
    inFlight.push(attempts[attempts.length - 1]);
  }

  if (opts.mode === "hold") {
    const lock = await acquire();
    process.stdout.write(`acquired ${lock.value}\n`);
    logLine(opts.log, `${opts.name} enter 0`);
    await sleep(opts.holdMs);
    logLine(opts.log, `${opts.name} exit 0`);
    try {
      await release(lock);
    } catch (err) {
      die(`release failed: ${err.message}${await describeAttempts(err)}`);
    }
    process.stdout.write(`released ${performance.timeOrigin + performance.now()}\n`);
  } else if (opts.durationMs > 0) {
    // Until the end: each acquire waits at most until then (redlock's own retries,
    // repeated), so the contest ends on time even when the other side holds the key.
    const end = Date.now() + opts.durationMs;
    const over = Symbol("over");
    let seq = 0;
    while (Date.now() < end) {
      const lock = await acquire(end, over);
      if (lock === over) break;
      seq++;
      logLine(opts.log, `${opts.name} enter ${seq}`);
      await sleep(opts.holdMs);
      logLine(opts.log, `${opts.name} exit ${seq}`);
      try {
        await release(lock);
      } catch (err) {
        die(`release ${seq} failed: ${err.message}${await describeAttempts(err)}`);
      }
      if (opts.restMs > 0) await sleep(opts.restMs);
    }
    process.stdout.write(`done ${seq}\n`);
  } else {
    for (let seq = 0; seq < opts.iterations; seq++) {
      const lock = await acquire();
      logLine(opts.log, `${opts.name} enter ${seq}`);
      await sleep(opts.holdMs);
      logLine(opts.log, `${opts.name} exit ${seq}`);
      try {
        await release(lock);
      } catch (err) {
        die(`release ${seq} failed (did the hold outlive the ttl?): ` +
          `${err.message}${await describeAttempts(err)}`);
      }
    }
  }

  // Without this, exiting right after the last release can leave the key on a
  // node whose release had not been sent yet (seen in the fixture tests).
  await Promise.all(inFlight);
  for (const client of clients) client.disconnect();
  // stdout/stderr to files and pipes are synchronous on Linux, so nothing written
  // above is lost by exiting now (ioredis reconnect timers would otherwise linger).
  process.exit(0);
}

main().catch((err) => die(err && err.stack ? err.stack : String(err)));
