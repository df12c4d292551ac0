//! Authentication of every task RPC: deny by default.
//!
//! [`RequireAuth`] is a tower service wrapped around the generated
//! `TaskServiceServer`, so no task method can be reached without passing it
//! (health and reflection are separate services and stay public). It is a
//! layer rather than a tonic interceptor because an unknown `kid` may need
//! to wait for a key refresh, which is async.
//!
//! For each call it reads `authorization: Bearer` (the shared rules of
//! [`access_token::bearer_token`]), verifies the token locally (EdDSA only,
//! `typ`, `iss`, `aud`, `exp`, `nbf`) and puts the proven
//! [`Identity`] into the request's extensions, where handlers take the owner
//! from and from nowhere else. Every refusal is the same `UNAUTHENTICATED`
//! message; the reason is logged (a security event), never the token.
//!
//! Verified tokens are remembered in a bounded cache keyed by the whole
//! token, so a client's repeated calls skip the signature check. The key is
//! the token itself, not a digest of it: the map's keyed SipHash and one
//! comparison cost a tenth of a SHA-256 of the token, which was 15% of a
//! cached call's instructions, and an exact match needs no argument about
//! collisions.
//! An entry is used only until the token's `exp` (plus leeway) and only
//! while the key set it was verified with is still current.

// The benchmark build leaves the verification code in place, unused.
#![cfg_attr(feature = "bench-no-auth", allow(unused_imports))]

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use access_token::{Identity, VerifyError, bearer_token};
use futures::future::BoxFuture;
use serving::clock::Clock;
use tonic::{Status, body::Body, metadata::MetadataMap, server::NamedService};
use tower::Service;

use crate::{jwks::KeySet, session_events::Revocations};

/// The one message of every refused token.
const UNAUTHENTICATED: &str = "missing or invalid access token";
/// Most verified tokens remembered at once.
const CACHE_CAPACITY: usize = 10_000;

/// Verifies bearer tokens and remembers the verified ones.
#[cfg_attr(feature = "bench-no-auth", allow(dead_code))]
pub struct Authenticator {
    keys: Arc<KeySet>,
    revocations: Arc<Revocations>,
    cache: TokenCache,
    clock: Clock,
    leeway_secs: i64,
}

impl Authenticator {
    pub fn new(
        keys: Arc<KeySet>,
        revocations: Arc<Revocations>,
        clock: Clock,
        leeway_secs: u64,
    ) -> Self {
        #[cfg(feature = "bench-no-auth")]
        tracing::warn!(
            "built with bench-no-auth: access tokens are NOT verified (benchmarks only)"
        );
        Self {
            keys,
            revocations,
            cache: TokenCache::new(CACHE_CAPACITY),
            clock,
            leeway_secs: leeway_secs.min(60).cast_signed(),
        }
    }

    /// Who sent `metadata`, or the status refusing the call.
    #[cfg(not(feature = "bench-no-auth"))]
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Identity, Status> {
        if !self.keys.ready() {
            return Err(Status::unavailable(
                "the service is starting (no token-signing keys yet); retry later",
            ));
        }
        let token = bearer_token(metadata).map_err(|reason| {
            tracing::info!(%reason, "refused authorization metadata");
            Status::unauthenticated(UNAUTHENTICATED)
        })?;
        let now = self.clock.now().timestamp();
        let generation = self.keys.generation();
        if let Some(identity) = self.cache.get(token, generation, now, self.leeway_secs) {
            return self.unless_revoked(identity);
        }
        let verified = match self.keys.verifier().verify(token, now) {
            Err(VerifyError::UnknownKey) => {
                self.keys.refresh_for_unknown_kid().await;
                self.keys.verifier().verify(token, now)
            }
            other => other,
        };
        match verified {
            Ok(identity) => {
                // The generation read before verifying: if the keys changed
                // meanwhile, the entry is simply never used.
                self.cache
                    .insert(token, identity, generation, now, self.leeway_secs);
                self.unless_revoked(identity)
            }
            Err(reason) => {
                tracing::info!(%reason, "refused access token");
                Err(Status::unauthenticated(UNAUTHENTICATED))
            }
        }
    }
}

/// The benchmark build (`--features bench-no-auth`): the token's claims
/// are trusted as they are, unverified, so a benchmark measures the service
/// without the authentication layer. Never built into a release.
#[cfg(feature = "bench-no-auth")]
impl Authenticator {
    /// Who `metadata`'s token says sent it, unchecked.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Identity, Status> {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

        #[derive(serde::Deserialize)]
        struct Claims {
            sub: uuid::Uuid,
            sid: uuid::Uuid,
            exp: i64,
        }
        let refused = || Status::unauthenticated(UNAUTHENTICATED);
        let token = bearer_token(metadata).map_err(|_| refused())?;
        let payload = token.split('.').nth(1).ok_or_else(refused)?;
        let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| refused())?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| refused())?;
        Ok(Identity {
            user_id: claims.sub,
            session_id: claims.sid,
            expires_at: claims.exp,
        })
    }
}

#[cfg_attr(feature = "bench-no-auth", allow(dead_code))]
impl Authenticator {
    /// `identity`, unless its session has ended or its account is gone.
    fn unless_revoked(&self, identity: Identity) -> Result<Identity, Status> {
        if self.revocations.refuses(&identity) {
            tracing::info!(user = %identity.user_id, session = %identity.session_id, "refused a token of an ended session");
            return Err(Status::unauthenticated(UNAUTHENTICATED));
        }
        Ok(identity)
    }
}

