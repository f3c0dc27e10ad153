//! Answers `StreamRequest{kind: CONSOLE}`: a VM's VNC console, relayed to the scheduler (and
//! on to the user, who authenticated with an API key).
//!
//! The agent authenticates to QEMU's VNC server on 127.0.0.1 with the domain's own random
//! password (RFB "VNC authentication": DES of the server's challenge), and offers the user
//! security type "None" — the user never needs, and never sees, the VNC password. After both
//! handshakes the bytes are relayed as they are: server → user in `LogChunk`s, user → server
//! from `StreamInput`s. The stream ends when either side closes, with an EOF chunk (and
//! `error` set on failure).

use bytes::Bytes;
use cloud_proto::v1::{AgentMessage, LogChunk, agent_message};
use des::cipher::{BlockEncrypt, KeyInit};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// The RFB version both sides speak.
const RFB_VERSION: &[u8; 12] = b"RFB 003.008\n";
/// Bound on each handshake step.
const STEP: Duration = Duration::from_secs(10);
/// Largest chunk relayed at once.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("instance {0} has no VNC console on this node")]
    NoConsole(String),
    #[error("VNC server: {0}")]
    Server(String),
    #[error("console client: {0}")]
    Client(String),
    #[error("session closed")]
    SessionClosed,
}

/// The RFB "VNC authentication" response: each 8-byte half of the challenge encrypted with
/// DES under the password (at most 8 bytes, zero-padded, each byte's bits mirrored).
pub fn vnc_auth_response(password: &str, challenge: &[u8; 16]) -> [u8; 16] {
    let mut key = [0u8; 8];
    for (k, b) in key.iter_mut().zip(password.bytes()) {
        *k = b.reverse_bits();
    }
    let cipher = des::Des::new(&key.into());
    let mut out = *challenge;
    let (blocks, _) = out.as_chunks_mut::<8>();
    for block in blocks {
        cipher.encrypt_block(block.into());
    }
    out
}

async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<(), String> {
    match tokio::time::timeout(STEP, r.read_exact(buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Our side of the handshake with QEMU: version, VNC authentication with `password`, result.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    server: &mut S,
    password: &str,
) -> Result<(), ConsoleError> {
    let e = ConsoleError::Server;
    let mut version = [0u8; 12];
    read_exact(server, &mut version).await.map_err(e)?;
    if !version.starts_with(b"RFB 003.") {
        return Err(ConsoleError::Server("not an RFB server".into()));
    }
    server
        .write_all(RFB_VERSION)
        .await
        .map_err(|x| e(x.to_string()))?;
    let mut n = [0u8; 1];
    read_exact(server, &mut n).await.map_err(e)?;
    if n[0] == 0 {
        return Err(ConsoleError::Server(
            "the server refused the connection".into(),
        ));
    }
    let mut types = vec![0u8; usize::from(n[0])];
    read_exact(server, &mut types).await.map_err(e)?;
    if types.contains(&2) {
        server.write_all(&[2]).await.map_err(|x| e(x.to_string()))?;
        let mut challenge = [0u8; 16];
        read_exact(server, &mut challenge).await.map_err(e)?;
        let response = vnc_auth_response(password, &challenge);
        server
            .write_all(&response)
            .await
            .map_err(|x| e(x.to_string()))?;
    } else if types.contains(&1) {
        server.write_all(&[1]).await.map_err(|x| e(x.to_string()))?;
    } else {
        return Err(ConsoleError::Server(format!(
            "no usable security type in {types:?}"
        )));
    }
    let mut result = [0u8; 4];
    read_exact(server, &mut result).await.map_err(e)?;
    if result != [0, 0, 0, 0] {
        return Err(ConsoleError::Server("VNC authentication failed".into()));
    }
    Ok(())
}

fn chunk(request_id: u64, data: Vec<u8>, eof: bool, error: String) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::LogChunk(LogChunk {
            request_id,
            data,
            eof,
            error,
        })),
    }
}

/// Reads exactly `n` bytes of user input (which arrives in arbitrary pieces).
async fn user_bytes(
    input: &mut mpsc::Receiver<Bytes>,
    pending: &mut Vec<u8>,
    n: usize,
) -> Result<Vec<u8>, ConsoleError> {
    while pending.len() < n {
        match tokio::time::timeout(STEP, input.recv()).await {
            Ok(Some(b)) => pending.extend_from_slice(&b),
            Ok(None) => return Err(ConsoleError::Client("closed during the handshake".into())),
            Err(_) => return Err(ConsoleError::Client("handshake timed out".into())),
        }
    }
    Ok(pending.drain(..n).collect())
}

