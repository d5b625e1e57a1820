// Types of the `fencelock` npm package. The package is CommonJS; `import { lock } from
// "fencelock"` works from ESM and TypeScript too.

/** The `code` of every error this package throws or reports. */
export type ErrorCode = "CONTENDED" | "TIMEOUT" | "UNAVAILABLE" | "LOST" | "INVALID" | "CONFIG";

export declare const codes: Readonly<{ [K in ErrorCode]: K }>;

/** Every failure of this package; `code` says which. */
export declare class FencelockError extends Error {
  name: "FencelockError";
  code: ErrorCode;
  /**
   * For CONTENDED (and a TIMEOUT that ended contended): milliseconds until the holder's
   * lease runs out unless it is extended. Undefined when unknown.
   */
  retryAfter?: number;
}

export interface LockerOptions {
  /**
   * Store URLs: one or several independent Redis primaries (`redis://[user:pass@]host:port[/db]`,
   * `rediss://…`; several make a Redlock quorum), or one `sqlite:///path/locks.db`
   * (processes on one host), or `memory://name` (one process, for tests).
   */
  stores: string | string[];
  /** The TTL of acquire() calls that give none, in ms (default 30 000). */
  ttl?: number;
  /** How long acquire() waits by default, in ms (default 10 000; Infinity: for ever; 0: no waiting). */
  wait?: number | boolean;
  /** Clock-drift allowance as a fraction of the TTL (default 0.01; 2 ms are always added). */
  driftFactor?: number;
  /** Per-node request timeout in ms (default 250; never more than a third of the TTL). */
  requestTimeout?: number;
  /** Per-node connect timeout in ms (default 1000). */
  connectTimeout?: number;
  /** Polling interval when release notices are unavailable, and back-off base, in ms (default 200). */
  retryDelay?: number;
  /** Random extra delay of every wait, in ms (default 100). */
  retryJitter?: number;
  /** A prefix put before every key (default none: keys are used as given, like redlock). */
  prefix?: string;
  /** Whether waiters wake on release notices (default true); off, they poll every retryDelay. */
  notifications?: boolean;
  /** Fair mode: waiters are served in arrival order (Redis only; default false). */
  fair?: boolean;
  /** A description of this holder stored beside each key, for `fencelock status`. */
  holder?: string;
  /** Whether leases renew themselves until released (default true). */
  autoRenew?: boolean;
  /** How long automatic renewal may keep one lease, in ms (default: no limit). */
  maxHold?: number;
  /** The longest TTL accepted, in ms (default 7 days). */
  maxTtl?: number;
  /** The password of every Redis node whose URL has none. */
  password?: string;
  /** A PEM file of CA certificates for rediss:// nodes. */
  caCert?: string;
}

export interface AcquireOptions {
  /** How long to wait while the lock is held, in ms; false/0: no waiting; true/Infinity: for ever. */
  wait?: number | boolean;
  /** Aborts the wait: the promise rejects with `signal.reason` and nothing is left behind. */
  signal?: AbortSignal;
}

/** What release() found. */
export type ReleaseStatus = "released" | "expired" | "owned-by-other" | "already-released";

/** Proof of holding a lock. */
export declare class Lease {
  private constructor();
  /** The fencing token: larger than every earlier holder's on these keys. Send it with every write. */
  readonly token: bigint;
  /** The keys, as given. */
  readonly keys: readonly string[];
  /**
   * Aborted the moment the lease is lost, or released by `locker.close()` from under its
   * holder (never on release()); reason: a FencelockError with code LOST.
   */
  readonly signal: AbortSignal;
  /** Wall-clock time (ms since the epoch) until which the lease is proven valid. */
  readonly validUntil: number;
  /** Whether the lease was lost (not merely released). */
  readonly lost: boolean;
  /** How long the lease is still proven valid, in ms (0 once lost, expired or released). */
  remaining(): number;
  /** Extends the lease to `ttlMs` from now. Rejects with LOST, UNAVAILABLE or INVALID. */
  extend(ttlMs: number): Promise<this>;
  /** Turns automatic renewal on or off for this lease. */
  setAutoRenew(on: boolean): void;
  /** Releases the lock; never rejects for an expired lease. Rejects only with UNAVAILABLE. */
  release(): Promise<ReleaseStatus>;
}

export declare class Locker {
  /** Throws a FencelockError (CONFIG or INVALID) for bad options. */
  constructor(options: LockerOptions);
  /** The stores, passwords redacted. */
  readonly stores: string[];
  /**
   * Acquires `keys` (all or nothing) for `ttlMs` (default: the locker's TTL), waiting
   * while they are held. Rejects with CONTENDED (wait 0), TIMEOUT, UNAVAILABLE, INVALID,
   * CONFIG, or the signal's reason when aborted.
   */
  acquire(keys: string | readonly string[], ttlMs?: number, options?: AcquireOptions): Promise<Lease>;
  /**
   * Runs `routine` under the lock, renewed while it runs, released at the end. Rejects
   * with LOST when the lease was lost while the routine ran.
   */
  using<T>(
    keys: string | readonly string[],
    ttlMs: number,
    routine: (signal: AbortSignal, lease: Lease) => Promise<T> | T,
  ): Promise<T>;
  using<T>(
    keys: string | readonly string[],
    ttlMs: number,
    options: AcquireOptions,
    routine: (signal: AbortSignal, lease: Lease) => Promise<T> | T,
  ): Promise<T>;
  /** Releases every lease still held (aborting their signals), stops waiting acquires, waits for queued releases. */
  close(): Promise<void>;
}

export interface LockOptions extends Omit<LockerOptions, "stores" | "wait"> {
  /** Default: the FENCELOCK_STORE environment variable (comma-separated). */
  stores?: string | string[];
  /** How long to wait while held, in ms (default 3000, like redlock's retryCount: 15). */
  wait?: number | boolean;
  /** Aborts the wait. */
  signal?: AbortSignal;
  /** Renew the lock until unlock() (default false: it lasts durationMs, as with redlock). */
  autoRenew?: boolean;
}

export type LockResult =
  | {
      error: null;
      code: null;
      token: bigint;
      lease: Lease;
      /** Releases the lock; never throws. */
      unlock(): Promise<ReleaseStatus | `failed: ${string}`>;
    }
  | {
      error: string;
      code: ErrorCode | "ABORTED";
      token: null;
      lease: null;
      /** Does nothing; never throws. */
      unlock(): Promise<"not-locked">;
    };

/** redlock's retryCount (15) × retryDelay (200 ms). */
export declare const DEFAULT_LOCK_WAIT: 3000;

/**
 * The drop-in for a `lock(key, duration)` wrapper around redlock: never rejects.
 * Stores from `options.stores`, else FENCELOCK_STORE; with neither, `code` is CONFIG.
 */
export declare function lock(key: string, durationMs: number, options?: LockOptions): Promise<LockResult>;

/** Closes the lockers that lock() opened. */
export declare function closeAll(): Promise<void>;
