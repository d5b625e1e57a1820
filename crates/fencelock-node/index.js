// fencelock for Node.js: distributed locks with fencing tokens, on the Rust core.
//
// This file only converts types. Waiting (release notices, no polling), renewal,
// hand-off and loss detection run in the native addon (crates/fencelock-node/src/lib.rs),
// the same code as the Rust library and the CLI.
"use strict";

const native = require("./binding.js").load();

/** The `code` of every error this package throws or reports. */
const codes = Object.freeze({
  /** Someone else holds (one of) the keys. `retryAfter`: ms their lease still runs. */
  CONTENDED: "CONTENDED",
  /** The wait ran out while the lock was held. */
  TIMEOUT: "TIMEOUT",
  /** Not enough stores answered to decide (Redis down, network). */
  UNAVAILABLE: "UNAVAILABLE",
  /** The lease can no longer be proven valid (expired, or another owner holds it). */
  LOST: "LOST",
  /** An argument was rejected before anything was sent. */
  INVALID: "INVALID",
  /** The configuration is wrong in a way retrying cannot fix (no store, bad URL, closed locker …). */
  CONFIG: "CONFIG",
});

/** Every failure of this package: `code` says which (see `codes`). */
class FencelockError extends Error {
  constructor(code, message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "FencelockError";
    this.code = code;
    /** For CONTENDED (and a TIMEOUT that ended contended): ms until the holder's lease runs out. */
    this.retryAfter = options.retryAfter;
  }
}

function fromNative(f) {
  return new FencelockError(f.code, f.message, {
    retryAfter: f.retryAfterMs == null ? undefined : f.retryAfterMs,
  });
}

function invalid(message) {
  return new FencelockError(codes.INVALID, message);
}

/** `keys` as an array of strings, or an INVALID error. */
function toKeys(keys) {
  const list = typeof keys === "string" ? [keys] : keys;
  if (!Array.isArray(list) || list.length === 0) {
    throw invalid(`keys must be a string or a non-empty array of strings, got ${describe(keys)}`);
  }
  for (const k of list) {
    if (typeof k !== "string") throw invalid(`every key must be a string, got ${describe(k)}`);
  }
  return list;
}

/** A number of milliseconds, or an INVALID error. */
function toMs(what, value, { allowInfinity = false } = {}) {
  if (typeof value !== "number" || Number.isNaN(value) || value < 0 ||
      (!allowInfinity && !Number.isFinite(value))) {
    throw invalid(`${what} must be a number of milliseconds >= 0, got ${describe(value)}`);
  }
  return value;
}

function describe(v) {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "bigint") return `${v}n`;
  if (v === null || v === undefined || typeof v !== "object") return String(v);
  return Array.isArray(v) ? "an array" : "an object";
}

/** `wait` of acquire(): undefined → the locker's default; false/0 → no waiting; true/Infinity → for ever. */
function toWait(wait) {
  if (wait === undefined) return undefined;
  if (wait === false) return 0;
  if (wait === true) return Infinity;
  return toMs("wait", wait, { allowInfinity: true });
}

// Locker options: JS name → [native name, kind].
const OPTIONS = {
  ttl: ["ttlMs", "ms"],
  wait: ["waitMs", "wait"],
  driftFactor: ["driftFactor", "number"],
  requestTimeout: ["requestTimeoutMs", "ms"],
  connectTimeout: ["connectTimeoutMs", "ms"],
  retryDelay: ["retryDelayMs", "ms"],
  retryJitter: ["retryJitterMs", "ms"],
  prefix: ["prefix", "string"],
  notifications: ["notifications", "boolean"],
  fair: ["fair", "boolean"],
  holder: ["holder", "string"],
  autoRenew: ["autoRenew", "boolean"],
  maxHold: ["maxHoldMs", "ms"],
  maxTtl: ["maxTtlMs", "ms"],
  password: ["password", "string"],
  caCert: ["caCert", "string"],
};

function toNativeOptions(options) {
  if (options === null || typeof options !== "object") {
    throw new FencelockError(codes.CONFIG, "new Locker(options): options must be an object with `stores`");
  }
  const { stores } = options;
  if (stores === undefined || (Array.isArray(stores) && stores.length === 0)) {
    throw new FencelockError(
      codes.CONFIG,
      "no store given: pass `stores` (redis://host:6379 — several for Redlock — or sqlite:///path/locks.db)",
    );
  }
  const list = typeof stores === "string" ? [stores] : stores;
  if (!Array.isArray(list) || list.some((s) => typeof s !== "string")) {
    throw invalid(`stores must be an array of URL strings, got ${describe(stores)}`);
  }
  const out = { stores: list };
  for (const [name, value] of Object.entries(options)) {
    if (name === "stores" || value === undefined) continue;
    const spec = OPTIONS[name];
    if (!spec) throw invalid(`unknown option ${JSON.stringify(name)}; known: stores, ${Object.keys(OPTIONS).join(", ")}`);
    const [nativeName, kind] = spec;
    if (kind === "ms") out[nativeName] = toMs(name, value);
    else if (kind === "wait") out[nativeName] = toWait(value);
    else if (typeof value !== kind) throw invalid(`${name} must be a ${kind}, got ${describe(value)}`);
    else out[nativeName] = value;
  }
  return out;
}

