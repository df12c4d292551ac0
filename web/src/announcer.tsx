/**
 * Status messages for everyone: confirmations ("Added “Buy milk”.") are read out by
 * screen readers through a polite ARIA live region; errors are also shown as a toast
 * and announced assertively.
 *
 * Decisions a reader must know:
 * - Confirmations are not shown on screen: the change itself (the task appearing,
 *   ticking, leaving) is the visible feedback, and a pile of toasts covers the list.
 * - The live regions are rendered once, empty, when the app starts, and messages are
 *   added to them later: screen readers only announce changes to a live region that
 *   already existed.
 */

import { type ComponentChildren, createContext } from "preact";
import { useCallback, useContext, useMemo, useRef, useState } from "preact/hooks";

export type Tone = "info" | "success" | "error";

interface Notice {
  id: number;
  text: string;
  tone: Tone;
}

type Announce = (text: string, tone?: Tone) => void;

const AnnounceContext = createContext<Announce>(() => undefined);

const NOTICE_LIFETIME_MS = 6_000;

export function useAnnounce(): Announce {
  return useContext(AnnounceContext);
}

export function AnnouncerProvider({ children }: { children: ComponentChildren }) {
  const [notices, setNotices] = useState<Notice[]>([]);
  const nextId = useRef(1);

  const dismiss = useCallback((id: number) => setNotices((all) => all.filter((notice) => notice.id !== id)), []);

  const announce = useCallback<Announce>(
    (text, tone = "info") => {
      const id = nextId.current++;
      setNotices((all) => [...all.filter((notice) => notice.text !== text), { id, text, tone }].slice(-3));
      setTimeout(() => dismiss(id), tone === "error" ? NOTICE_LIFETIME_MS * 2 : NOTICE_LIFETIME_MS);
    },
    [dismiss],
  );

  const region = (tones: Tone[]) =>
    notices
      .filter((notice) => tones.includes(notice.tone))
      .map((notice) => (
        <div key={notice.id} class={`toast toast-${notice.tone}`}>
          <span>{notice.text}</span>
          <button type="button" class="toast-close" onClick={() => dismiss(notice.id)} aria-label="Dismiss message">
            ×
          </button>
        </div>
      ));

  const value = useMemo(() => announce, [announce]);
  return (
    <AnnounceContext.Provider value={value}>
      {children}
      <div role="status" aria-live="polite" class="visually-hidden">
        {notices
          .filter((notice) => notice.tone !== "error")
          .map((notice) => (
            <p key={notice.id}>{notice.text}</p>
          ))}
      </div>
      <div class="toasts">
        <div role="alert" aria-live="assertive" class="toast-region">
          {region(["error"])}
        </div>
      </div>
    </AnnounceContext.Provider>
  );
}
