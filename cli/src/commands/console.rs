//! `cloud instance console`: a local TCP port for VNC viewers, bridged to the VM console
//! WebSocket (`GET /v1/instances/{id}/console`). One viewer at a time; each connection opens
//! its own console session.

use crate::cli::ConsoleArgs;
use anyhow::{Context, Result};
use cloud_api::Client;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

pub async fn run(client: &Client, args: &ConsoleArgs) -> Result<()> {
    // Fail early (unknown instance, not a VM, not running) before listening.
    let probe = client.instance_console(&args.name).await?;
    drop(probe);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!(
        "console of {} on {} — connect a VNC viewer (no password needed); Ctrl-C to stop",
        args.name, args.listen
    );
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => a.context("accept")?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        eprintln!("viewer {peer} connected");
        match bridge(client, &args.name, tcp).await {
            Ok(()) => eprintln!("viewer {peer} disconnected"),
            Err(e) => eprintln!("viewer {peer}: {e:#}"),
        }
    }
}

/// Pumps bytes between one viewer and one console session until either side closes.
async fn bridge(client: &Client, name: &str, tcp: tokio::net::TcpStream) -> Result<()> {
    let ws = client.instance_console(name).await?;
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut rd, mut wr) = tcp.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = rd.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    let _ = ws_tx.send(Message::Close(None)).await;
                    return Ok(());
                }
                ws_tx.send(Message::Binary(buf[..n].to_vec().into())).await?;
            }
            m = ws_rx.next() => match m {
                Some(Ok(Message::Binary(b))) => wr.write_all(&b).await?,
                Some(Ok(Message::Close(f))) => {
                    if let Some(f) = f.filter(|f| !f.reason.is_empty()) {
                        eprintln!("console closed: {}", f.reason);
                    }
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
        }
    }
}
