//! The web app, served from `--web-root` on the same origin as the API, so
//! `cargo run` gives a newcomer a working product at
//! `http://localhost:8080/` and the app needs no CORS at all.
//!
//! Files are served as they are on disk (tower-http's `ServeDir`, with
//! `Last-Modified` revalidation); any other GET path that names no file is
//! answered with `index.html`, so the app's own routes (`/verify-email`,
//! `/reset-password` from the links in mails) load the app. API calls never
//! get here: they are POSTs. Every answer carries the app's security
//! headers: the Content-Security-Policy of its `index.html` (plus
//! `frame-ancestors 'none'`, which a meta tag cannot set), `nosniff`, no
//! referrer, and `no-cache` (the app asks for its assets by content hash,
//! so revalidating costs one small request).

use std::{convert::Infallible, path::Path};

use http::{HeaderName, HeaderValue, Request, Response, header};
use tonic::body::Body;
use tower::{ServiceExt, util::BoxCloneService};
use tower_http::services::{ServeDir, ServeFile};

/// The headers of every answer of the app: the policy of its `index.html`
/// with the frame ancestors, and the rest of the usual hardening.
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CACHE_CONTROL, "no-cache"),
];

/// The static files of the web app.
pub type WebApp = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

/// The app in `root` (which must hold an `index.html`).
pub fn app(root: &Path) -> WebApp {
    let files = ServeDir::new(root)
        .append_index_html_on_directories(true)
        .fallback(ServeFile::new(root.join("index.html")));
    BoxCloneService::new(ServiceExt::<Request<Body>>::map_response(
        files,
        |mut response| {
            let headers = response.headers_mut();
            for (name, value) in &SECURITY_HEADERS {
                headers.insert(name.clone(), HeaderValue::from_static(value));
            }
            response.map(Body::new)
        },
    ))
}

/// Answers a GET or HEAD with the app.
pub async fn respond(app: WebApp, request: Request<Body>) -> Response<Body> {
    match app.oneshot(request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    }
}
