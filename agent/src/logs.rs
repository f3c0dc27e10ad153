//! Answers `StreamRequest{kind: LOGS}`: a container's stdout+stderr, or a VM's serial console
//! log, as `LogChunk`s of at most 64 KiB, then an EOF chunk. Follow streams run until cancelled or the session ends, and are
//! dropped with an error when the session's outgoing buffer stays full (bounded memory).

use crate::runtime::{ContainerRuntime, LogOptions, RuntimeError, labels};
use bytes::{Bytes, BytesMut};
use cloud_proto::v1::{AgentMessage, LogChunk, agent_message};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest `LogChunk.data`.
pub const MAX_CHUNK: usize = 64 * 1024;
/// A follow stream whose chunk cannot be queued for this long is dropped.
const FOLLOW_STALL: Duration = Duration::from_secs(1);
/// Bound on queueing the final EOF/error chunk.
const FINAL_SEND: Duration = Duration::from_secs(5);

/// Errors of one log request (reported to the scheduler in `LogChunk.error`).
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("instance {0} is not on this node")]
    NotOnNode(String),
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("log stream dropped: the session's send buffer stayed full (client too slow)")]
    Overflow,
    #[error("session closed")]
    SessionClosed,
    #[error("serial log: {0}")]
    Serial(std::io::Error),
}

/// One log request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    pub request_id: u64,
    pub instance_id: String,
    pub tail: u32,
    pub follow: bool,
}

fn chunk(request_id: u64, data: Bytes, eof: bool, error: String) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::LogChunk(LogChunk {
            request_id,
            data: data.to_vec(),
            eof,
            error,
        })),
    }
}

/// Queues a message: backpressure for finite streams, bounded stall for follow streams.
async fn push(
    out: &mpsc::Sender<AgentMessage>,
    msg: AgentMessage,
    follow: bool,
) -> Result<(), LogsError> {
    if follow {
        match tokio::time::timeout(FOLLOW_STALL, out.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(msg);
                Ok(())
            }
            Ok(Err(_)) => Err(LogsError::SessionClosed),
            Err(_) => Err(LogsError::Overflow),
        }
    } else {
        out.send(msg).await.map_err(|_| LogsError::SessionClosed)
    }
}

/// Splits `buf` into ≤ 64 KiB chunks and queues them; keeps nothing back.
async fn flush(
    out: &mpsc::Sender<AgentMessage>,
    req: &LogRequest,
    buf: &mut BytesMut,
) -> Result<(), LogsError> {
    while !buf.is_empty() {
        let n = buf.len().min(MAX_CHUNK);
        let piece = buf.split_to(n).freeze();
        push(
            out,
            chunk(req.request_id, piece, false, String::new()),
            req.follow,
        )
        .await?;
    }
    Ok(())
}

/// Largest part of a serial log sent (its end).
const MAX_SERIAL_BYTES: u64 = 4 << 20;

/// The last `tail` lines (all when 0) of a VM's serial log, then, when following, what the
/// guest writes next (the file is polled).
async fn serial(
    path: &std::path::Path,
    req: &LogRequest,
    out: &mpsc::Sender<AgentMessage>,
) -> Result<(), LogsError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io = LogsError::Serial;
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    let start = len.saturating_sub(MAX_SERIAL_BYTES);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(io)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).await.map_err(io)?;
    let mut from = 0;
    if req.tail > 0 {
        let body = data.strip_suffix(b"\n").unwrap_or(&data);
        let mut seen = 0u32;
        for (i, b) in body.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == req.tail {
                    from = i + 1;
                    break;
                }
            }
        }
    }
    let mut buf = BytesMut::from(&data[from..]);
    flush(out, req, &mut buf).await?;
    if !req.follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let mut more = Vec::new();
        file.read_to_end(&mut more).await.map_err(io)?;
        if !more.is_empty() {
            let mut buf = BytesMut::from(&more[..]);
            flush(out, req, &mut buf).await?;
        } else if out.is_closed() {
            return Err(LogsError::SessionClosed);
        }
    }
}

