// Loads the native addon (napi-rs) for this platform, or fails with a clear error.
//
// The usual napi-rs layout: the `fencelock` package holds the JS code; each prebuilt
// binary is its own npm package, `fencelock-<triple>` (e.g. fencelock-linux-x64-gnu),
// listed in `optionalDependencies` with `os`/`cpu`/`libc` fields, so npm installs the
// one that fits. A binary built in this directory (`fencelock.<triple>.node`, what
// `scripts/build-addon.sh` writes) wins, for development and for the package built here.
//
// There is no fallback: on a platform without a binary, `require("fencelock")` throws
// an error with `code: "UNSUPPORTED_PLATFORM"` (or `"BINARY_MISSING"` when the
// platform is supported but its package was not installed) that says what to do.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

/** The platforms a prebuilt binary is published for (see docs/node.md). */
const SUPPORTED = [
  "linux-x64-gnu",
  "linux-arm64-gnu",
  "linux-x64-musl",
  "linux-arm64-musl",
  "darwin-x64",
  "darwin-arm64",
];

/** Whether this Linux runs on musl (Alpine) rather than glibc. */
function isMusl() {
  if (process.platform !== "linux") return false;
  try {
    const report = process.report && process.report.getReport();
    const header = report && (typeof report === "string" ? JSON.parse(report) : report).header;
    if (header && header.glibcVersionRuntime) return false;
    if (header && Array.isArray(report.sharedObjects)) {
      return report.sharedObjects.some((f) => f.includes("libc.musl-") || f.includes("ld-musl-"));
    }
  } catch {
    // fall through to the file check
  }
  try {
    return fs.readFileSync("/usr/bin/ldd", "utf8").includes("musl");
  } catch {
    return false;
  }
}

/**
 * The napi-rs triple for a platform, e.g. `linux-x64-gnu`; `null` when fencelock
 * publishes no binary for it.
 */
function tripleFor(platform, arch, musl) {
  let triple;
  if (platform === "linux") triple = `linux-${arch}-${musl ? "musl" : "gnu"}`;
  else triple = `${platform}-${arch}`;
  return SUPPORTED.includes(triple) ? triple : null;
}

function fail(code, message) {
  const err = new Error(message);
  err.code = code;
  return err;
}

function load() {
  const { platform, arch } = process;
  const musl = isMusl();
  const triple = tripleFor(platform, arch, musl);
  if (!triple) {
    const what = `${platform}-${arch}${platform === "linux" ? (musl ? "-musl" : "-gnu") : ""}`;
    throw fail(
      "UNSUPPORTED_PLATFORM",
      `fencelock: no prebuilt binary for ${what} (Node.js ${process.version}). ` +
        `Binaries are published for: ${SUPPORTED.join(", ")}. ` +
        "To use fencelock here, build the addon from source (Rust toolchain, then " +
        "`crates/fencelock-node/scripts/build-addon.sh --release` in the fencelock repository) " +
        "and copy the .node file next to this package's index.js.",
    );
  }
  const local = path.join(__dirname, `fencelock.${triple}.node`);
  if (fs.existsSync(local)) return require(local);
  const pkg = `fencelock-${triple}`;
  try {
    return require(pkg);
  } catch (e) {
    if (e && e.code === "MODULE_NOT_FOUND" && String(e.message).includes(pkg)) {
      throw fail(
        "BINARY_MISSING",
        `fencelock: the binary package ${pkg} for this platform is not installed. ` +
          "It is an optional dependency of fencelock: reinstall without --no-optional / " +
          "--omit=optional (and with the lockfile made on any platform, npm >= 7 installs it).",
      );
    }
    throw e;
  }
}

module.exports = { load, tripleFor, isMusl, SUPPORTED };
