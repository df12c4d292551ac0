/**
 * A short record, in IndexedDB, of the refresh tokens this origin's tabs spent lately and
 * the pair that replaced each one. The session consults it while holding the refresh lock.
 *
 * Why, when the pair itself lives in localStorage: localStorage is not consistent across
 * tabs at the moment the lock changes hands. Chromium serves each tab's reads from a
 * per-tab copy that other tabs' writes reach asynchronously, so a tab granted the lock
 * just after another tab rotated the pair can still read the old pair, spend the old
 * refresh token again, and the server revokes the whole session as a stolen token
 * (the journey test hit exactly this). An IndexedDB transaction that completed before
 * the lock was released is visible to every transaction that starts after, so the
 * ledger is the reliable "was it already spent?" check; localStorage stays the shared,
 * synchronous store that the rest of the app and the `storage` events use.
 */

import type { StoredTokens } from "./session.js";

export interface RotationLedger {
  /** The pair that replaced `spentRefreshToken`, if a tab of this origin spent it lately. */
  replacementFor(spentRefreshToken: string): Promise<StoredTokens | null>;
  /** Records a rotation; resolves once any other tab can read it. */
  record(spentRefreshToken: string, replacement: StoredTokens): Promise<void>;
  /** Forgets every rotation (sign-out). */
  clear(): Promise<void>;
}

const DATABASE = "todo.session";
const STORE = "rotations";
/** Rotations older than this are pruned; a tab waits for the lock seconds, not minutes. */
const KEEP_MS = 5 * 60_000;
/** The ledger must never hold a refresh up for long (a blocked or broken IndexedDB). */
const TIMEOUT_MS = 2_000;

interface Rotation {
  replacement: StoredTokens;
  at: number;
}

/** The ledger in this origin's IndexedDB, or null where IndexedDB is missing. */
export function indexedDbLedger(now: () => number = () => Date.now()): RotationLedger | null {
  if (typeof indexedDB === "undefined") return null;
  let database: Promise<IDBDatabase> | null = null;

  const open = () =>
    (database ??= new Promise<IDBDatabase>((resolve, reject) => {
      const request = indexedDB.open(DATABASE, 1);
      request.onupgradeneeded = () => request.result.createObjectStore(STORE);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    }).catch((error: unknown) => {
      database = null; // try again next time
      throw error;
    }));

  /** Runs `work` in one transaction; resolves with what its request returned, once committed. */
  const transaction = async <T>(mode: IDBTransactionMode, work: (store: IDBObjectStore) => IDBRequest<T> | void) => {
    const db = await open();
    return new Promise<T | undefined>((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request ? request.result : undefined);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  };

  const withTimeout = <T>(work: Promise<T>, fallback: T): Promise<T> =>
    Promise.race([work.catch(() => fallback), new Promise<T>((resolve) => setTimeout(() => resolve(fallback), TIMEOUT_MS))]);

  return {
    replacementFor: (spent) =>
      withTimeout(
        transaction<Rotation>("readonly", (store) => store.get(spent)).then((rotation) => rotation?.replacement ?? null),
        null,
      ),
    record: (spent, replacement) =>
      withTimeout(
        transaction("readwrite", (store) => {
          const cursor = store.openCursor();
          cursor.onsuccess = () => {
            const entry = cursor.result;
            if (!entry) return;
            if ((entry.value as Rotation).at < now() - KEEP_MS) entry.delete();
            entry.continue();
          };
          store.put({ replacement, at: now() } satisfies Rotation, spent);
        }).then(() => undefined),
        undefined,
      ),
    clear: () => withTimeout(transaction("readwrite", (store) => store.clear()).then(() => undefined), undefined),
  };
}