async fn stream(
    runtime: &dyn ContainerRuntime,
    vm_files: Option<&crate::vm::VmFiles>,
    node_id: &str,
    req: &LogRequest,
    out: &mpsc::Sender<AgentMessage>,
) -> Result<(), LogsError> {
    let filter = BTreeMap::from([
        (labels::NODE_ID.to_owned(), node_id.to_owned()),
        (labels::INSTANCE_ID.to_owned(), req.instance_id.clone()),
    ]);
    let Some(container) = runtime
        .list(&filter)
        .await?
        .into_iter()
        .find(|c| c.label(labels::NODE_ID) == Some(node_id))
    else {
        // Not a container: a VM's serial console, if this node has it.
        if let Some(log) = vm_files
            .and_then(|f| f.paths(&req.instance_id).ok())
            .map(|p| p.serial_log)
            .filter(|p| p.is_file())
        {
            return serial(&log, req, out).await;
        }
        return Err(LogsError::NotOnNode(req.instance_id.clone()));
    };
    let options = LogOptions {
        tail: req.tail,
        follow: req.follow,
    };
    let logs = match runtime.logs(&container.id, options).await {
        Ok(s) => s,
        Err(RuntimeError::NotFound(_)) => {
            return Err(LogsError::NotOnNode(req.instance_id.clone()));
        }
        Err(e) => return Err(e.into()),
    };
    // Coalesce whatever is ready into chunks of up to 64 KiB.
    let mut batches = logs.ready_chunks(64);
    let mut buf = BytesMut::new();
    while let Some(batch) = batches.next().await {
        for item in batch {
            buf.extend_from_slice(&item?);
            if buf.len() >= MAX_CHUNK {
                let mut full = buf.split_to(buf.len() - buf.len() % MAX_CHUNK);
                flush(out, req, &mut full).await?;
            }
        }
        flush(out, req, &mut buf).await?;
    }
    Ok(())
}