/// The cache's entries: a token, the identity it proved and the key
/// generation it was verified with.
#[cfg_attr(feature = "bench-no-auth", allow(dead_code))]
type Entries = HashMap<Box<str>, (Identity, u64), foldhash::fast::RandomState>;

/// A bounded map from token to the identity it proved. Only verified
/// tokens enter it, which the auth-service signed (a few hundred bytes
/// each), so it is bounded in bytes too.
///
/// Every call hashes its whole token here, so the map uses foldhash (seeded
/// per process) rather than SipHash, which cost ~4,000 instructions per
/// call. A caller cannot choose what is stored, only signed tokens, so it
/// cannot pile entries into one bucket.
#[cfg_attr(feature = "bench-no-auth", allow(dead_code))]
struct TokenCache {
    entries: Mutex<Entries>,
    capacity: usize,
}

#[cfg_attr(feature = "bench-no-auth", allow(dead_code))]
impl TokenCache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::default(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, token: &str, generation: u64, now: i64, leeway: i64) -> Option<Identity> {
        let entries = self.lock();
        let (identity, verified_with) = entries.get(token)?;
        live(identity, *verified_with, generation, now, leeway).then_some(*identity)
    }

    fn insert(&self, token: &str, identity: Identity, generation: u64, now: i64, leeway: i64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, (identity, verified_with)| {
                live(identity, *verified_with, generation, now, leeway)
            });
            if entries.len() >= self.capacity {
                // Every entry is live: forget them all. The cost is one
                // signature check per active client, and memory stays bounded.
                entries.clear();
            }
        }
        entries.insert(token.into(), (identity, generation));
    }
}

/// Whether a cached verification still stands: made with the keys of the
/// current `generation`, for a token not yet expired at `now`.
#[cfg_attr(feature = "bench-no-auth", allow(dead_code))]
fn live(identity: &Identity, verified_with: u64, generation: u64, now: i64, leeway: i64) -> bool {
    verified_with == generation && now <= identity.expires_at.saturating_add(leeway)
}

/// The task service behind authentication.
#[derive(Clone)]
pub struct RequireAuth<S> {
    inner: S,
    authenticator: Arc<Authenticator>,
    /// The paths of the service's methods: a call to any other path is
    /// answered `UNIMPLEMENTED` as by any gRPC server, without the cost of
    /// a token check.
    methods: Arc<HashSet<String, foldhash::fast::RandomState>>,
}

impl<S: NamedService> RequireAuth<S> {
    pub fn new(inner: S, authenticator: Arc<Authenticator>) -> Self {
        Self {
            inner,
            authenticator,
            methods: Arc::new(methods_of(S::NAME)),
        }
    }
}

/// The paths (`/package.Service/Method`) of `service`'s methods, from the
/// compiled-in descriptor set, so the list cannot drift from the proto.
fn methods_of(service: &str) -> HashSet<String, foldhash::fast::RandomState> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(todo_proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set is valid");
    set.file
        .iter()
        .flat_map(|file| {
            let package = file.package();
            file.service.iter().map(move |s| (package, s))
        })
        .filter(|(package, s)| format!("{package}.{}", s.name()) == service)
        .flat_map(|(_, s)| {
            s.method
                .iter()
                .map(move |m| format!("/{service}/{}", m.name()))
        })
        .collect()
}

impl<S: NamedService> NamedService for RequireAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for RequireAuth<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was driven to readiness serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !self.methods.contains(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        let authenticator = self.authenticator.clone();
        Box::pin(async move {
            let metadata = MetadataMap::from_headers(request.headers().clone());
            match authenticator.authenticate(&metadata).await {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                    inner.call(request).await
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn identity(expires_at: i64) -> Identity {
        Identity {
            user_id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
            expires_at,
        }
    }

    #[test]
    fn cached_tokens_expire_and_follow_the_key_generation() {
        let cache = TokenCache::new(4);
        let id = identity(100);
        cache.insert("header.payload.signature", id, 7, 50, 0);
        assert_eq!(cache.get("header.payload.signature", 7, 100, 0), Some(id));
        assert_eq!(cache.get("header.payload.signature", 7, 101, 0), None);
        assert_eq!(cache.get("header.payload.signature", 7, 101, 1), Some(id));
        assert_eq!(cache.get("header.payload.signature", 8, 50, 0), None);
        // Only the whole token matches: not a prefix, not another signature.
        assert_eq!(cache.get("header.payload.signatur", 7, 50, 0), None);
        assert_eq!(cache.get("header.payload.signaturf", 7, 50, 0), None);
    }

    #[test]
    fn every_method_of_the_service_is_known() {
        let methods = methods_of("tasks.v1.TaskService");
        assert!(
            methods.contains("/tasks.v1.TaskService/GetTask"),
            "{methods:?}"
        );
        assert!(
            methods.contains("/tasks.v1.TaskService/WatchTasks"),
            "{methods:?}"
        );
        assert!(!methods.contains("/tasks.v1.TaskService/GetTask/extra"));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let cache = TokenCache::new(4);
        for i in 0..100u8 {
            cache.insert(&format!("token-{i}"), identity(1_000), 1, 0, 0);
            assert!(cache.lock().len() <= 4);
        }
    }
}
