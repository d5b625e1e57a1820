// Real redis-server nodes for the JS tests: the JS twin of
// crates/fencelock/tests/support/cluster.rs. Each node is an independent server on a
// free loopback port, without persistence, in its own temporary directory; it can be
// paused (SIGSTOP), resumed and killed by PID. stop() kills every node it started.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const Redis = require("ioredis");

const START_ATTEMPTS = 5;
const START_DEADLINE_MS = 10_000;

/** A port that was free a moment ago (the server may still lose it to a race: retried). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Node {
  constructor(index, port, dir, child) {
    this.index = index;
    this.port = port;
    this.dir = dir;
    this.child = child;
    this.paused = false;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid() {
    return this.child.pid;
  }
}

/** Starts redis-server on `port` in `dir`; resolves once it answers PING with its own PID. */
async function launch(dir, port) {
  const logfile = path.join(dir, "redis.log");
  const child = spawn(
    "redis-server",
    [
      "--port", String(port),
      "--bind", "127.0.0.1",
      "--protected-mode", "yes",
      "--daemonize", "no",
      "--save", "",
      "--appendonly", "no",
      "--dir", dir,
      "--logfile", logfile,
    ],
    { stdio: "ignore" },
  );
  let exited = null;
  child.on("exit", (code, signal) => {
    exited = { code, signal };
  });
  await new Promise((resolve, reject) => {
    child.once("spawn", resolve);
    child.once("error", (e) =>
      reject(e.code === "ENOENT"
        ? new Error("redis-server is not installed: run scripts/test, which installs it")
        : e));
  });
  const deadline = Date.now() + START_DEADLINE_MS;
  for (;;) {
    if (exited) {
      const log = fs.existsSync(logfile) ? fs.readFileSync(logfile, "utf8") : "";
      const err = new Error(`redis-server on port ${port} exited during start-up (${JSON.stringify(exited)}):\n${log.slice(-2000)}`);
      err.portInUse = log.includes("Address already in use");
      throw err;
    }
    const client = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on("error", () => {});
    try {
      await client.connect();
      const info = await client.info("server");
      const pid = Number(/process_id:(\d+)/.exec(info)[1]);
      client.disconnect();
      if (pid === child.pid) return child;
    } catch {
      client.disconnect();
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`redis-server (PID ${child.pid}) did not answer on port ${port} within ${START_DEADLINE_MS} ms`);
    }
    await sleep(10);
  }
}

class Cluster {
  /** Starts `n` independent nodes. */
  static async start(n) {
    const cluster = new Cluster();
    try {
      for (let i = 0; i < n; i++) cluster.nodes.push(await cluster.#startNode(i));
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    return cluster;
  }

  constructor() {
    this.nodes = [];
    this.clients = [];
  }

  async #startNode(index) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `fencelock-js-redis-${index}-`));
    const errors = [];
    for (let attempt = 0; attempt < START_ATTEMPTS; attempt++) {
      const port = await freePort();
      try {
        return new Node(index, port, dir, await launch(dir, port));
      } catch (e) {
        if (!e.portInUse) throw e;
        errors.push(e.message);
      }
    }
    throw new Error(`every port tried was taken:\n${errors.join("\n")}`);
  }

  get urls() {
    return this.nodes.map((n) => n.url);
  }

  /** A plain ioredis client to node `i` (closed by stop()). */
  client(i) {
    if (!this.clients[i]) {
      const c = new Redis({ port: this.nodes[i].port, host: "127.0.0.1", maxRetriesPerRequest: 1 });
      c.on("error", () => {});
      this.clients[i] = c;
    }
    return this.clients[i];
  }

  pause(i) {
    process.kill(this.nodes[i].pid, "SIGSTOP");
    this.nodes[i].paused = true;
  }

  resume(i) {
    process.kill(this.nodes[i].pid, "SIGCONT");
    this.nodes[i].paused = false;
  }

  /** Keys on node `i` matching `pattern` (SCAN). */
  async keys(i, pattern = "*") {
    const found = [];
    let cursor = "0";
    do {
      const [next, batch] = await this.client(i).scan(cursor, "MATCH", pattern, "COUNT", 1000);
      found.push(...batch);
      cursor = next;
    } while (cursor !== "0");
    return found;
  }

  /** Every key matching `pattern` on every node. */
  async allKeys(pattern) {
    const all = [];
    for (let i = 0; i < this.nodes.length; i++) all.push(...(await this.keys(i, pattern)));
    return all;
  }

  /**
   * Keys matching `pattern` on any node, except the fencing counters
   * (`<key>:fencelock:fence`), which outlive every lock by design (docs/protocol.md).
   */
  async leftBehind(pattern) {
    return (await this.allKeys(pattern)).filter((k) => !k.endsWith(":fencelock:fence"));
  }

  /** Kills every node started (SIGCONT first, so a paused one can die) and closes clients. */
  async stop() {
    for (const c of this.clients) if (c) c.disconnect();
    this.clients = [];
    await Promise.all(this.nodes.map(async (n) => {
      if (n.child.exitCode !== null || n.child.signalCode !== null) return;
      const exited = new Promise((r) => n.child.once("exit", r));
      try {
        process.kill(n.pid, "SIGCONT");
        n.child.kill("SIGKILL");
      } catch {
        return;
      }
      await exited;
      fs.rmSync(n.dir, { recursive: true, force: true });
    }));
    this.nodes = [];
  }
}

module.exports = { Cluster, sleep };
