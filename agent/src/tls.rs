//! TLS channels to the scheduler: server-authenticated for enrollment, mutual TLS for the
//! session. The TLS name checked against the scheduler certificate is the HOST part of
//! `--scheduler HOST:PORT` (a DNS name or an IP address).

use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Errors building a channel to the scheduler.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid scheduler address {0:?}: expected HOST:PORT")]
    BadAddress(String),
    #[error("invalid scheduler endpoint: {0}")]
    Endpoint(#[source] tonic::transport::Error),
    #[error("cannot connect to the scheduler at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A parsed `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerAddr {
    /// Host without IPv6 brackets: the TLS server name.
    pub host: String,
    pub port: u16,
    /// `host:port` as given (IPv6 keeps its brackets).
    pub authority: String,
}

impl SchedulerAddr {
    pub fn parse(s: &str) -> Result<Self, TlsError> {
        let bad = || TlsError::BadAddress(s.to_owned());
        let s = s.trim();
        let s_no_scheme = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s)
            .trim_end_matches('/');
        let (host, port) = s_no_scheme.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: s_no_scheme.to_owned(),
        })
    }

    fn endpoint(&self, tls: ClientTlsConfig) -> Result<Endpoint, TlsError> {
        Endpoint::from_shared(format!("https://{}", self.authority))
            .map_err(TlsError::Endpoint)?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .tls_config(tls.domain_name(self.host.clone()))
            .map_err(TlsError::Endpoint)
    }

    /// Connects with TLS that authenticates the server only (enrollment).
    pub async fn connect_server_auth(&self, ca_pem: &[u8]) -> Result<Channel, TlsError> {
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        let endpoint = self.endpoint(tls)?.timeout(Duration::from_secs(30));
        endpoint
            .connect()
            .await
            .map_err(|source| TlsError::Connect {
                addr: self.authority.clone(),
                source,
            })
    }

    /// Connects with mutual TLS (the session): `cert_pem`/`key_pem` are the node identity.
    pub async fn connect_mtls(
        &self,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Channel, TlsError> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(cert_pem, key_pem));
        self.endpoint(tls)?
            .connect()
            .await
            .map_err(|source| TlsError::Connect {
                addr: self.authority.clone(),
                source,
            })
    }
}

/// Renders an error with its whole cause chain (`a: b: c`), skipping repeated messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scheduler_addresses() {
        let a = SchedulerAddr::parse("sched.example:7443").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("sched.example", 7443));
        let a = SchedulerAddr::parse("127.0.0.1:9").unwrap();
        assert_eq!(a.host, "127.0.0.1");
        let a = SchedulerAddr::parse("[::1]:7443").unwrap();
        assert_eq!(
            (a.host.as_str(), a.authority.as_str()),
            ("::1", "[::1]:7443")
        );
        let a = SchedulerAddr::parse("https://h:1/").unwrap();
        assert_eq!(a.authority, "h:1");
        assert!(SchedulerAddr::parse("nohost").is_err());
        assert!(SchedulerAddr::parse(":80").is_err());
        assert!(SchedulerAddr::parse("h:notaport").is_err());
    }
}
