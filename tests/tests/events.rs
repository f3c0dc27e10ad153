//! The event stream: state changes, placements and deletions are stored in order and read per
//! project (`GET /v1/events`), streamed over a WebSocket with replay and resume
//! (`/v1/ws/events?after=SEQ`), and a client that does not read is dropped while the others
//! keep receiving every event in order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{Event, InstanceStatus};
use cloud_tests::{Cluster, busybox};
use futures::StreamExt;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

async fn next_event(ws: &mut cloud_api::ConsoleStream) -> Event {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(&t).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("event stream: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_are_ordered_per_project_resumable_and_slow_clients_are_dropped() {
    let c = Cluster::start().await;
    let _node = c.fake_node_with("n1", |_| {}).await;
    let admin = c.client();
    let member = cloud_api::Client::new(&c.http_url(), Some(c.member_key().await)).unwrap();

    // Another project's admin sees none of this project's events.
    let app = c.running().app.clone();
    let (_, other_key) = c.project_admin_key("other").await;
    let other = cloud_api::Client::new(&c.http_url(), Some(other_key)).unwrap();

    let mut live = member.events_stream(0).await.unwrap();
    member
        .instance_create(&busybox("ev1", &["sleep", "1000"]))
        .await
        .unwrap();
    c.wait_instance("ev1", InstanceStatus::Running).await;
    // Live: placed, then status changes up to running, in seq order.
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &Event| e.kind == "instance.status" && e.data["to"] == "running")
    {
        let e = next_event(&mut live).await;
        if let Some(last) = seen.last() {
            let last: &Event = last;
            assert!(e.seq > last.seq, "strictly increasing: {last:?} then {e:?}");
        }
        seen.push(e);
    }
    assert_eq!(seen[0].kind, "instance.placed", "{seen:?}");
    assert_eq!(seen[0].data["node_name"], "n1");
    assert!(
        seen.iter().all(|e| e.project_id.is_some()),
        "no fleet events for members"
    );

    // Paged reads give the same sequence; another project sees none of it.
    let page = member.events(0, 1000).await.unwrap();
    let ours: Vec<i64> = page.items.iter().map(|e| e.seq).collect();
    for e in &seen {
        assert!(ours.contains(&e.seq), "{e:?} in the list");
    }
    assert!(
        ours.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {ours:?}"
    );
    // Page by page, feeding next_cursor back as ?cursor=, gives the same list (and then
    // whatever came since).
    let mut paged = Vec::new();
    let mut path = "/v1/events?limit=1".to_string();
    loop {
        let page: cloud_api::Page<Event> = member
            .raw(cloud_api::Method::GET, &path)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        paged.extend(page.items.iter().map(|e| e.seq));
        match page.next_cursor {
            Some(c) => path = format!("/v1/events?limit=1&cursor={c}"),
            None => break,
        }
    }
    assert!(paged.starts_with(&ours), "{paged:?} vs {ours:?}");
    assert!(other.events(0, 1000).await.unwrap().items.is_empty());
    // Operators also see fleet events (the node became ready).
    let fleet = admin.events(0, 1000).await.unwrap();
    assert!(
        fleet.items.iter().any(|e| e.kind == "node.ready"),
        "{:?}",
        fleet.items
    );

    // Resume: a new stream from the last seq seen replays only what came after.
    let resume_at = seen.last().unwrap().seq;
    admin.instance_delete("ev1").await.unwrap();
    c.wait_instance_gone("ev1").await;
    let mut resumed = member.events_stream(resume_at).await.unwrap();
    let first = next_event(&mut resumed).await;
    assert!(first.seq > resume_at);
    let mut kinds = vec![first.kind.clone()];
    while !kinds.iter().any(|k| k == "instance.deleted") {
        kinds.push(next_event(&mut resumed).await.kind);
    }

    // Back-pressure: a client that never reads is dropped; a reading one gets everything.
    let now = member
        .events(0, 1000)
        .await
        .unwrap()
        .items
        .last()
        .unwrap()
        .seq;
    let mut slow = member.events_stream(now).await.unwrap();
    let mut good = member.events_stream(now).await.unwrap();
    let project = app.default_project.0;
    let total = 6_000usize;
    let reader = tokio::spawn(async move {
        let mut last = 0i64;
        let mut n = 0usize;
        while n < total {
            let e = next_event(&mut good).await;
            assert!(e.seq > last);
            last = e.seq;
            if e.kind == "test.flood" {
                n += 1;
            }
        }
        n
    });
    let pad = "x".repeat(8000);
    for i in 0..total {
        app.events.emit(
            Some(project),
            "test.flood",
            "test",
            i,
            serde_json::json!({ "i": i, "pad": pad }),
        );
        // About 2,000 events (16 MB) a second, 48 MB in all (more than loopback socket
        // buffers hold): a reading client keeps up, a silent one's buffers fill.
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        reader.await.unwrap(),
        total,
        "the reading client got every event"
    );
    // The slow one: whatever was buffered, then a close (4008) or the end of the stream.
    let dropped = tokio::time::timeout(Duration::from_secs(60), async {
        let mut got = 0usize;
        loop {
            match slow.next().await {
                Some(Ok(Message::Text(_))) => got += 1,
                Some(Ok(Message::Close(f))) => return (got, f.map(|f| u16::from(f.code))),
                None | Some(Err(_)) => return (got, None),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the slow client's stream ends");
    assert!(
        dropped.0 < total,
        "it was dropped before the end: {dropped:?}"
    );
    if let Some(code) = dropped.1 {
        assert_eq!(code, 4008, "{dropped:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_and_stats_follow_over_websockets_in_order() {
    let c = Cluster::start().await;
    let node = c.fake_node_with("n1", |_| {}).await;
    let key = c.member_key().await;
    let member = cloud_api::Client::new(&c.http_url(), Some(key.clone())).unwrap();
    let inst = member
        .instance_create(&busybox("talker", &["sleep", "1000"]))
        .await
        .unwrap();
    c.wait_instance("talker", InstanceStatus::Running).await;
    let id = inst.id.to_string();
    node.runtime.push_log(&id, b"before\n");

    // Without the WebSocket upgrade, follow is a clear 422.
    let e = reqwest::Client::new()
        .get(format!(
            "{}/v1/instances/talker/logs?follow=true",
            c.http_url()
        ))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(e.status().as_u16(), 422);

    let mut ws = member
        .instance_logs_follow("talker", Some(10))
        .await
        .unwrap();
    let mut got = Vec::new();
    let want_lines = 200;
    let pusher = {
        let rt = node.runtime.clone();
        let id = id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for i in 0..want_lines {
                rt.push_log(&id, format!("line {i}\n").as_bytes());
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    let text = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => got.extend_from_slice(&b),
                other => panic!("log stream: {other:?}"),
            }
            let t = String::from_utf8_lossy(&got).to_string();
            if t.contains(&format!("line {}\n", want_lines - 1)) {
                return t;
            }
        }
    })
    .await
    .expect("every line arrives");
    pusher.await.unwrap();
    assert!(text.starts_with("before\n"), "the tail first: {text:.80}");
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let expected: Vec<String> = (0..want_lines).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "in order, none lost");
    drop(ws);

    // Stats: each new sample as it arrives.
    node.runtime.set_stats(
        &id,
        cloud_agent::runtime::ContainerStats {
            cpu_percent: 12.5,
            memory_used_bytes: 1 << 20,
            memory_limit_bytes: 64 << 20,
        },
    );
    let mut stats = member.instance_stats_follow("talker").await.unwrap();
    let first = next_sample(&mut stats).await;
    assert_eq!(first.memory_limit_bytes, 64 << 20);
    let second = next_sample(&mut stats).await;
    assert!(
        second.sampled_at > first.sampled_at,
        "a new sample each time"
    );
}

/// The next stats sample of a `?follow=true` stream (within 15 s); a stream that ends or
/// errors first fails the test at once.
async fn next_sample(stats: &mut cloud_api::ConsoleStream) -> cloud_api::InstanceUsage {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stats.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str::<cloud_api::InstanceUsage>(&t).unwrap();
                }
                Some(Ok(_)) => {}
                other => panic!("the stats stream ended: {other:?}"),
            }
        }
    })
    .await
    .expect("a stats sample within 15 s")
}
