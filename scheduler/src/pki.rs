//! The cluster's own CA: created on first start, signs the scheduler's TLS certificate and
//! the node certificates agents receive at enrollment. A node's identity is the UUID in the
//! common name of its certificate.

use crate::files::{write_private, write_public};
use cloud_api::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Organisation set on every node certificate.
pub const NODE_ORG: &str = "thecloud-node";
const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate error: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("invalid certificate signing request: {0}")]
    BadCsr(String),
}

/// The CA and the scheduler's server identity.
pub struct Pki {
    ca_cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    server_cert_pem: String,
    server_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // a positive DER integer
    SerialNumber::from_slice(&bytes)
}

impl Pki {
    /// Loads the CA from `dir` (creating it on first start) and issues a fresh server
    /// certificate for localhost, this host's name and `extra_sans`.
    pub fn load_or_create(dir: &Path, extra_sans: &[String]) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let (ca_cert_pem, issuer) = if ca_cert_path.exists() && ca_key_path.exists() {
            let cert = std::fs::read_to_string(&ca_cert_path).map_err(io(&ca_cert_path))?;
            let key_pem = std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
            let key = KeyPair::from_pem(&key_pem)?;
            let issuer = Issuer::from_ca_cert_pem(&cert, key)?;
            (cert, issuer)
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "The Cloud CA");
            dn.push(DnType::OrganizationName, "thecloud");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.serial_number = Some(random_serial());
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::minutes(5);
            params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
            let cert = params.self_signed(&key)?;
            write_private(&ca_key_path, key.serialize_pem().as_bytes())
                .map_err(io(&ca_key_path))?;
            write_public(&ca_cert_path, cert.pem().as_bytes()).map_err(io(&ca_cert_path))?;
            (cert.pem(), Issuer::new(params, key))
        };

        // The server certificate is reissued at every start, so new SANs apply at once.
        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "thecloud-scheduler");
        params.distinguished_name = dn;
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if let Ok(h) = nix_hostname() {
            names.push(h);
        }
        names.extend(extra_sans.iter().cloned());
        names.sort();
        names.dedup();
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
        let server_cert = params.signed_by(&server_key, &issuer)?;
        let server_cert_path = dir.join("server.crt");
        write_public(&server_cert_path, server_cert.pem().as_bytes())
            .map_err(io(&server_cert_path))?;

        Ok(Self {
            ca_cert_pem,
            issuer,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    pub fn server_cert_pem(&self) -> &str {
        &self.server_cert_pem
    }

    pub fn server_key_pem(&self) -> &str {
        &self.server_key_pem
    }

    /// Issues a client certificate for `node` from the agent's CSR. Only the CSR's public key
    /// is used: subject, SANs and usages are the scheduler's. Returns (PEM, serial hex).
    pub fn sign_node_csr(&self, csr_pem: &str, node: NodeId) -> Result<(String, String), PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node.to_string());
        dn.push(DnType::OrganizationName, NODE_ORG);
        let serial = random_serial();
        let serial_hex = hex::encode(serial.as_ref());
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(serial);
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
        csr.params = params;
        let cert = csr.signed_by(&self.issuer)?;
        Ok((cert.pem(), serial_hex))
    }
}

/// The node id in a node certificate (DER), if it is one.
pub fn node_id_from_cert(der: &[u8]) -> Option<NodeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let org = subject.iter_organization().next()?.as_str().ok()?;
    if org != NODE_ORG {
        return None;
    }
    let cn = subject.iter_common_name().next()?.as_str().ok()?;
    cn.parse().ok()
}

fn nix_hostname() -> std::io::Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(h.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reloads_the_same_ca_and_signs_node_csrs() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &["cloud.example.com".into()]).unwrap();
        let again = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(pki.ca_pem(), again.ca_pem(), "the CA survives restarts");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("ca.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);

        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(Vec::<String>::new()).unwrap();
        req.distinguished_name
            .push(DnType::CommonName, "evil-wants-another-id");
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let node = NodeId::new();
        let (pem, serial) = again.sign_node_csr(&csr, node).unwrap();
        assert!(!serial.is_empty());
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents;
        assert_eq!(
            node_id_from_cert(&der),
            Some(node),
            "the scheduler picks the subject"
        );
    }

    #[test]
    fn rejects_garbage_csrs_and_non_node_certs() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert!(matches!(
            pki.sign_node_csr("not a csr", NodeId::new()),
            Err(PkiError::BadCsr(_))
        ));
        let der = x509_parser::pem::parse_x509_pem(pki.server_cert_pem().as_bytes())
            .unwrap()
            .1
            .contents;
        assert_eq!(node_id_from_cert(&der), None);
    }
}
