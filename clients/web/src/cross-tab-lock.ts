/**
 * A mutual-exclusion lock shared by every tab of the origin, used to make token
 * refreshes single-flight across tabs (see session.ts for why that matters).
 *
 * Decisions a reader must know:
 * - The Web Locks API (`navigator.locks`) is the real implementation: the browser
 *   grants the named lock to one tab at a time and frees it when that tab closes.
 * - Where it is missing, a lease in localStorage stands in: write a lease, wait for
 *   concurrent writers to land, and own the lock if the lease is still ours. That is
 *   best effort (localStorage has no compare-and-set), and the lease expires so a
 *   tab that dies holding it cannot block the others for long.
 */

export interface CrossTabLock {
  /** Runs `task` while holding the lock; other tabs' tasks wait until it settles. */
  withLock<T>(task: () => Promise<T>): Promise<T>;
}

/** The part of the Web Locks API (`navigator.locks`) this module uses. */
export interface LockManagerLike {
  request<T>(name: string, callback: () => Promise<T>): Promise<T>;
}

/** The part of `Storage` (localStorage) the session and the lease lock use. */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** A lock granted by the browser's Web Locks API. */
export function webLocksLock(locks: LockManagerLike, name: string): CrossTabLock {
  return {
    withLock: (task) => locks.request(name, task),
  };
}

export interface StorageLeaseOptions {
  /** How long a lease lasts if its holder never releases it. */
  leaseMs?: number;
  /** How long to wait after writing a lease before checking that it is still ours. */
  settleMs?: number;
  /** How often to look again while another tab holds the lease. */
  pollMs?: number;
  now?: () => number;
}

interface Lease {
  owner: string;
  expiresAt: number;
}

/** Fallback for browsers without Web Locks: a lease record in shared storage. */
export function storageLeaseLock(
  storage: KeyValueStorage,
  key: string,
  { leaseMs = 20_000, settleMs = 60, pollMs = 100, now = () => Date.now() }: StorageLeaseOptions = {},
): CrossTabLock {
  const owner = randomId();
  // Tasks of this tab queue here, so only one of them competes for the lease.
  let tail: Promise<unknown> = Promise.resolve();

  const readLease = (): Lease | null => {
    try {
      const lease = JSON.parse(storage.getItem(key) ?? "null") as Lease | null;
      return lease && typeof lease.owner === "string" && typeof lease.expiresAt === "number" ? lease : null;
    } catch {
      return null;
    }
  };

  const acquire = async (): Promise<void> => {
    for (;;) {
      const lease = readLease();
      if (lease === null || lease.expiresAt <= now()) {
        storage.setItem(key, JSON.stringify({ owner, expiresAt: now() + leaseMs } satisfies Lease));
        // Another tab may have written its lease at the same moment; the last write wins.
        await sleep(settleMs);
        if (readLease()?.owner === owner) return;
      }
      await sleep(pollMs);
    }
  };

  const release = () => {
    if (readLease()?.owner === owner) storage.removeItem(key);
  };

  return {
    withLock<T>(task: () => Promise<T>): Promise<T> {
      const run = async () => {
        await acquire();
        try {
          return await task();
        } finally {
          release();
        }
      };
      const result = tail.then(run, run);
      tail = result.catch(() => undefined);
      return result;
    },
  };
}

/** A lock for one tab only, for environments with neither Web Locks nor storage. */
export function inTabLock(): CrossTabLock {
  let tail: Promise<unknown> = Promise.resolve();
  return {
    withLock<T>(task: () => Promise<T>): Promise<T> {
      const result = tail.then(task, task);
      tail = result.catch(() => undefined);
      return result;
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function randomId(): string {
  return typeof crypto !== "undefined" && "randomUUID" in crypto
    ? crypto.randomUUID()
    : `${Date.now()}-${Math.random().toString(36).slice(2)}`;
}
