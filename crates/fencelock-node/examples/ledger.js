#!/usr/bin/env node
// A ledger that refuses stale reads and writes: examples/ledger.rs of the Rust crate, in JS.
//
//   node examples/ledger.js redis://127.0.0.1:6379 [LOCK_STORE ...]
//
// The ledger lives in Redis (hashes `ledger:account:<id>` with `balance` and `fence`);
// the locks in LOCK_STORE (default: the same Redis). Needs `ioredis` (pure JS).
//
// A lock keeps two *live* holders apart. It cannot stop a holder that was paused (a GC
// pause, a stopped container) past its lease from waking up and writing what it
// computed before: by then another holder has the lock. Only the resource can refuse
// that write, by checking the lease's fencing token. Here every access is one Lua
// script — one conditional statement on the server: every account remembers the
// highest token that read or wrote it, and a read or transfer carrying a lower token
// than either account has seen is refused whole, never half-applied.
//
// Reads are fenced too, not only writes. A transfer is a read-modify-write: with only
// the write fenced, a stale holder's write can land *after* the new holder read but
// *before* it wrote. Every token is then in order, so the stale write is accepted, and
// the new holder's write, computed from a read that did not see it, wipes it out: a
// lost update. A fenced read raises the accounts' fences to the reader's token, so the
// stale write is refused as soon as the new holder has read. The example plays both
// cases; docs/reliability.md has the argument.
"use strict";

const Redis = require("ioredis");
const { Locker } = require("..");

/**
 * How both scripts compare tokens: `older(seen, token)` is true when `token` is lower
 * than `seen`. Equal tokens pass (one holder may read and write several times). Tokens
 * are 64-bit (a JS bigint): they are compared as decimal strings, not Lua numbers,
 * which are exact only up to 2^53.
 */
const OLDER = `
local function older(seen, token)
  -- Decimal strings without leading zeros: shorter is smaller; same length, compare.
  if #seen ~= #token then return #token < #seen end
  return token < seen
end
`;

/**
 * The read of a read-modify-write. KEYS: the account hashes. ARGV: the reader's token.
 * Returns the balances, after raising every account's fence to the token; or nil
 * (refused as stale, nothing changed) when an account has seen a higher token.
 */
const FENCED_READ = `${OLDER}
for i = 1, #KEYS do
  local seen = redis.call('HGET', KEYS[i], 'fence') or '0'
  if older(seen, ARGV[1]) then return false end
end
local balances = {}
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'fence', ARGV[1])
  balances[i] = redis.call('HGET', KEYS[i], 'balance')
end
return balances
`;

/**
 * KEYS: the two account hashes. ARGV: the new balance of each, the writer's token.
 * Returns 1 when written, 0 when refused as stale (nothing written).
 */
const FENCED_TRANSFER = `${OLDER}
for i = 1, 2 do
  local seen = redis.call('HGET', KEYS[i], 'fence') or '0'
  if older(seen, ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], 'balance', ARGV[1], 'fence', ARGV[3])
redis.call('HSET', KEYS[2], 'balance', ARGV[2], 'fence', ARGV[3])
return 1
`;

const account = (id) => `ledger:account:${id}`;

/** Reads both balances fenced by `token` (a bigint): `[a, b]`, or null when refused. */
async function readFenced(redis, from, to, token) {
  const balances = await redis.eval(FENCED_READ, 2, account(from), account(to), token.toString());
  return balances === null ? null : balances.map(Number);
}

/** Writes both new balances fenced by `token` (a bigint): "applied" or "refused-stale". */
async function writeFenced(redis, [from, fromBalance], [to, toBalance], token) {
  const written = await redis.eval(FENCED_TRANSFER, 2, account(from), account(to),
    String(fromBalance), String(toBalance), token.toString());
  return written === 1 ? "applied" : "refused-stale";
}

/** Read, compute, write under the lease, both fenced with its token. */
async function transfer(redis, lease, from, to, amount) {
  const read = await readFenced(redis, from, to, lease.token);
  if (read === null) return "refused-stale";
  const [a, b] = read;
  return writeFenced(redis, [from, a - amount], [to, b + amount], lease.token);
}

