//! Node identity and one-time enrollment. A fresh agent generates a key pair, sends a CSR with
//! the join token over server-authenticated TLS, and persists the issued certificate; from then
//! on the identity in the data dir is reused and the agent never enrolls again.
//!
//! Files in the data dir: `node.key` (0600), `node.crt`, `ca.crt`, and `node.json`
//! (`{node_id, node_name}`), written last as the commit marker.

use crate::backoff::Backoff;
use crate::fsutil::atomic_write;
use crate::tls::{SchedulerAddr, TlsError, error_chain};
use cloud_proto::v1::EnrollRequest;
use cloud_proto::v1::agent_service_client::AgentServiceClient;
use rcgen::{CertificateParams, KeyPair};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use tonic::Code;

const KEY_FILE: &str = "node.key";
const CERT_FILE: &str = "node.crt";
const CA_FILE: &str = "ca.crt";
const NODE_FILE: &str = "node.json";

/// Errors of loading or obtaining the node identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the join token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the join token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("corrupt identity file {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("cannot generate the node key or CSR: {0}")]
    KeyGen(#[from] rcgen::Error),
    /// The scheduler answered and said no: fatal, the operator must act.
    #[error("enrollment refused by the scheduler ({code:?}): {message}")]
    Refused { code: Code, message: String },
    #[error("the scheduler's enrollment answer is unusable: {0}")]
    BadResponse(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The persisted identity of this node.
#[derive(Clone)]
pub struct NodeIdentity {
    pub node_id: String,
    pub node_name: String,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.node_id)
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct NodeJson {
    node_id: String,
    node_name: String,
}

/// What enrollment needs.
#[derive(Debug, Clone)]
pub struct EnrollParams {
    pub scheduler: SchedulerAddr,
    pub ca_file: PathBuf,
    pub join_token_file: PathBuf,
    pub data_dir: PathBuf,
    pub name: Option<String>,
    pub hostname: String,
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Loads the identity from `data_dir`, or `None` when the node has not enrolled yet.
pub fn load(data_dir: &Path) -> Result<Option<NodeIdentity>, IdentityError> {
    let node_path = data_dir.join(NODE_FILE);
    let node_json = match std::fs::read(&node_path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(IdentityError::Io {
                path: node_path,
                source,
            });
        }
    };
    let node: NodeJson =
        serde_json::from_slice(&node_json).map_err(|e| IdentityError::Corrupt {
            path: node_path.clone(),
            message: e.to_string(),
        })?;
    if node.node_id.is_empty() {
        return Err(IdentityError::Corrupt {
            path: node_path,
            message: "empty node_id".into(),
        });
    }
    Ok(Some(NodeIdentity {
        node_id: node.node_id,
        node_name: node.node_name,
        cert_pem: read(&data_dir.join(CERT_FILE))?,
        key_pem: read(&data_dir.join(KEY_FILE))?,
        ca_pem: read(&data_dir.join(CA_FILE))?,
    }))
}

fn persist(data_dir: &Path, id: &NodeIdentity) -> Result<(), IdentityError> {
    let write = |name: &str, data: &[u8], mode: u32| {
        let path = data_dir.join(name);
        atomic_write(&path, data, mode).map_err(|source| IdentityError::Io { path, source })
    };
    write(KEY_FILE, &id.key_pem, 0o600)?;
    write(CERT_FILE, &id.cert_pem, 0o644)?;
    write(CA_FILE, &id.ca_pem, 0o644)?;
    let node = NodeJson {
        node_id: id.node_id.clone(),
        node_name: id.node_name.clone(),
    };
    let json = serde_json::to_vec_pretty(&node).map_err(|e| IdentityError::Corrupt {
        path: data_dir.join(NODE_FILE),
        message: e.to_string(),
    })?;
    write(NODE_FILE, &json, 0o644)
}

/// Reads the join token (trimmed). Never logged.
fn read_token(path: &Path) -> Result<String, IdentityError> {
    let raw = std::fs::read_to_string(path).map_err(|source| IdentityError::TokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = raw.trim();
    if token.is_empty() {
        return Err(IdentityError::EmptyToken(path.to_owned()));
    }
    Ok(token.to_owned())
}

/// Whether a gRPC status is a transport/availability problem worth retrying, rather than the
/// scheduler's considered answer.
pub(crate) fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Unknown
            | Code::Internal
    )
}

enum Attempt {
    Done(Box<NodeIdentity>),
    Retry(String),
}

/// Returns the node identity, enrolling first when the data dir has none. Scheduler refusals
/// are fatal; transport errors retry forever with backoff.
pub async fn load_or_enroll(params: &EnrollParams) -> Result<NodeIdentity, IdentityError> {
    std::fs::create_dir_all(&params.data_dir).map_err(|source| IdentityError::Io {
        path: params.data_dir.clone(),
        source,
    })?;
    if let Some(id) = load(&params.data_dir)? {
        tracing::info!(node_id = %id.node_id, node_name = %id.node_name, "using existing node identity");
        return Ok(id);
    }
    let ca_pem = std::fs::read(&params.ca_file).map_err(|source| IdentityError::CaFile {
        path: params.ca_file.clone(),
        source,
    })?;
    let key = KeyPair::generate()?;
    let csr_pem = CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    let key_pem = key.serialize_pem().into_bytes();
    let mut backoff = Backoff::default();
    let mut attempt_no = 0u32;
    loop {
        attempt_no += 1;
        let token = read_token(&params.join_token_file)?;
        tracing::info!(scheduler = %params.scheduler.authority, attempt = attempt_no, "enrolling with the scheduler");
        match attempt(params, &ca_pem, &token, &csr_pem, &key_pem).await? {
            Attempt::Done(id) => {
                // Four fsynced writes: keep them off the async worker threads.
                let dir = params.data_dir.clone();
                let to_save = (*id).clone();
                tokio::task::spawn_blocking(move || persist(&dir, &to_save))
                    .await
                    .map_err(|e| IdentityError::Io {
                        path: params.data_dir.clone(),
                        source: io::Error::other(e),
                    })??;
                tracing::info!(node_id = %id.node_id, node_name = %id.node_name, "enrolled; identity saved");
                return Ok(*id);
            }
            Attempt::Retry(why) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %why, attempt = attempt_no, retry_in_ms = delay.as_millis() as u64, "enrollment failed, will retry");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn attempt(
    params: &EnrollParams,
    ca_pem: &[u8],
    token: &str,
    csr_pem: &str,
    key_pem: &[u8],
) -> Result<Attempt, IdentityError> {
    let channel = match params.scheduler.connect_server_auth(ca_pem).await {
        Ok(c) => c,
        Err(e @ TlsError::Connect { .. }) => return Ok(Attempt::Retry(error_chain(&e))),
        Err(e) => return Err(e.into()),
    };
    let request = EnrollRequest {
        join_token: token.to_owned(),
        csr_pem: csr_pem.to_owned(),
        hostname: params.hostname.clone(),
        name: params.name.clone().unwrap_or_default(),
    };
    let resp = match AgentServiceClient::new(channel).enroll(request).await {
        Ok(r) => r.into_inner(),
        Err(status) if is_transient(status.code()) => {
            return Ok(Attempt::Retry(format!(
                "{:?}: {}",
                status.code(),
                error_chain(&status)
            )));
        }
        Err(status) => {
            return Err(IdentityError::Refused {
                code: status.code(),
                message: status.message().to_owned(),
            });
        }
    };
    if resp.node_id.is_empty() || resp.certificate_pem.is_empty() {
        return Err(IdentityError::BadResponse(
            "missing node_id or certificate".into(),
        ));
    }
    let ca = if resp.ca_pem.is_empty() {
        ca_pem.to_vec()
    } else {
        resp.ca_pem.into_bytes()
    };
    let node_name = if resp.node_name.is_empty() {
        params
            .name
            .clone()
            .unwrap_or_else(|| params.hostname.clone())
    } else {
        resp.node_name
    };
    Ok(Attempt::Done(Box::new(NodeIdentity {
        node_id: resp.node_id,
        node_name,
        cert_pem: resp.certificate_pem.into_bytes(),
        key_pem: key_pem.to_vec(),
        ca_pem: ca,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn persists_and_reloads_identity_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let id = NodeIdentity {
            node_id: "n-1".into(),
            node_name: "alpha".into(),
            cert_pem: b"CERT".to_vec(),
            key_pem: b"KEY".to_vec(),
            ca_pem: b"CA".to_vec(),
        };
        persist(dir.path(), &id).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back.node_id, "n-1");
        assert_eq!(back.node_name, "alpha");
        assert_eq!(back.key_pem, b"KEY");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{back:?}").contains("KEY"), "Debug hides the key");
    }

    #[test]
    fn token_is_trimmed_and_empty_token_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "  abc.def\n").unwrap();
        assert_eq!(read_token(&p).unwrap(), "abc.def");
        std::fs::write(&p, " \n").unwrap();
        assert!(matches!(read_token(&p), Err(IdentityError::EmptyToken(_))));
        assert!(matches!(
            read_token(&dir.path().join("missing")),
            Err(IdentityError::TokenFile { .. })
        ));
    }

    #[test]
    fn classifies_statuses() {
        assert!(is_transient(Code::Unavailable));
        assert!(!is_transient(Code::Unauthenticated));
        assert!(!is_transient(Code::AlreadyExists));
        assert!(!is_transient(Code::PermissionDenied));
    }

    #[test]
    fn corrupt_node_json_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NODE_FILE), "{not json").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(IdentityError::Corrupt { .. })
        ));
    }
}
