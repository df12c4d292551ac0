//! Which web pages may call the gateway from a browser (CORS).
//!
//! A gRPC-Web call from a page on another origin is a "non-simple" request
//! (POST with `content-type: application/grpc-web*` and custom headers), so
//! the browser first sends a preflight `OPTIONS`. This layer answers it and
//! marks real responses readable, but only for origins on the list:
//!
//! - the origins given with `--allowed-origin`, compared exactly; or, when
//!   none is given, `http://localhost:<any port>` and
//!   `http://127.0.0.1:<any port>`, so local development needs no flags;
//! - an origin not allowed gets no `Access-Control-Allow-Origin` at all, so
//!   the browser refuses to hand the response to the page;
//! - credentials (cookies) are never allowed: tokens travel in the
//!   `authorization` header, which the page sets itself. So `*` with
//!   credentials cannot happen, and the origin is never mirrored blindly;
//! - only `POST` (every gRPC-Web call) and `OPTIONS` (the preflight);
//! - the request headers gRPC-Web clients send, and the response headers
//!   that carry a call's status, which a page could not read otherwise.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, request::Parts};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::Error;

/// Request headers a gRPC-Web or Connect client may send.
const ALLOWED_HEADERS: [&str; 8] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "x-request-id",
    "connect-protocol-version",
    "connect-timeout-ms",
];

/// Response headers a page may read: the call's status travels in them
/// when the upstream answers with a trailers-only response.
const EXPOSED_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
];

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// The CORS layer for `allowed_origins` (the default list when empty).
pub fn layer(allowed_origins: &[String]) -> Result<CorsLayer, Error> {
    let allow_origin = if allowed_origins.is_empty() {
        AllowOrigin::predicate(|origin: &HeaderValue, _: &Parts| {
            origin.to_str().is_ok_and(is_local_development_origin)
        })
    } else {
        let origins = allowed_origins
            .iter()
            .map(|origin| parse_origin(origin))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(origins)
    };
    Ok(CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(PREFLIGHT_MAX_AGE))
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing more.
/// `*` and `null` are refused: they would open the gateway to every page.
fn parse_origin(origin: &str) -> Result<HeaderValue, Error> {
    let invalid = || Error::InvalidOrigin(origin.to_owned());
    let (scheme, rest) = origin.split_once("://").ok_or_else(invalid)?;
    let well_formed = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '*', '@', ' '])
        && origin.parse::<http::Uri>().is_ok();
    if !well_formed {
        return Err(invalid());
    }
    HeaderValue::from_str(origin).map_err(|_| invalid())
}

/// `http://localhost` or `http://127.0.0.1`, with or without a port.
fn is_local_development_origin(origin: &str) -> bool {
    let Some(host_and_port) = origin.strip_prefix("http://") else {
        return false;
    };
    let (host, port) = match host_and_port.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_and_port, None),
    };
    let port_ok = port.is_none_or(|port| {
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
    });
    matches!(host, "localhost" | "127.0.0.1") && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_development_origins_are_localhost_on_any_port() {
        for origin in [
            "http://localhost:3000",
            "http://127.0.0.1:5173",
            "http://localhost",
        ] {
            assert!(is_local_development_origin(origin), "{origin}");
        }
        for origin in [
            "https://localhost:3000",
            "http://localhost.evil.example",
            "http://localhost:3000.evil.example",
            "http://127.0.0.1.evil.example:80",
            "http://evil.example",
            "http://localhost:",
            "null",
        ] {
            assert!(!is_local_development_origin(origin), "{origin}");
        }
    }

    #[test]
    fn configured_origins_must_be_exact_origins() {
        assert!(parse_origin("https://app.example.com").is_ok());
        assert!(parse_origin("http://127.0.0.1:4000").is_ok());
        for origin in [
            "*",
            "null",
            "https://app.example.com/",
            "app.example.com",
            "ftp://x.example",
            "https://*.example.com",
        ] {
            assert!(parse_origin(origin).is_err(), "{origin}");
        }
    }
}