/** A holder's read that must be admitted (the holder's lease is the newest). */
async function readAdmitted(redis, lease) {
  const read = await readFenced(redis, "alice", "bob", lease.token);
  if (read === null) throw new Error("the newest holder's read was refused");
  return read;
}

async function main(ledgerUrl, lockStores = [ledgerUrl], log = console.log) {
  const redis = new Redis(ledgerUrl);
  const locker = new Locker({ stores: lockStores });
  try {
    await redis.del(account("alice"), account("bob"));
    await redis.hset(account("alice"), "balance", 100, "fence", 0);
    await redis.hset(account("bob"), "balance", 100, "fence", 0);
    // Lock both accounts, all or nothing.
    const keys = ["lock:account:alice", "lock:account:bob"];

    // 1. The normal case: hold the lock, read, compute, write with the token.
    await locker.using(keys, 10_000, async (signal, lease) => {
      log(`transfer with token ${lease.token}: ${await transfer(redis, lease, "alice", "bob", 30)}`);
    });

    // 2. A holder that stalls: it reads under a short lease that is not renewed
    //    (a paused process could not renew it anyway) ...
    const stale = await locker.acquire(keys, 100);
    stale.setAutoRenew(false);
    const [a, b] = await readAdmitted(redis, stale);
    //    ... meanwhile another holder gets the lock once that lease ran out, with a
    //    larger token, and moves money.
    const next = await locker.acquire(keys, 10_000, { wait: 10_000 });
    log(`transfer with token ${next.token}: ${await transfer(redis, next, "bob", "alice", 50)}`);
    //    The stalled holder wakes up and writes what it computed before. Its lease is
    //    gone (stale.signal was aborted), but a holder that was paused would not have
    //    looked in time: the ledger refuses the write.
    const late = await writeFenced(redis, ["alice", a - 10], ["bob", b + 10], stale.token);
    log(`late write with token ${stale.token} (after ${next.token} wrote): ${late}`);
    log(`release of the stale lease: ${await stale.release()}`);
    await next.release();

    // 3. The case only fenced reads catch: the stale holder's late write lands after
    //    the next holder has *read*, but before it writes.
    const stale2 = await locker.acquire(keys, 100);
    stale2.setAutoRenew(false);
    const [c, d] = await readAdmitted(redis, stale2);
    const next2 = await locker.acquire(keys, 10_000, { wait: 10_000 });
    const [nextA, nextB] = await readAdmitted(redis, next2);
    //    With only writes fenced this write would be accepted (no higher token has
    //    *written*), and next2's write below, computed from its read, would wipe it
    //    out. next2's read raised the fences: refused.
    const lateAfterRead = await writeFenced(redis, ["alice", c - 10], ["bob", d + 10], stale2.token);
    log(`late write with token ${stale2.token} (after ${next2.token} read): ${lateAfterRead}`);
    const written = await writeFenced(redis, ["alice", nextA - 20], ["bob", nextB + 20], next2.token);
    log(`write with token ${next2.token}: ${written}`);
    log(`release of the stale lease: ${await stale2.release()}`);
    await next2.release();

    // The ledger's own look (not a holder's read): only the three transfers applied.
    const [alice, bob] = (await Promise.all([account("alice"), account("bob")]
      .map((k) => redis.hget(k, "balance")))).map(Number);
    log(`balances: alice ${alice}, bob ${bob}, total ${alice + bob} (was 200)`);
    return { late, lateAfterRead, written, alice, bob, staleLost: stale.signal.aborted };
  } finally {
    await locker.close();
    redis.disconnect();
  }
}

module.exports = { main, FENCED_READ, FENCED_TRANSFER };

if (require.main === module) {
  const [url, ...stores] = process.argv.slice(2);
  if (!url) {
    console.error("usage: node examples/ledger.js redis://HOST:PORT [LOCK_STORE ...]");
    process.exit(2);
  }
  main(url, stores.length ? stores : [url]).then(
    (r) => {
      const ok = r.late === "refused-stale" && r.lateAfterRead === "refused-stale"
        && r.written === "applied" && r.alice === 100 && r.bob === 100;
      process.exit(ok ? 0 : 1);
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
