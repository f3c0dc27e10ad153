//! Test support shared by the agent's integration tests and the `mock-scheduler` example: a
//! throwaway PKI and an in-process mock scheduler for many nodes, speaking the real gRPC
//! contract over real (mutual) TLS.

// Test code: a failed unwrap is a failed test. Not every user needs every helper.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod mock;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use std::net::{IpAddr, Ipv4Addr};

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
pub struct Pki {
    pub ca_pem: String,
    pub issuer: Issuer<'static, KeyPair>,
    pub server_cert: String,
    pub server_key: String,
}

pub fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "mock CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut srv = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    srv.subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    srv.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = srv.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        issuer,
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
    }
}
