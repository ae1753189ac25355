//! TLS client configuration (rustls, ring) for `turns:` and `wss://`.
//!
//! Trust: the system's CA bundle, plus the certificates of `--ca-file`. A certificate in that
//! file is trusted as a CA *and* pinned: a server presenting exactly that certificate is accepted
//! even when it is a self-signed CA certificate used as a server certificate (what
//! `openssl req -x509` makes), which WebPKI alone refuses. The handshake signature is always
//! verified, so the server must hold the pinned certificate's private key.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::PeerError;

/// Debian's (and most distributions') CA bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// Builds the client configuration: system roots (when present) and the certificates of `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, PeerError> {
    let mut roots = RootCertStore::empty();
    for bundle in SYSTEM_BUNDLES {
        if let Ok(iter) = CertificateDer::pem_file_iter(bundle) {
            let certs: Vec<_> = iter.filter_map(Result::ok).collect();
            roots.add_parsable_certificates(certs);
            break;
        }
    }
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| PeerError::Config(format!("reading {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(PeerError::Config(format!(
                "{} holds no CERTIFICATE",
                path.display()
            )));
        }
        for c in certs {
            // A leaf certificate is not a valid trust anchor for webpki; pinning covers it.
            let _ = roots.add(c.clone());
            pinned.push(c);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| PeerError::Config(format!("no usable trust anchors: {e}")))?;
    let verifier = Arc::new(PinningVerifier {
        pinned,
        webpki,
        provider: provider.clone(),
    });
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PeerError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// WebPKI verification, or an exact match with a pinned certificate.
#[derive(Debug)]
struct PinningVerifier {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
