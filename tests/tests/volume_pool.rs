//! Nodes report their volume pool (backend kind and capacity) in telemetry, and the API shows
//! it on the node: the input volume placement needs (issue #5).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_tests::{Cluster, wait_for};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn nodes_report_their_volume_pool() {
    let c = Cluster::start().await;
    let backend = Arc::new(cloud_agent::storage::FakeVolumes::lvm_like(50 << 30));
    let node = c
        .fake_node_with("pooled", |cfg| cfg.volumes = Some(backend))
        .await;
    let _plain = c.fake_node("plain").await;
    let client = c.client();
    let pool = wait_for("pool in telemetry", Duration::from_secs(15), || {
        let client = client.clone();
        async move { client.node_get("pooled").await.ok()?.usage?.volume_pool }
    })
    .await;
    assert_eq!(pool.kind, "lvm");
    assert_eq!(pool.total_bytes, 50 << 30);
    assert!(pool.free_bytes <= pool.total_bytes);
    let plain = wait_for("plain node telemetry", Duration::from_secs(15), || {
        let client = client.clone();
        async move { client.node_get("plain").await.ok()?.usage }
    })
    .await;
    assert!(
        plain.volume_pool.is_none(),
        "no backend, no pool: {plain:?}"
    );
    node.agent.abort();
}
