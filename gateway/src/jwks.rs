//! `GET /.well-known/jwks.json`: the auth-service's public keys for
//! verifiers that do not speak gRPC (API gateways, other stacks' JWT
//! libraries).
//!
//! The document is fetched with the auth-service's `GetJwks` and passed on
//! as it is, over the gateway's own connection (not the one clients' calls
//! share, whose streams may all be taken). It is cached for
//! `--jwks-cache-ttl`, so a burst of verifiers costs one upstream call; one
//! fetch runs at a time, and the others wait for its result instead of
//! stampeding. When the auth-service cannot be
//! reached, a copy that is too old is still better than nothing (keys are
//! rotated with an overlap), so it is served; with no copy at all the
//! answer is `503`. After a failed fetch the next one waits
//! [`RETRY_AFTER_FAILURE`], so an outage does not make every request queue
//! behind a fetch that is bound to time out.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use todo_proto::auth::v1::{GetJwksRequest, auth_service_client::AuthServiceClient};
use tokio::sync::Mutex;
use tonic::body::Body;

use crate::upstream::Upstream;

/// The path the document is served at (RFC 8414 convention).
pub const PATH: &str = "/.well-known/jwks.json";

/// Longest wait for the auth-service's answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between a failed fetch and the next attempt.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

pub struct Jwks {
    auth: Upstream,
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    last_failure: Option<Instant>,
}

struct Cached {
    document: Bytes,
    fetched: Instant,
}

impl Jwks {
    pub fn new(auth: Upstream, ttl: Duration) -> Self {
        Self {
            auth,
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    /// The HTTP response for `GET /.well-known/jwks.json`.
    pub async fn respond(&self) -> Response<Body> {
        let mut state = self.state.lock().await;
        let fresh = state
            .cached
            .as_ref()
            .is_some_and(|cached| cached.fetched.elapsed() < self.ttl);
        let backing_off = state
            .last_failure
            .is_some_and(|failed| failed.elapsed() < RETRY_AFTER_FAILURE);
        if !fresh && !backing_off {
            match self.fetch().await {
                Ok(document) => {
                    state.cached = Some(Cached {
                        document,
                        fetched: Instant::now(),
                    });
                    state.last_failure = None;
                }
                Err(error) => {
                    let stale_copy = state.cached.is_some();
                    tracing::warn!(%error, stale_copy, "cannot fetch the JWK Set");
                    state.last_failure = Some(Instant::now());
                }
            }
        }
        match state.cached.as_ref() {
            Some(Cached { document, .. }) => self.document_response(document.clone()),
            None => error_response(),
        }
    }

    async fn fetch(&self) -> Result<Bytes, tonic::Status> {
        let mut client = AuthServiceClient::new(self.auth.service());
        let mut request = tonic::Request::new(GetJwksRequest {});
        request.set_timeout(FETCH_TIMEOUT);
        let call = client.get_jwks(request);
        let response = tokio::time::timeout(FETCH_TIMEOUT, call)
            .await
            .map_err(|_| tonic::Status::deadline_exceeded("GetJwks did not answer in time"))??;
        Ok(Bytes::from(response.into_inner().jwks_json))
    }

    fn document_response(&self, document: Bytes) -> Response<Body> {
        let mut response = Response::new(Body::new(http_body_util::Full::new(document)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(cache_control) =
            HeaderValue::try_from(format!("public, max-age={}", self.ttl.as_secs()))
        {
            headers.insert(header::CACHE_CONTROL, cache_control);
        }
        response
    }
}

fn error_response() -> Response<Body> {
    let mut response = Response::new(Body::new(http_body_util::Full::new(Bytes::from_static(
        br#"{"error":"the key set is temporarily unavailable; retry later"}"#,
    ))));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}
