#!/usr/bin/env node
// A ledger that refuses stale writes: examples/ledger.rs of the Rust crate, in JS.
//
//   node examples/ledger.js redis://127.0.0.1:6379 [LOCK_STORE ...]
//
// The ledger lives in Redis (hashes `ledger:account:<id>` with `balance` and `fence`);
// the locks in LOCK_STORE (default: the same Redis). Needs `ioredis` (pure JS).
//
// A lock keeps two *live* holders apart. It cannot stop a holder that was paused (a GC
// pause, a stopped container) past its lease from waking up and writing what it
// computed before: by then another holder has written. Only the resource can refuse
// that write, by checking the lease's fencing token. Here the check and both writes
// are one Lua script — one conditional statement on the server: every account
// remembers the highest token that wrote it, and a transfer carrying a lower token
// than either account has seen is refused whole, never half-applied.
"use strict";

const Redis = require("ioredis");
const { Locker } = require("..");

/**
 * KEYS: the two account hashes. ARGV: the new balance of each, the writer's token.
 * Returns 1 when written, 0 when refused as stale. Equal tokens pass (one holder may
 * write several times). Tokens are 64-bit (a JS bigint): they are compared as decimal
 * strings, not Lua numbers, which are exact only up to 2^53.
 */
const FENCED_TRANSFER = `
local function older(seen, token)
  -- Decimal strings without leading zeros: shorter is smaller; same length, compare.
  if #seen ~= #token then return #token < #seen end
  return token < seen
end
for i = 1, 2 do
  local seen = redis.call('HGET', KEYS[i], 'fence') or '0'
  if older(seen, ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], 'balance', ARGV[1], 'fence', ARGV[3])
redis.call('HSET', KEYS[2], 'balance', ARGV[2], 'fence', ARGV[3])
return 1
`;

const account = (id) => `ledger:account:${id}`;

async function balances(redis, from, to) {
  const [a, b] = await Promise.all([redis.hget(account(from), "balance"), redis.hget(account(to), "balance")]);
  return [Number(a), Number(b)];
}

/** Writes both new balances fenced by `token` (a bigint): "applied" or "refused-stale". */
async function writeFenced(redis, [from, fromBalance], [to, toBalance], token) {
  const written = await redis.eval(FENCED_TRANSFER, 2, account(from), account(to),
    String(fromBalance), String(toBalance), token.toString());
  return written === 1 ? "applied" : "refused-stale";
}

/** Read, compute, write under the lease. */
async function transfer(redis, lease, from, to, amount) {
  const [a, b] = await balances(redis, from, to);
  return writeFenced(redis, [from, a - amount], [to, b + amount], lease.token);
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
    const [a, b] = await balances(redis, "alice", "bob");

    // ... meanwhile another holder gets the lock once that lease ran out, with a
    //    larger token, and moves money.
    const next = await locker.acquire(keys, 10_000, { wait: 10_000 });
    log(`transfer with token ${next.token}: ${await transfer(redis, next, "bob", "alice", 50)}`);
    await next.release();

    // 3. The stalled holder wakes up and writes what it computed before. Its lease is
    //    gone (stale.signal was aborted), but a holder that was paused would not have
    //    looked in time: the ledger refuses the write.
    const late = await writeFenced(redis, ["alice", a - 10], ["bob", b + 10], stale.token);
    log(`late write with token ${stale.token} (after ${next.token} wrote): ${late}`);
    log(`release of the stale lease: ${await stale.release()}`);

    const [alice, bob] = await balances(redis, "alice", "bob");
    log(`balances: alice ${alice}, bob ${bob}, total ${alice + bob} (was 200)`);
    return { late, alice, bob, staleLost: stale.signal.aborted };
  } finally {
    await locker.close();
    redis.disconnect();
  }
}

module.exports = { main, FENCED_TRANSFER };

if (require.main === module) {
  const [url, ...stores] = process.argv.slice(2);
  if (!url) {
    console.error("usage: node examples/ledger.js redis://HOST:PORT [LOCK_STORE ...]");
    process.exit(2);
  }
  main(url, stores.length ? stores : [url]).then(
    (r) => process.exit(r.late === "refused-stale" && r.alice + r.bob === 200 ? 0 : 1),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
