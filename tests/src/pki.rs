//! Test certificates made on the spot with rcgen: a CA, a server certificate for
//! `localhost`/`127.0.0.1`, and client certificates (valid, expired, from another CA).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

/// A certificate and its key, written as PEM files.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that can sign server and client certificates.
pub struct Ca {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate, PEM.
    pub cert: PathBuf,
    dir: PathBuf,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("cert", &self.cert).finish_non_exhaustive()
    }
}

fn write(path: PathBuf, text: &str) -> PathBuf {
    std::fs::write(&path, text).expect("write PEM");
    path
}

impl Ca {
    /// A new CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        let cert = write(dir.join(format!("{name}.pem")), &cert.pem());
        Ca { params, key, cert, dir: dir.to_owned() }
    }

    fn sign(&self, name: &str, sans: Vec<String>, validity: Option<(i32, i32)>) -> Pem {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        if let Some((from, to)) = validity {
            params.not_before = rcgen::date_time_ymd(from, 1, 1);
            params.not_after = rcgen::date_time_ymd(to, 1, 1);
        }
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("signed");
        Pem {
            cert: write(self.dir.join(format!("{name}.crt")), &cert.pem()),
            key: write(self.dir.join(format!("{name}.key")), &key.serialize_pem()),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self, name: &str) -> Pem {
        self.sign(name, vec!["localhost".into(), "127.0.0.1".into()], None)
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Pem {
        self.sign(name, Vec::new(), None)
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, name: &str) -> Pem {
        self.sign(name, Vec::new(), Some((2020, 2021)))
    }
}
