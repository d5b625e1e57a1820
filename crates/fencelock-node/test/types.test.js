// index.d.ts compiles, and the documented usage type-checks against it (strict mode).
"use strict";

const assert = require("node:assert/strict");
const { spawnSync } = require("node:child_process");
const path = require("node:path");
const { it } = require("node:test");

it("index.d.ts and test/types.ts type-check with tsc --strict", () => {
  const tsc = path.join(__dirname, "../node_modules/typescript/bin/tsc");
  const r = spawnSync(process.execPath, [tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "commonjs",
    "--lib", "es2022,dom", path.join(__dirname, "types.ts")], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
