//! TLS for broker connections: rustls with the ring provider, built from PEM files.
//!
//! `mqtts://` always means TLS: there is no fallback to plaintext. Trust comes from
//! `ca_file` when given (only those CAs), else from the system's roots. A client
//! certificate and key make it mutual TLS. Files are read when the configuration is
//! validated, so a missing or unreadable file refuses to start with its key named, and
//! again whenever they change on disk (a renewed certificate applies at the next
//! reconnect, without a restart).
//!
//! Errors name files and what is wrong with them, never their contents.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Why a TLS setting cannot be used. Each names the file and the key path it came from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {file}: {error}")]
    Read { file: String, error: String },
    #[error("no PEM certificate in {file}")]
    NoCertificate { file: String },
    #[error("no usable PEM private key in {file} (expected PKCS#8, PKCS#1 or SEC1)")]
    NoKey { file: String },
    #[error("no trusted root certificates found on this system; set `ca_file`")]
    NoRoots,
    #[error("{file}: {error}")]
    Rejected { file: String, error: String },
}

impl TlsError {
    /// The file this error is about, if any.
    pub fn file(&self) -> Option<&str> {
        match self {
            TlsError::Read { file, .. }
            | TlsError::NoCertificate { file }
            | TlsError::NoKey { file }
            | TlsError::Rejected { file, .. } => Some(file),
            TlsError::NoRoots => None,
        }
    }
}

/// Where a connection's TLS material comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// PEM CA certificates to trust; `None` trusts the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and private key, for mutual TLS.
    pub client_auth: Option<(PathBuf, PathBuf)>,
}

/// A ready rustls configuration and the file times it was built from.
#[derive(Clone)]
pub struct TlsConfig {
    pub files: TlsFiles,
    pub rustls: Arc<rustls::ClientConfig>,
    /// Modification time and size of each file when it was read: a change means a reload.
    stamps: Vec<Option<(SystemTime, u64)>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("files", &self.files).finish_non_exhaustive()
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files
    }
}
impl Eq for TlsConfig {}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read { file: path.display().to_string(), error: e.to_string() })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { file: path.display().to_string() });
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    // The parse error could quote the file; say only that no key was found.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey { file: path.display().to_string() })
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        self.ca_file
            .iter()
            .map(PathBuf::as_path)
            .chain(self.client_auth.iter().flat_map(|(c, k)| [c.as_path(), k.as_path()]))
    }

    /// Reads the files and builds the client configuration.
    pub fn load(&self) -> Result<TlsConfig, TlsError> {
        let stamps = self.paths().map(stamp).collect();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(file) => {
                for cert in certificates(file)? {
                    roots.add(cert).map_err(|e| TlsError::Rejected {
                        file: file.display().to_string(),
                        error: format!("not a usable CA certificate: {e}"),
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(TlsError::NoRoots);
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected { file: "(TLS provider)".into(), error: e.to_string() })?
            .with_root_certificates(roots);
        let config = match &self.client_auth {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                let key_der = private_key(key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| TlsError::Rejected {
                    file: key.display().to_string(),
                    error: format!("key does not fit the certificate: {e}"),
                })?
            }
        };
        Ok(TlsConfig { files: self.clone(), rustls: Arc::new(config), stamps })
    }
}

impl TlsConfig {
    /// A new configuration if any file changed since this one was built and the new files
    /// are usable; `None` if nothing changed. A broken replacement is logged and the
    /// current configuration kept.
    pub fn reloaded(&self) -> Option<TlsConfig> {
        let now: Vec<_> = self.files.paths().map(stamp).collect();
        if now == self.stamps {
            return None;
        }
        match self.files.load() {
            Ok(fresh) => {
                tracing::info!(files = ?self.files, "TLS files changed; the next connection uses them.");
                Some(fresh)
            }
            Err(error) => {
                tracing::error!(%error, "TLS files changed but cannot be used; keeping the previous ones.");
                None
            }
        }
    }
}

/// A server's certificate chain and key (the console's HTTPS), read from PEM files now and
/// again when they change on disk (a renewed certificate applies to the next connection,
/// without a restart).
#[derive(Clone)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    pub rustls: Arc<rustls::ServerConfig>,
    stamps: [Option<(SystemTime, u64)>; 2],
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("cert", &self.cert).field("key", &self.key).finish_non_exhaustive()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.cert, &self.key) == (&other.cert, &other.key)
    }
}
impl Eq for ServerTls {}

impl ServerTls {
    /// Reads `cert` (a PEM chain) and `key`, and builds the server configuration.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let stamps = [stamp(cert), stamp(key)];
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected { file: "(TLS provider)".into(), error: e.to_string() })?
            .with_no_client_auth()
            .with_single_cert(certificates(cert)?, private_key(key)?)
            .map_err(|e| TlsError::Rejected {
                file: key.display().to_string(),
                error: format!("key does not fit the certificate: {e}"),
            })?;
        Ok(ServerTls { cert: cert.to_owned(), key: key.to_owned(), rustls: Arc::new(config), stamps })
    }

    /// A new configuration if a file changed and the new ones are usable; `None` otherwise
    /// (a broken replacement is logged, and the current one kept).
    pub fn reloaded(&self) -> Option<ServerTls> {
        if [stamp(&self.cert), stamp(&self.key)] == self.stamps {
            return None;
        }
        match ServerTls::load(&self.cert, &self.key) {
            Ok(fresh) => {
                tracing::info!(cert = %self.cert.display(), "Certificate files changed; new connections use them.");
                Some(fresh)
            }
            Err(error) => {
                tracing::error!(%error, "Certificate files changed but cannot be used; keeping the previous ones.");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let e = TlsFiles { ca_file: Some(missing.clone()), client_auth: None }.load().expect_err("missing");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem at all").expect("write");
        let e = TlsFiles { ca_file: Some(empty), client_auth: None }.load().expect_err("empty");
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    }

    #[test]
    fn a_key_file_without_a_key_does_not_show_its_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key.pem");
        std::fs::write(&key, "SECRET-MATERIAL").expect("write");
        let e = private_key(&key).expect_err("no key");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        assert!(e.to_string().contains("key.pem"), "{e}");
    }
}
