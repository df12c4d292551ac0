//! TLS as tests need it: a certificate authority of their own (rcgen),
//! server and client certificates it signs, written to files for the
//! services' `--tls-*` flags, and clients that trust it: gRPC (tonic),
//! gRPC-Web over HTTP/1.1 or HTTP/2 (hyper-rustls, with ALPN as a browser
//! does), and a bare handshake that returns the certificate served.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::{
    ClientConfig, RootCertStore,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tonic::{
    body::Body,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};
use tower::Layer;

/// A certificate and its private key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// A certificate authority that exists for one test, with a folder for
/// the files it writes.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    folder: tempfile::TempDir,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
            folder: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate as a file, for `--tls-client-ca`, `--upstream-ca`.
    pub fn file(&self) -> PathBuf {
        let path = self.folder.path().join("ca.crt");
        std::fs::write(&path, self.pem()).expect("write the CA certificate");
        path
    }

    fn issue(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A server certificate named `common_name` for `127.0.0.1` and
    /// `localhost`.
    pub fn server(&self, common_name: &str) -> Issued {
        self.issue(
            common_name,
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate named `common_name` (mutual TLS).
    pub fn client(&self, common_name: &str) -> Issued {
        self.issue(common_name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// Writes `issued` as `<name>.crt` and `<name>.key` in the CA's folder
    /// (over what is there), and returns both paths.
    pub fn write(&self, issued: &Issued, name: &str) -> (PathBuf, PathBuf) {
        let cert = self.folder.path().join(format!("{name}.crt"));
        let key = self.folder.path().join(format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).expect("write the certificate");
        std::fs::write(&key, &issued.key_pem).expect("write the key");
        (cert, key)
    }

    /// A rustls client configuration trusting this CA, presenting
    /// `identity` when given.
    pub fn client_config(&self, identity: Option<&Issued>) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.issuer.der().clone())
            .expect("the CA certificate is usable");
        let builder = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots);
        match identity {
            Some(identity) => builder
                .with_client_auth_cert(
                    vec![identity.der.clone()],
                    PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).expect("a key"),
                )
                .expect("a client identity"),
            None => builder.with_no_client_auth(),
        }
    }

    /// A gRPC channel to `https://<address>` trusting this CA (presenting
    /// `identity` when given); the error when it cannot connect.
    pub async fn channel(
        &self,
        address: SocketAddr,
        identity: Option<&Issued>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.pem()));
        if let Some(identity) = identity {
            tls = tls.identity(Identity::from_pem(&identity.cert_pem, &identity.key_pem));
        }
        https_endpoint(address).tls_config(tls)?.connect().await
    }

    /// A gRPC-Web channel over HTTPS trusting this CA: HTTP/1.1, or HTTP/2
    /// (each offered alone by ALPN, so the server must agree to it).
    pub fn grpc_web(&self, http2: bool) -> GrpcWebTls {
        grpc_web_with(self.client_config(None), http2)
    }

    /// The certificate served at `address` to a client trusting this CA,
    /// or the handshake's error.
    pub async fn served_certificate(
        &self,
        address: SocketAddr,
    ) -> std::io::Result<CertificateDer<'static>> {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(self.client_config(None)));
        let stream = tokio::net::TcpStream::connect(address).await?;
        let name = ServerName::IpAddress(address.ip().into());
        let stream = connector.connect(name, stream).await?;
        let (_, connection) = stream.get_ref();
        Ok(connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("a server presents a certificate")
            .clone()
            .into_owned())
    }
}

/// `https://<address>` as a tonic endpoint.
pub fn https_endpoint(address: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("https://{address}")).expect("a valid URL")
}

/// A gRPC-Web client channel over HTTPS.
pub type GrpcWebTls =
    GrpcWebClientService<Client<HttpsConnector<HttpConnector>, GrpcWebCall<Body>>>;

/// A gRPC-Web channel over HTTPS with the rustls `config` (whose ALPN is
/// set here): HTTP/1.1 or HTTP/2.
pub fn grpc_web_with(config: ClientConfig, http2: bool) -> GrpcWebTls {
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only();
    let connector = if http2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    };
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(connector);
    GrpcWebClientLayer::new().layer(client)
}

/// A rustls client configuration that trusts no one: what a client that
/// does not know the test CA has.
pub fn trusting_no_one() -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}