/**
 * Proof of holding a lock. `token` goes with every write to the protected resource;
 * `signal` aborts the moment the lease is lost (never on a normal release).
 */
class Lease {
  #native;
  #controller = new AbortController();

  /** @internal */
  constructor(nativeLease) {
    this.#native = nativeLease;
    /** The fencing token: larger than every earlier holder's on these keys. */
    this.token = nativeLease.token;
    /** The keys, as given. */
    this.keys = Object.freeze(nativeLease.keys);
    const controller = this.#controller;
    const keys = this.keys;
    const token = this.token;
    // Weak on the native side: this callback never keeps the process alive.
    nativeLease.onEnd((why) => {
      const what = `lease on ${JSON.stringify(keys.length === 1 ? keys[0] : keys)} (token ${token})`;
      if (why === "lost") {
        controller.abort(new FencelockError(codes.LOST,
          `${what} lost: it could no longer be proven valid (renewal failed, expired, or another owner)`));
      } else if (why === "closed") {
        // Released by locker.close() while its holder still ran: for the holder, as lost.
        controller.abort(new FencelockError(codes.LOST, `${what} released by locker.close()`));
      }
    });
  }

  /**
   * Aborted the moment the lease is lost, or released by `locker.close()` from under its
   * holder; `signal.reason` is a FencelockError with code LOST. Never on `release()`.
   */
  get signal() {
    return this.#controller.signal;
  }

  /** Wall-clock time (ms since the epoch) until which the lease is proven valid. */
  get validUntil() {
    return this.#native.validUntilMs();
  }

  /** Whether the lease was lost (not merely released). */
  get lost() {
    return this.#native.isLost();
  }

  /** How long the lease is still proven valid, in ms (0 once lost, expired or released). */
  remaining() {
    return this.#native.remainingMs();
  }

  /**
   * Extends the lease to `ttlMs` from now (later renewals use it too).
   * Rejects with LOST when the lease is gone, UNAVAILABLE when too few stores answered.
   */
  async extend(ttlMs) {
    const f = await this.#native.extend(toMs("ttlMs", ttlMs));
    if (f) throw fromNative(f);
    return this;
  }

  /** Turns automatic renewal on or off for this lease. */
  setAutoRenew(on) {
    this.#native.setAutoRenew(Boolean(on));
  }

  /**
   * Releases the lock. Resolves to "released", "expired" (it ran out, nobody else holds
   * it), "owned-by-other" (it ran out and someone else took it) or "already-released".
   * Rejects only with UNAVAILABLE (too few stores answered; the keys still expire).
   */
  async release() {
    const r = await this.#native.release();
    if (typeof r === "string") return r;
    throw fromNative(r);
  }
}

/** Acquires, extends and releases locks over one store or a Redlock quorum of Redis nodes. */
class Locker {
  #native;
  #closed = false;

  constructor(options) {
    const opened = native.openLocker(toNativeOptions(options));
    if (!(opened instanceof native.NativeLocker)) throw fromNative(opened);
    this.#native = opened;
  }

  /** The stores, passwords redacted. */
  get stores() {
    return this.#native.stores();
  }

