//! Project quotas: instances, CPU, memory and volume GB, enforced in the transaction that
//! creates (so concurrent creates never overshoot), shown with usage at `GET /v1/quota`, set
//! by operators only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{CreateVolumeRequest, Quota};
use cloud_tests::{Cluster, busybox};

async fn scenario(c: &Cluster) {
    let (_node, _vols) = c.fake_volume_node("n1", 500).await;
    let admin = c.client();
    let member_key = c.member_key().await;
    let member = cloud_api::Client::new(&c.http_url(), Some(member_key.clone())).unwrap();
    let project = c.running().app.default_project.0.to_string();
    let http = reqwest::Client::new();
    let put_quota = |key: String, q: Quota| {
        let (http, url) = (
            http.clone(),
            format!("{}/v1/projects/{project}/quota", c.http_url()),
        );
        async move {
            http.put(url)
                .header("X-API-Key", key)
                .json(&q)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let quota = Quota {
        max_instances: Some(3),
        max_cpu_millis: Some(2500),
        max_memory_mb: None,
        max_volume_gb: Some(10),
    };
    assert_eq!(
        put_quota(member_key.clone(), quota).await,
        403,
        "members cannot set quotas"
    );
    assert_eq!(put_quota(c.admin_key(), quota).await, 200);

    // Five concurrent creates of 500 millicores each: exactly three fit (instances), never more.
    let mut tasks = Vec::new();
    for i in 0..5 {
        let m = member.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = busybox(&format!("q{i}"), &["sleep", "1000"]);
            req.cpu_millis = 500;
            m.instance_create(&req).await
        }));
    }
    let mut refused = Vec::new();
    let mut made = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => made += 1,
            Err(e) => refused.push(e),
        }
    }
    assert_eq!(made, 3, "{refused:?}");
    for e in &refused {
        assert_eq!(e.status(), Some(403), "{e}");
        assert!(
            e.to_string().contains("quota exceeded") && e.to_string().contains("instances"),
            "{e}"
        );
    }
    assert_eq!(
        admin.instance_list().await.unwrap().len(),
        3,
        "nothing half-made"
    );

    // CPU: room for one more instance by count after a delete, but not for 2000 millicores.
    admin.instance_delete("q0").await.unwrap();
    c.wait_instance_gone("q0").await;
    let mut big = busybox("big", &["sleep", "1000"]);
    big.cpu_millis = 2000;
    let e = member.instance_create(&big).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("CPU"), "{e}");
    big.cpu_millis = 1000;
    member.instance_create(&big).await.unwrap();

    // Volumes: 10 GB in all, growth included.
    let vol = |name: &str, gb: u64| CreateVolumeRequest {
        name: name.into(),
        size_gb: gb,
        node: Some("n1".into()),
        node_selector: Default::default(),
    };
    member.volume_create(&vol("a", 6)).await.unwrap();
    let e = member.volume_create(&vol("b", 5)).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("GB of volumes"), "{e}");
    member.volume_create(&vol("b", 4)).await.unwrap();
    let e = member.volume_resize("a", 7).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");

    // The caller sees its limits and usage.
    let status: cloud_api::QuotaStatus = http
        .get(format!("{}/v1/quota", c.http_url()))
        .header("X-API-Key", &member_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status.limits, quota);
    assert_eq!(status.usage.instances, 3);
    assert_eq!(status.usage.cpu_millis, 2000);
    assert_eq!(status.usage.volume_gb, 10);
}

#[tokio::test]
async fn quotas_on_sqlite() {
    let c = Cluster::start().await;
    scenario(&c).await;
}

#[tokio::test]
async fn quotas_on_postgres() {
    let Some(url) = cloud_tests::postgres_scratch_url().await else {
        return;
    };
    let db = url.clone();
    let mut c = Cluster::start_with(move |cfg| cfg.database_url = Some(db)).await;
    scenario(&c).await;
    c.stop_scheduler().await;
    cloud_tests::postgres_drop(&url).await;
}
