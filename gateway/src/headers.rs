//! What the gateway changes in the metadata of a call, and why.
//!
//! Metadata (`authorization`, `grpc-timeout`, custom keys) passes through
//! untouched: the gateway holds no business logic. Four things change:
//!
//! - `x-request-id`: a client's id is kept when it is a short token of
//!   `[A-Za-z0-9-_.]` (so it cannot forge log lines), otherwise a UUID is
//!   generated. The same id goes upstream and back in the response, so one
//!   call can be followed across all three processes' logs.
//! - `x-forwarded-for` is *replaced* by the address of the peer that opened
//!   the connection. The auth-service believes this header only from the
//!   gateway, and throttles guessing per client address; if the gateway
//!   passed on what a client wrote, anyone could rotate fake addresses past
//!   the throttle. `forwarded` and `x-real-ip` are dropped for the same reason.
//! - Connection-level headers of the client's hop (`connection`, `host`,
//!   `te`, `content-length`, ...) are dropped: the upstream hop is a new
//!   HTTP/2 stream, where they are meaningless or even forbidden. `te:
//!   trailers` is set, as gRPC requires.
//! - Nothing is ever read from the URL's query string: only the path is
//!   forwarded, so a token in a link can never become metadata.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue, header};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Keeps the client's `x-request-id` if it is a valid short token, else
/// sets a fresh UUID; returns the id in force.
pub fn assign_request_id(headers: &mut HeaderMap) -> HeaderValue {
    let mut values = headers.get_all(&X_REQUEST_ID).iter();
    let client_id = match (values.next(), values.next()) {
        (Some(value), None) if serving::telemetry::is_valid_request_id(value.as_bytes()) => {
            Some(value.clone())
        }
        _ => None,
    };
    let id = client_id.unwrap_or_else(|| {
        HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
            .expect("a UUID is a valid header value")
    });
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// Rewrites a client's request headers for the upstream hop: drops the
/// client hop's connection headers and any forwarding claims, and records
/// `peer` (the connection's real address) as the only `x-forwarded-for`.
pub fn prepare_for_upstream(headers: &mut HeaderMap, peer: Option<IpAddr>) {
    // Headers named in `connection` belong to the client's hop only.
    let named_by_connection: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named_by_connection {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HOST,
        header::CONTENT_LENGTH,
        header::TE,
        X_FORWARDED_FOR,
        X_REAL_IP,
        FORWARDED,
    ] {
        headers.remove(name);
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if let Some(peer) = peer {
        let peer = peer.to_canonical().to_string();
        headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::try_from(peer).expect("an IP address is a valid header value"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_client_request_id_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("trace-42_a.b"));
        assert_eq!(assign_request_id(&mut headers), "trace-42_a.b");
    }

    #[test]
    fn an_invalid_or_repeated_request_id_is_replaced() {
        for bad in ["", "has space", "new\u{0}line", &"x".repeat(65)] {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_str(bad) {
                headers.insert(X_REQUEST_ID, value);
            }
            let id = assign_request_id(&mut headers);
            assert!(
                uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok(),
                "{bad:?} -> {id:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.append(X_REQUEST_ID, HeaderValue::from_static("a"));
        headers.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        let id = assign_request_id(&mut headers);
        assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
        assert_eq!(headers.get_all(X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn forwarding_claims_are_replaced_by_the_peer() {
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        headers.insert(FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        headers.insert(X_REAL_IP, HeaderValue::from_static("1.2.3.4"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        prepare_for_upstream(&mut headers, Some("::ffff:10.0.0.7".parse().unwrap()));
        let forwarded: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(forwarded, ["10.0.0.7"]);
        assert!(headers.get(FORWARDED).is_none());
        assert!(headers.get(X_REAL_IP).is_none());
        assert_eq!(headers.get(header::AUTHORIZATION).unwrap(), "Bearer t");
    }

    #[test]
    fn hop_headers_are_dropped_and_te_is_trailers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        headers.insert(
            HeaderName::from_static("x-hop"),
            HeaderValue::from_static("1"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("gateway:8080"));
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        headers.insert(
            HeaderName::from_static("grpc-timeout"),
            HeaderValue::from_static("5S"),
        );
        prepare_for_upstream(&mut headers, None);
        assert!(headers.get("x-hop").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get(header::HOST).is_none());
        assert!(headers.get(header::CONTENT_LENGTH).is_none());
        assert_eq!(headers.get(header::TE).unwrap(), "trailers");
        assert_eq!(headers.get("grpc-timeout").unwrap(), "5S");
    }
}
