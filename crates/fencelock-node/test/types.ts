// Compiled (not run) by test/types.test.js with `tsc --noEmit --strict`: the examples of
// the README and docs/node.md, typed against index.d.ts.
import { Locker, Lease, FencelockError, codes, lock, closeAll, type LockResult, type ReleaseStatus } from "..";

async function seedStyle(): Promise<void> {
  const { error, code, unlock, token } = await lock("ledger:42", 5000);
  if (error !== null) {
    const c: string = code;
    console.log(c, error);
    return;
  }
  const t: bigint = token;
  const status = await unlock();
  console.log(t, status);
  const r: LockResult = await lock("k", 1000, { stores: ["redis://127.0.0.1:6379"], wait: 0, autoRenew: true });
  if (r.lease) r.lease.setAutoRenew(false);
  await closeAll();
}

async function lockerStyle(signal: AbortSignal): Promise<bigint> {
  const locker = new Locker({ stores: ["redis://a:6379", "redis://b:6379", "redis://c:6379"], wait: 10_000, autoRenew: true });
  const lease: Lease = await locker.acquire(["account:alice", "account:bob"], 30_000, { wait: Infinity, signal });
  const keys: readonly string[] = lease.keys;
  const until: number = lease.validUntil + lease.remaining();
  await lease.extend(60_000);
  const status: ReleaseStatus = await lease.release();
  const n = await locker.using("report", 30_000, async (s: AbortSignal, l: Lease) => {
    if (s.aborted) throw s.reason;
    return l.token;
  });
  const m = await locker.using("report", 30_000, { wait: 0 }, (s) => (s.aborted ? 0n : 1n));
  try {
    await locker.acquire("x", 1000, { wait: false });
  } catch (e) {
    if (e instanceof FencelockError && e.code === codes.CONTENDED) console.log(e.retryAfter ?? 0);
  }
  await locker.close();
  console.log(keys, until, status);
  return n + m;
}

void seedStyle;
void lockerStyle;
