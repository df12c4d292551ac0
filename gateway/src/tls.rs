//! TLS for clients of the gateway (`--tls-cert`, `--tls-key`), with the
//! certificate reloaded from disk when it changes, so a renewal (by
//! cert-manager, say, which rewrites the mounted Secret) is served without
//! a restart.
//!
//! The certificate in use sits behind a lock that every handshake reads
//! ([`Reloading`] is rustls's certificate resolver). A background task looks
//! at the two files every [`RELOAD_CHECK`]; when either changed, it loads
//! the pair and swaps it in. A pair that does not load (a half-written
//! renewal, a key that does not match) is logged and the old certificate
//! stays: a bad file never takes the gateway down. ALPN offers HTTP/2 and
//! HTTP/1.1, so browsers (gRPC-Web, Connect, the app) and gRPC clients
//! share the port as without TLS.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    ServerConfig,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use serving::CancellationToken;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} holds no usable {what}")]
    Pem { path: String, what: &'static str },
    #[error("the certificate and key do not fit together: {0}")]
    Pair(rustls::Error),
}

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    fn load(&self) -> Result<CertifiedKey, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let pem_error = |path: &Path, what| TlsError::Pem {
            path: path.display().to_string(),
            what,
        };
        let chain = CertificateDer::pem_slice_iter(&read(&self.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|chain| !chain.is_empty())
            .ok_or_else(|| pem_error(&self.cert, "certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|_| pem_error(&self.key, "private key"))?;
        CertifiedKey::from_der(chain, key, &aws_lc_rs::default_provider()).map_err(TlsError::Pair)
    }

    /// When either file last changed (`None` if one cannot be read).
    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let modified = |path: &Path| std::fs::metadata(path).and_then(|meta| meta.modified());
        Some((modified(&self.cert).ok()?, modified(&self.key).ok()?))
    }
}

/// The certificate every handshake gets: the last pair that loaded.
#[derive(Debug)]
pub struct Reloading {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// A TLS acceptor for `files`, which must load now, and its reload task,
/// which runs until `shutdown`.
pub fn acceptor(files: Files, shutdown: CancellationToken) -> Result<TlsAcceptor, TlsError> {
    let resolver = Arc::new(Reloading {
        current: RwLock::new(Arc::new(files.load()?)),
    });
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Pair)?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(reload(files, resolver, shutdown));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn reload(files: Files, resolver: Arc<Reloading>, shutdown: CancellationToken) {
    let mut seen = files.modified();
    loop {
        tokio::select! {
            () = tokio::time::sleep(RELOAD_CHECK) => {}
            () = shutdown.cancelled() => return,
        }
        let modified = files.modified();
        if modified.is_none() || modified == seen {
            continue;
        }
        match files.load() {
            Ok(key) => {
                *resolver
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
                seen = modified;
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            // Perhaps half written: tried again at the next look.
            Err(error) => {
                tracing::warn!(%error, "cannot reload the TLS certificate; keeping the old one");
            }
        }
    }
}