/// Runs one log request to completion, always ending with an EOF chunk (with `error` set on
/// failure) unless the session is gone.
pub async fn serve(
    runtime: Arc<dyn ContainerRuntime>,
    vm_files: Option<crate::vm::VmFiles>,
    node_id: String,
    req: LogRequest,
    out: mpsc::Sender<AgentMessage>,
) {
    tracing::debug!(request_id = req.request_id, instance_id = %req.instance_id, tail = req.tail, follow = req.follow, "log stream started");
    let result = stream(runtime.as_ref(), vm_files.as_ref(), &node_id, &req, &out).await;
    let error = match result {
        Ok(()) => String::new(),
        Err(LogsError::SessionClosed) => return,
        Err(e) => {
            tracing::info!(request_id = req.request_id, instance_id = %req.instance_id, error = %e, "log stream ended with an error");
            e.to_string()
        }
    };
    let last = chunk(req.request_id, Bytes::new(), true, error);
    let _ = tokio::time::timeout(FINAL_SEND, out.send(last)).await;
    tracing::debug!(request_id = req.request_id, "log stream finished");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerSpec, FakeRuntime};

    fn planted(rt: &FakeRuntime, node: &str, instance: &str) {
        let spec = ContainerSpec {
            name: format!("tc-{instance}"),
            image: "img".into(),
            labels: [
                (labels::NODE_ID.to_owned(), node.to_owned()),
                (labels::INSTANCE_ID.to_owned(), instance.to_owned()),
            ]
            .into(),
            ..ContainerSpec::default()
        };
        rt.insert_container(&spec, true);
    }

    fn chunks(rx: &mut mpsc::Receiver<AgentMessage>) -> Vec<LogChunk> {
        let mut v = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Some(agent_message::Msg::LogChunk(c)) = m.msg {
                v.push(c);
            }
        }
        v
    }

    #[tokio::test]
    async fn a_vm_answers_with_the_tail_of_its_serial_log() {
        let rt = Arc::new(FakeRuntime::new());
        let dir = tempfile::tempdir().unwrap();
        let files = crate::vm::VmFiles::new(dir.path());
        std::fs::create_dir_all(dir.path().join("vm1")).unwrap();
        std::fs::write(
            files.paths("vm1").unwrap().serial_log,
            b"boot\nline 2\nTHECLOUD-GUEST-READY\n",
        )
        .unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let req = LogRequest {
            request_id: 3,
            instance_id: "vm1".into(),
            tail: 2,
            follow: false,
        };
        serve(
            rt.clone(),
            Some(files.clone()),
            "n1".into(),
            req.clone(),
            tx.clone(),
        )
        .await;
        let got = chunks(&mut rx);
        let text: Vec<u8> = got.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(text, b"line 2\nTHECLOUD-GUEST-READY\n");
        assert!(got.last().unwrap().eof && got.last().unwrap().error.is_empty());
        // An instance with neither a container nor a serial log is not on this node.
        let other = LogRequest {
            instance_id: "vm2".into(),
            ..req
        };
        serve(rt, Some(files), "n1".into(), other, tx).await;
        let got = chunks(&mut rx);
        assert!(got.last().unwrap().error.contains("not on this node"));
    }

    #[tokio::test]
    async fn sends_tail_in_bounded_chunks_then_eof() {
        let rt = Arc::new(FakeRuntime::new());
        planted(&rt, "n1", "i1");
        let big = vec![b'x'; 150 * 1024];
        rt.push_log("i1", b"first\n");
        rt.push_log("i1", &big);
        rt.push_log("i1", b"\nlast\n");
        let (tx, mut rx) = mpsc::channel(64);
        let req = LogRequest {
            request_id: 7,
            instance_id: "i1".into(),
            tail: 0,
            follow: false,
        };
        serve(rt.clone(), None, "n1".into(), req, tx).await;
        let got = chunks(&mut rx);
        let (last, data) = got.split_last().unwrap();
        assert!(last.eof && last.error.is_empty());
        assert!(
            data.iter()
                .all(|c| c.data.len() <= MAX_CHUNK && c.request_id == 7)
        );
        let all: Vec<u8> = data.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(all.len(), 6 + big.len() + 6);
        assert!(all.ends_with(b"last\n"));

        let (tx, mut rx) = mpsc::channel(64);
        let req = LogRequest {
            request_id: 8,
            instance_id: "i1".into(),
            tail: 1,
            follow: false,
        };
        serve(rt, None, "n1".into(), req, tx).await;
        let got = chunks(&mut rx);
        assert_eq!(got[0].data, b"last\n");
    }

    #[tokio::test]
    async fn unknown_or_foreign_instance_is_an_error_eof() {
        let rt = Arc::new(FakeRuntime::new());
        planted(&rt, "other-node", "i2");
        let (tx, mut rx) = mpsc::channel(8);
        let req = LogRequest {
            request_id: 1,
            instance_id: "i2".into(),
            tail: 0,
            follow: false,
        };
        serve(rt, None, "n1".into(), req, tx).await;
        let got = chunks(&mut rx);
        assert_eq!(got.len(), 1);
        assert!(got[0].eof);
        assert_eq!(got[0].error, "instance i2 is not on this node");
    }

    #[tokio::test]
    async fn follow_streams_live_output_until_cancelled() {
        let rt = Arc::new(FakeRuntime::new());
        planted(&rt, "n1", "i3");
        rt.push_log("i3", b"old\n");
        let (tx, mut rx) = mpsc::channel(8);
        let req = LogRequest {
            request_id: 3,
            instance_id: "i3".into(),
            tail: 0,
            follow: true,
        };
        let task = tokio::spawn(serve(rt.clone(), None, "n1".into(), req, tx));
        let first = rx.recv().await.unwrap();
        let Some(agent_message::Msg::LogChunk(c)) = first.msg else {
            panic!("not a log chunk")
        };
        assert_eq!(c.data, b"old\n");
        rt.push_log("i3", b"new\n");
        let second = rx.recv().await.unwrap();
        let Some(agent_message::Msg::LogChunk(c)) = second.msg else {
            panic!("not a log chunk")
        };
        assert_eq!(c.data, b"new\n");
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn follow_stream_is_dropped_when_the_session_buffer_stays_full() {
        let rt = Arc::new(FakeRuntime::new());
        planted(&rt, "n1", "i4");
        let (tx, mut rx) = mpsc::channel(1);
        let req = LogRequest {
            request_id: 4,
            instance_id: "i4".into(),
            tail: 0,
            follow: true,
        };
        let task = tokio::spawn(serve(rt.clone(), None, "n1".into(), req, tx));
        tokio::task::yield_now().await;
        for _ in 0..4 {
            rt.push_log("i4", b"line\n");
            tokio::task::yield_now().await;
        }
        // Nobody reads: after the stall bound the stream gives up.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let first = rx.recv().await.unwrap();
        assert!(matches!(first.msg, Some(agent_message::Msg::LogChunk(ref c)) if !c.eof));
        let last = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let m = rx.recv().await.unwrap();
                if let Some(agent_message::Msg::LogChunk(c)) = m.msg
                    && c.eof
                {
                    return c;
                }
            }
        })
        .await
        .unwrap();
        assert!(
            last.error.contains("send buffer stayed full"),
            "{}",
            last.error
        );
        task.await.unwrap();
    }
}
