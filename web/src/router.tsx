/**
 * Client-side routing over the History API: the current path, `navigate()`, and a
 * `<Link>` that navigates without a reload.
 *
 * Decision a reader must know: every route is one segment under the origin root
 * (/sign-in, /account, /verify-email...), because the gateway answers unknown GET
 * paths with index.html and index.html loads its assets by relative URL: a deeper
 * path (/a/b) would make `app.js` resolve to /a/app.js.
 */

import type { AnchorHTMLAttributes, ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";

export type RoutePath =
  | "/"
  | "/sign-in"
  | "/sign-up"
  | "/forgot-password"
  | "/reset-password"
  | "/verify-email"
  | "/account";

const NAVIGATED = "todo:navigated";

/** Goes to `path` (with an optional query string) without reloading the page. */
export function navigate(path: string, { replace = false } = {}): void {
  if (path === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  window.dispatchEvent(new Event(NAVIGATED));
}

/** The current URL (path and query), re-rendering the caller when it changes. */
export function useLocation(): URL {
  const [url, setUrl] = useState(() => new URL(location.href));
  useEffect(() => {
    const update = () => setUrl(new URL(location.href));
    window.addEventListener("popstate", update);
    window.addEventListener(NAVIGATED, update);
    return () => {
      window.removeEventListener("popstate", update);
      window.removeEventListener(NAVIGATED, update);
    };
  }, []);
  return url;
}

type LinkProps = Omit<AnchorHTMLAttributes<HTMLAnchorElement>, "href"> & {
  href: RoutePath | `${RoutePath}?${string}`;
  children: ComponentChildren;
};

/** An ordinary link (open in a new tab works) that navigates in place on a plain click. */
export function Link({ href, children, ...rest }: LinkProps) {
  const onClick = (event: MouseEvent) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
      return;
    }
    event.preventDefault();
    navigate(href);
  };
  return (
    <a {...rest} href={href} onClick={onClick}>
      {children}
    </a>
  );
}
