// `npm pack`, installed into an empty directory, works there: the package as users get
// it, not the build tree.
"use strict";

const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { it } = require("node:test");

const pkgDir = path.join(__dirname, "..");

const SMOKE = `
"use strict";
const assert = require("node:assert/strict");
const { Locker, lock, closeAll, FencelockError } = require("fencelock");
(async () => {
  const store = "sqlite://" + require("node:path").join(__dirname, "locks.db");
  const locker = new Locker({ stores: [store] });
  const a = await locker.acquire("smoke", 5000);
  const err = await locker.acquire("smoke", 5000, { wait: 0 }).catch((e) => e);
  assert.ok(err instanceof FencelockError && err.code === "CONTENDED", String(err));
  assert.equal(await a.release(), "released");
  await locker.close();
  process.env.FENCELOCK_STORE = store;
  const { error, unlock, token } = await lock("smoke", 1000);
  assert.equal(error, null);
  assert.equal(typeof token, "bigint");
  assert.equal(await unlock(), "released");
  await closeAll();
  console.log("smoke ok");
})().catch((e) => { console.error(e); process.exit(1); });
`;

// The same from an ES module: named imports of the CommonJS package.
const SMOKE_ESM = `
import { Locker, codes } from "fencelock";
const locker = new Locker({ stores: ["memory://esm"] });
const lease = await locker.acquire("esm", 1000);
console.log(typeof lease.token, codes.CONTENDED, await lease.release());
await locker.close();
`;

it("npm pack installs into an empty directory and works there", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "fencelock-pack-"));
  try {
    const out = execFileSync("npm", ["pack", "--json", "--pack-destination", tmp], { cwd: pkgDir, encoding: "utf8" });
    const [{ filename, files }] = JSON.parse(out.slice(out.indexOf("[")));
    const names = files.map((f) => f.path).sort();
    for (const f of ["README.md", "LICENSE-MIT", "LICENSE-APACHE", "index.js", "index.d.ts", "binding.js", "package.json"]) {
      assert.ok(names.includes(f), `the package lacks ${f}: ${names.join(", ")}`);
    }
    assert.ok(names.some((f) => /^fencelock\.[a-z0-9-]+\.node$/.test(f)), `no .node file: ${names.join(", ")}`);
    assert.ok(!names.some((f) => f.startsWith("src/") || f.startsWith("test/")), names.join(", "));

    const app = path.join(tmp, "app");
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", private: true }));
    execFileSync("npm", ["install", "--no-audit", "--no-fund", "--offline", path.join(tmp, filename)], { cwd: app, stdio: "pipe" });
    fs.writeFileSync(path.join(app, "smoke.js"), SMOKE);
    const ran = execFileSync(process.execPath, ["smoke.js"], { cwd: app, encoding: "utf8" });
    assert.match(ran, /smoke ok/);
    fs.writeFileSync(path.join(app, "smoke.mjs"), SMOKE_ESM);
    const esm = execFileSync(process.execPath, ["smoke.mjs"], { cwd: app, encoding: "utf8" });
    assert.equal(esm.trim(), "bigint CONTENDED released");
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

it("the release layout (scripts/npm-packages.sh): JS package + platform package, and a clear error without the latter", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "fencelock-release-"));
  try {
    execFileSync(path.join(pkgDir, "scripts/npm-packages.sh"), [path.join(tmp, "out")], { stdio: "pipe" });
    const triple = require("../binding.js").tripleFor(process.platform, process.arch, require("../binding.js").isMusl());
    const tarballs = {};
    for (const name of ["fencelock", `fencelock-${triple}`]) {
      const out = execFileSync("npm", ["pack", "--json", "--pack-destination", tmp, path.join(tmp, "out", name)], { encoding: "utf8" });
      const [{ filename, files }] = JSON.parse(out.slice(out.indexOf("[")));
      tarballs[name] = path.join(tmp, filename);
      if (name === "fencelock") {
        assert.ok(!files.some((f) => f.path.endsWith(".node")), "the JS package carries a binary");
      }
    }
    const install = (dir, files) => {
      fs.mkdirSync(dir);
      fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", private: true }));
      // --omit=optional: the other platforms' packages are not on any registry here.
      execFileSync("npm", ["install", "--no-audit", "--no-fund", "--offline", "--omit=optional", ...files], { cwd: dir, stdio: "pipe" });
    };
    const probe = `
      try {
        const { Locker } = require("fencelock");
        new Locker({ stores: ["memory://probe"] });
        console.log("loaded");
      } catch (e) { console.log(e.code + ": " + e.message); }`;

    const full = path.join(tmp, "full");
    install(full, [tarballs.fencelock, tarballs[`fencelock-${triple}`]]);
    assert.equal(execFileSync(process.execPath, ["-e", probe], { cwd: full, encoding: "utf8" }).trim(), "loaded");

    const bare = path.join(tmp, "bare");
    install(bare, [tarballs.fencelock]);
    const said = execFileSync(process.execPath, ["-e", probe], { cwd: bare, encoding: "utf8" }).trim();
    assert.match(said, new RegExp(`^BINARY_MISSING: fencelock: the binary package fencelock-${triple} for this platform is not installed`));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
