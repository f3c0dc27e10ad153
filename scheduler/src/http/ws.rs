//! What the WebSockets (events, logs, stats, console) share: sending with a deadline, so a
//! client that stops reading is dropped instead of holding memory, and closing with a reason.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use prometheus::IntGauge;
use std::time::Duration;

/// A send that takes longer than this means the client is not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Close code of a client dropped for being too slow (application range).
pub const TOO_SLOW: u16 = 4008;

/// A close message; the reason is cut to the protocol's 123 bytes (it may carry an agent's
/// error text).
pub fn close_frame(code: u16, reason: &str) -> Message {
    let mut r: String = reason.chars().take(123).collect();
    while r.len() > 123 {
        r.pop();
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: r.into(),
    }))
}

pub async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket.send(close_frame(code, reason)).await;
}

/// Sends one message; false when the client is gone or too slow (then it is closed with
/// `TOO_SLOW` and `slow_reason`).
pub async fn send(socket: &mut WebSocket, msg: Message, slow_reason: &str) -> bool {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(_)) => false,
        Err(_) => {
            close(socket, TOO_SLOW, slow_reason).await;
            false
        }
    }
}

/// Counts an open WebSocket client in a gauge for as long as it lives (every exit path).
pub struct Counted(IntGauge);

pub fn counted(gauge: &IntGauge) -> Counted {
    gauge.inc();
    Counted(gauge.clone())
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}
