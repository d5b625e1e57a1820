// A worker process of the cross-process exclusion tests: N times, takes the lock on
// KEY with fencelock, does a non-atomic read-modify-write of a counter at the resource
// (a Redis key), and checks at the resource that its fencing token is above every
// earlier writer's. Exits 0 when all went well; 1 with a message otherwise.
//
// Usage: node worker.js STORES(comma-separated) KEY ITERATIONS RESOURCE_PORT
"use strict";

const Redis = require("ioredis");
const { Locker } = require("../..");

const [stores, key, iterations, resourcePort] = process.argv.slice(2);

async function main() {
  const resource = new Redis({ port: Number(resourcePort), host: "127.0.0.1" });
  const locker = new Locker({ stores: stores.split(","), wait: Infinity });
  for (let i = 0; i < Number(iterations); i++) {
    const lease = await locker.acquire(key, 5000);
    // The fenced write: refuse a token not above the highest seen (in one script).
    const accepted = await resource.eval(
      `local last = tonumber(redis.call('GET', KEYS[2]) or '0')
       if tonumber(ARGV[1]) <= last then return 0 end
       redis.call('SET', KEYS[2], ARGV[1])
       return 1`,
      2, `${key}:resource:counter`, `${key}:resource:token`, lease.token.toString());
    if (accepted !== 1) throw new Error(`token ${lease.token} refused: not above the last writer's`);
    // Read-modify-write that only mutual exclusion keeps correct.
    const n = Number((await resource.get(`${key}:resource:counter`)) || "0");
    await new Promise((r) => setImmediate(r));
    await resource.set(`${key}:resource:counter`, String(n + 1));
    const status = await lease.release();
    if (status !== "released") throw new Error(`release said ${status}`);
  }
  await locker.close();
  resource.disconnect();
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`worker: ${e.stack || e}\n`);
    process.exit(1);
  },
);
