//! What the server-pushed WebSockets (events, logs, stats) share: sending with a deadline, so a
//! client that stops reading is dropped instead of holding memory, and closing with a reason.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use std::time::Duration;

/// A send that takes longer than this means the client is not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Close code of a client dropped for being too slow (application range).
pub const TOO_SLOW: u16 = 4008;

pub async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })))
        .await;
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