  /**
   * Acquires `keys` (a string or an array: all or nothing) for `ttlMs`, renewing it
   * until released (unless `autoRenew: false`). Waits while the lock is held — woken by
   * the holder's release, not by polling — up to `wait` ms (default: the locker's,
   * 10 s; `0`/`false`: no waiting; `Infinity`: for ever). `signal` aborts the wait:
   * the promise rejects with `signal.reason` and nothing of this acquire stays behind.
   */
  async acquire(keys, ttlMs, options = {}) {
    if (options === null || typeof options !== "object") throw invalid("acquire options must be an object");
    const list = toKeys(keys);
    const ttl = toMs("ttlMs", ttlMs === undefined ? this.#native.defaultTtlMs() : ttlMs);
    const wait = toWait(options.wait);
    const { signal } = options;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalid("signal must be an AbortSignal");
    if (signal && signal.aborted) throw signal.reason;
    let id;
    let onAbort;
    if (signal) {
      id = this.#native.newCancel();
      onAbort = () => this.#native.cancel(id);
      signal.addEventListener("abort", onAbort, { once: true });
    }
    let r;
    try {
      r = await this.#native.acquire(list, ttl, wait, id);
    } finally {
      if (signal) signal.removeEventListener("abort", onAbort);
    }
    if (r instanceof native.NativeLease) return new Lease(r);
    if (r.code === "ABORTED" && signal && signal.aborted) throw signal.reason;
    throw fromNative(r);
  }

  /**
   * Runs `routine(signal, lease)` under the lock, renewing it while the routine runs,
   * and releases it at the end (like redlock's `using`). `signal` aborts when the lease
   * is lost; the promise then rejects with a LOST error (the routine's own error, if
   * any, as its `cause`). Signature: using(keys, ttlMs, [options], routine).
   */
  async using(keys, ttlMs, options, routine) {
    if (typeof options === "function") {
      routine = options;
      options = {};
    }
    if (typeof routine !== "function") throw invalid("using(keys, ttlMs, [options], routine): routine must be a function");
    const lease = await this.acquire(keys, ttlMs, options);
    lease.setAutoRenew(true);
    let result;
    let lost;
    try {
      result = await routine(lease.signal, lease);
    } catch (e) {
      if (lease.lost && !(e instanceof FencelockError && e.code === codes.LOST)) {
        throw new FencelockError(codes.LOST, lease.signal.reason.message, { cause: e });
      }
      throw e;
    } finally {
      lost = lease.lost;
      // A release that fails after the work is not the work's failure: the keys expire.
      await lease.release().catch(() => {});
    }
    if (lost) throw lease.signal.reason;
    return result;
  }

  /**
   * Releases every lease of this locker still held (aborting their signals), stops its
   * waiting acquires, and waits for queued releases. Afterwards nothing of the locker keeps the process alive;
   * acquires reject with CONFIG.
   */
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    await this.#native.close();
  }
}

// --- the drop-in `lock()` -------------------------------------------------------------

/** redlock's default retryCount (15) times its retryDelay (200 ms): about 3 s. */
const DEFAULT_LOCK_WAIT = 3000;

const lockers = new Map();

function storesFrom(options) {
  if (options.stores !== undefined) return typeof options.stores === "string" ? [options.stores] : options.stores;
  const env = process.env.FENCELOCK_STORE;
  if (env && env.trim()) return env.split(",").map((s) => s.trim()).filter(Boolean);
  throw new FencelockError(
    codes.CONFIG,
    "no store: pass `stores` in the options or set FENCELOCK_STORE (e.g. redis://redis:6379, " +
      "comma-separated for Redlock). There is no local default: a per-pod store would lock nothing across pods.",
  );
}

/** One locker per set of stores and options, shared by lock() calls. */
function sharedLocker(options) {
  const { wait: _wait, signal: _signal, stores: _stores, ...rest } = options;
  const lockerOptions = { autoRenew: false, ...rest, stores: storesFrom(options) };
  const key = JSON.stringify(lockerOptions);
  let locker = lockers.get(key);
  if (!locker) {
    locker = new Locker(lockerOptions);
    lockers.set(key, locker);
  }
  return locker;
}

/**
 * The drop-in for the `lock(key, duration)` wrapper around redlock: resolves to
 * `{ error, code, unlock, token, lease }` and never rejects. `error` is null when the
 * lock was taken, else a message (with `code` beside it) — held past `wait` (default
 * 3000 ms, like redlock's retryCount: 15), stores down, bad input, no store configured.
 * `unlock()` never throws. The lock lasts `durationMs` unless unlocked (`autoRenew:
 * true` renews it until unlock). Stores: `options.stores`, else FENCELOCK_STORE.
 */
async function lock(key, durationMs, options = {}) {
  const failed = (e) => ({
    error: e && e.message ? e.message : String(e),
    code: e && typeof e.code === "string" ? e.code : "ABORTED",
    unlock: async () => "not-locked",
    token: null,
    lease: null,
  });
  try {
    if (options === null || typeof options !== "object") throw invalid("lock options must be an object");
    if (typeof key !== "string") throw invalid(`key must be a string, got ${describe(key)}`);
    const locker = sharedLocker(options);
    const wait = options.wait === undefined ? DEFAULT_LOCK_WAIT : options.wait;
    const lease = await locker.acquire(key, durationMs, { wait, signal: options.signal });
    let released;
    return {
      error: null,
      code: null,
      token: lease.token,
      lease,
      unlock: () => {
        released ??= lease.release().catch((e) => `failed: ${e.message}`);
        return released;
      },
    };
  } catch (e) {
    return failed(e);
  }
}

/** Closes the lockers that lock() opened (see Locker#close). */
async function closeAll() {
  const all = [...lockers.values()];
  lockers.clear();
  await Promise.all(all.map((l) => l.close()));
}

module.exports = { Locker, Lease, FencelockError, codes, lock, closeAll, DEFAULT_LOCK_WAIT };