/// Relays one console session: `addr` is QEMU's VNC server, `password` the domain's.
pub async fn relay(
    request_id: u64,
    addr: std::net::SocketAddr,
    password: &str,
    out: &mpsc::Sender<AgentMessage>,
    input: &mut mpsc::Receiver<Bytes>,
) -> Result<(), ConsoleError> {
    let mut server = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| ConsoleError::Server(format!("cannot connect to {addr}: {e}")))?;
    authenticate(&mut server, password).await?;
    // The user's side: version, security type None, result OK.
    let send = |data: Vec<u8>| {
        let out = out.clone();
        async move {
            out.send(chunk(request_id, data, false, String::new()))
                .await
                .map_err(|_| ConsoleError::SessionClosed)
        }
    };
    let mut pending = Vec::new();
    send(RFB_VERSION.to_vec()).await?;
    let v = user_bytes(input, &mut pending, 12).await?;
    if !v.starts_with(b"RFB 003.") {
        return Err(ConsoleError::Client("not an RFB client".into()));
    }
    send(vec![1, 1]).await?;
    let choice = user_bytes(input, &mut pending, 1).await?;
    if choice != [1] {
        return Err(ConsoleError::Client(format!(
            "chose security type {choice:?}, not None (1)"
        )));
    }
    send(vec![0, 0, 0, 0]).await?;
    // From ClientInit on, both directions pass through untouched.
    if !pending.is_empty() {
        server
            .write_all(&pending)
            .await
            .map_err(|e| ConsoleError::Server(e.to_string()))?;
    }
    let (mut rd, mut wr) = server.into_split();
    let mut buf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            n = rd.read(&mut buf) => {
                let n = n.map_err(|e| ConsoleError::Server(e.to_string()))?;
                if n == 0 {
                    return Ok(()); // the guest's console went away (VM stopped)
                }
                send(buf[..n].to_vec()).await?;
            }
            data = input.recv() => {
                match data {
                    Some(d) => wr.write_all(&d).await.map_err(|e| ConsoleError::Server(e.to_string()))?,
                    None => return Ok(()), // the user closed the console
                }
            }
        }
    }
}

/// Runs one console request to completion, always ending with an EOF chunk (with `error` set
/// on failure) unless the session is gone.
pub async fn serve(
    hv: Option<std::sync::Arc<dyn crate::vm::Hypervisor>>,
    request_id: u64,
    instance_id: String,
    out: mpsc::Sender<AgentMessage>,
    mut input: mpsc::Receiver<Bytes>,
) {
    let result = async {
        let hv = hv.ok_or_else(|| ConsoleError::NoConsole(instance_id.clone()))?;
        let (port, password) = hv
            .vnc(&crate::vm::domain_name(&instance_id))
            .await
            .map_err(|_| ConsoleError::NoConsole(instance_id.clone()))?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        tracing::info!(request_id, instance_id = %instance_id, "console opened");
        relay(request_id, addr, &password, &out, &mut input).await
    }
    .await;
    let error = match result {
        Ok(()) => String::new(),
        Err(ConsoleError::SessionClosed) => return,
        Err(e) => {
            tracing::info!(request_id, instance_id = %instance_id, error = %e, "console ended with an error");
            e.to_string()
        }
    };
    let _ = tokio::time::timeout(STEP, out.send(chunk(request_id, Vec::new(), true, error))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_auth_response_matches_a_known_vector() {
        // Expected value computed independently with PyCryptodome:
        // DES.new(bytes(mirror(b) for b in b"password"), DES.MODE_ECB).encrypt(bytes(range(16)))
        let challenge: [u8; 16] = std::array::from_fn(|i| i as u8);
        let r = vnc_auth_response("password", &challenge);
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "b866924125c8eebb9debc1db61c538e2");
        // Only the first 8 characters count.
        assert_eq!(r, vnc_auth_response("password-and-more", &challenge));
        assert_ne!(r, vnc_auth_response("passwore", &challenge));
    }

    /// A minimal RFB server with VNC authentication, checking the response like QEMU does.
    async fn fake_vnc_server(listener: tokio::net::TcpListener, password: &'static str) {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(RFB_VERSION).await.unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await.unwrap();
        s.write_all(&[1, 2]).await.unwrap();
        let mut t = [0u8; 1];
        s.read_exact(&mut t).await.unwrap();
        let challenge = [7u8; 16];
        s.write_all(&challenge).await.unwrap();
        let mut resp = [0u8; 16];
        s.read_exact(&mut resp).await.unwrap();
        let ok = resp == vnc_auth_response(password, &challenge);
        s.write_all(&[0, 0, 0, u8::from(!ok)]).await.unwrap();
        if !ok {
            return;
        }
        let mut init = [0u8; 1];
        s.read_exact(&mut init).await.unwrap();
        s.write_all(b"SERVER-INIT").await.unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).await.unwrap();
        s.write_all(&echo).await.unwrap();
    }

    #[tokio::test]
    async fn relays_after_authenticating_for_the_user() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fake_vnc_server(listener, "s3cretpw"));
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let (in_tx, mut in_rx) = mpsc::channel(16);
        let relay =
            tokio::spawn(async move { relay(9, addr, "s3cretpw", &out_tx, &mut in_rx).await });
        let mut got = Vec::new();
        let mut next = async || match out_rx.recv().await.unwrap().msg {
            Some(agent_message::Msg::LogChunk(c)) => c.data,
            other => panic!("{other:?}"),
        };
        got.extend(next().await);
        assert_eq!(got, RFB_VERSION);
        in_tx
            .send(Bytes::from_static(b"RFB 003.008\n"))
            .await
            .unwrap();
        assert_eq!(next().await, vec![1, 1], "security type None only");
        in_tx.send(Bytes::from_static(&[1])).await.unwrap();
        assert_eq!(next().await, vec![0, 0, 0, 0]);
        in_tx.send(Bytes::from_static(&[1])).await.unwrap(); // ClientInit
        assert_eq!(next().await, b"SERVER-INIT");
        in_tx.send(Bytes::from_static(b"ping")).await.unwrap();
        assert_eq!(next().await, b"ping");
        drop(in_tx);
        relay.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_wrong_password_is_an_error_before_the_user_sees_anything() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(fake_vnc_server(listener, "right"));
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let (_in_tx, mut in_rx) = mpsc::channel(16);
        let e = relay(1, addr, "wrong", &out_tx, &mut in_rx)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("authentication failed"), "{e}");
        assert!(out_rx.try_recv().is_err());
    }
}
