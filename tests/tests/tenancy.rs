//! The cross-tenant matrix: for every route of the route table, a second project's admin gets
//! 404 on the first project's resources (403 on fleet routes), never sees them in a list, and
//! the first project's data is unchanged afterwards. It walks `v1_routes()`, so a new endpoint
//! is covered without anyone adding it here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_scheduler::authz::Access;
use cloud_scheduler::http::routes::Gate;
use cloud_tests::{Cluster, busybox, wait_for};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

async fn call(c: &Cluster, key: &str, method: Method, path: &str, body: Value) -> (u16, String) {
    let resp = reqwest::Client::new()
        .request(method, format!("{}{path}", c.http_url()))
        .header("X-API-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A's resources as the admin sees them, without what changes by itself (usage, times).
async fn snapshot_of(c: &Cluster, key: &str, paths: &[String]) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for p in paths {
        let (s, body) = call(c, key, Method::GET, p, Value::Null).await;
        assert_eq!(s, 200, "{p}: {body}");
        let mut v: Value = serde_json::from_str(&body).unwrap();
        if let Some(o) = v.as_object_mut() {
            for k in [
                "usage",
                "updated_at",
                "started_at",
                "status",
                "status_reason",
                "runtime_id",
            ] {
                o.remove(k);
            }
        }
        out.insert(p.clone(), v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_project_can_neither_see_nor_touch_a_projects_resources() {
    let c = Cluster::start().await;
    let (_node, _vols) = c.fake_volume_node("n1", 100).await;
    let a = c.client();
    let a_key = c.admin_key();

    // Project A (default): one of everything.
    let vol = a
        .volume_create(&cloud_api::CreateVolumeRequest {
            name: "a-vol".into(),
            size_gb: 1,
            node: Some("n1".into()),
            node_selector: Default::default(),
        })
        .await
        .unwrap();
    wait_for("a-vol available", Duration::from_secs(15), || {
        let a = a.clone();
        async move {
            (a.volume_get("a-vol").await.ok()?.status == cloud_api::VolumeStatus::Available)
                .then_some(())
        }
    })
    .await;
    let snap = a
        .snapshot_create(&cloud_api::CreateSnapshotRequest {
            volume_id: "a-vol".into(),
            name: "a-snap".into(),
        })
        .await
        .unwrap();
    let vpc = a
        .vpc_create(&cloud_api::CreateVpcRequest {
            name: "a-vpc".into(),
            cidr: "10.90.0.0/16".into(),
        })
        .await
        .unwrap();
    let subnet = a
        .subnet_create(
            "a-vpc",
            &cloud_api::CreateSubnetRequest {
                name: "a-sub".into(),
                cidr: "10.90.1.0/24".into(),
                nat_egress: false,
            },
        )
        .await
        .unwrap();
    let sg = a
        .sg_create(&cloud_api::CreateSecurityGroupRequest {
            name: "a-sg".into(),
            description: String::new(),
            rules: vec![],
        })
        .await
        .unwrap();
    let image = a
        .image_create(&cloud_api::CreateImageRequest {
            name: "a-img".into(),
            path: "/var/lib/images/a.qcow2".into(),
            format: cloud_api::ImageFormat::Qcow2,
            kernel: None,
            initrd: None,
            cmdline: None,
            // Private to A (public images are every project's by design; tested below).
            public: Some(false),
        })
        .await
        .unwrap();
    let inst = a
        .instance_create(&busybox("a-inst", &["sleep", "1000"]))
        .await
        .unwrap();
    let (s, role) = call(
        &c,
        &a_key,
        Method::POST,
        "/v1/roles",
        json!({"name": "a-role", "permissions": ["instance:read"]}),
    )
    .await;
    assert_eq!(s, 201, "{role}");
    let role: Value = serde_json::from_str(&role).unwrap();
    let a_keys: Vec<cloud_api::ApiKey> = a.key_list().await.unwrap();
    let a_key_id = a_keys[0].id.to_string();

    // Project B and its admin.
    let app = c.running().app.clone();
    let (b_project, b_key) = c.project_admin_key("tenant-b").await;
    assert_ne!(b_project, app.default_project.0);

    let ids: Vec<String> = [
        inst.id.to_string(),
        vol.id.to_string(),
        snap.id.to_string(),
        vpc.id.to_string(),
        subnet.id.to_string(),
        sg.id.to_string(),
        image.id.to_string(),
        role["id"].as_str().unwrap().to_string(),
        a_key_id.clone(),
        app.default_project.0.to_string(),
    ]
    .to_vec();
    let watched: Vec<String> = vec![
        format!("/v1/instances/{}", inst.id),
        format!("/v1/volumes/{}", vol.id),
        format!("/v1/snapshots/{}", snap.id),
        format!("/v1/vpcs/{}", vpc.id),
        format!("/v1/vpcs/{}/subnets/{}", vpc.id, subnet.id),
        format!("/v1/security-groups/{}", sg.id),
        format!("/v1/images/{}", image.id),
    ];
    let before = snapshot_of(&c, &a_key, &watched).await;

    let node_id = a.node_get("n1").await.unwrap().id.to_string();
    let table = cloud_scheduler::http::v1_routes().table().to_vec();
    let admin = cloud_scheduler::authz::PermissionSet::new(
        cloud_scheduler::authz::builtin_grants("admin").unwrap(),
    );
    let mut checked = 0;
    for r in &table {
        let Gate::Key(access) = r.gate else { continue };
        let first = r
            .path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        let id = match first {
            "instances" => inst.id.to_string(),
            "volumes" => vol.id.to_string(),
            "snapshots" => snap.id.to_string(),
            "vpcs" => vpc.id.to_string(),
            "security-groups" => sg.id.to_string(),
            "images" => image.id.to_string(),
            "roles" => role["id"].as_str().unwrap().to_string(),
            "auth" => a_key_id.clone(),
            "nodes" => node_id.clone(),
            "users" => "admin@thecloud.local".to_string(),
            "projects" => app.default_project.0.to_string(),
            _ if !r.path.contains("{id}") => String::new(),
            other => panic!("no id of project A for /{other}/{{id}} routes: add one here"),
        };
        let path = format!(
            "/v1{}",
            r.path
                .replace("{id}", &id)
                .replace("{subnet}", &subnet.id.to_string())
                .replace("{group}", &sg.id.to_string())
        );
        let method = Method::from_bytes(r.method.as_bytes()).unwrap();
        // What a project admin may not do (fleet routes) is refused before any lookup.
        let fleet = matches!(access, Access::Need(p) if !admin.allows(p));
        // Well-formed bodies, so a refusal is about the resource, not the input.
        let body = match (r.method, r.path) {
            ("POST", "/instances/{id}/security-groups") => json!({"security_group": "a-sg"}),
            ("POST", "/volumes/{id}/resize") => json!({"size_gb": 5}),
            ("POST", "/volumes/{id}/attach") => {
                json!({"instance_id": "a-inst", "mount_path": "/data"})
            }
            ("POST", "/snapshots/{id}/restore") => json!({"name": "stolen"}),
            ("PUT", "/security-groups/{id}/rules") => json!({"rules": []}),
            ("POST", "/vpcs/{id}/subnets") => json!({"name": "b-sub", "cidr": "10.90.2.0/24"}),
            ("POST", "/users/{id}/keys") => json!({"name": "stolen"}),
            _ => json!({}),
        };
        let (status, body) = call(&c, &b_key, method.clone(), &path, body).await;
        assert!(status < 500, "{} {path}: {status} {body}", r.method);
        if fleet {
            assert_eq!(status, 403, "{} {path} is a fleet route: {body}", r.method);
        } else if r.path.contains('{') {
            let websocket = r.path.ends_with("/console");
            if websocket {
                assert!(
                    (400..500).contains(&status),
                    "{} {path}: {status}",
                    r.method
                );
            } else {
                assert_eq!(
                    status, 404,
                    "{} {path} of another project: {body}",
                    r.method
                );
            }
        } else if r.method == "GET" {
            if r.path.starts_with("/ws/") {
                assert!(
                    (400..500).contains(&status),
                    "{} {path}: {status}",
                    r.method
                );
            } else {
                assert_eq!(status, 200, "{} {path}: {body}", r.method);
            }
        } else {
            assert!(
                status >= 400,
                "{} {path} with an empty body: {status} {body}",
                r.method
            );
        }
        // (A 404 may echo the id the caller sent; any other id of A's is a leak.)
        for leaked in ids.iter().filter(|i| !path.contains(i.as_str())) {
            assert!(
                !body.contains(leaked.as_str()),
                "{} {path} shows {leaked}: {body}",
                r.method
            );
        }
        checked += 1;
    }
    assert!(checked > 50, "{checked} routes");
    let after = snapshot_of(&c, &a_key, &watched).await;
    assert_eq!(before, after, "project A's data is unchanged");

    // Public images (the default for operators' images) are every project's to see and use,
    // and still only their project's to remove.
    a.image_create(&cloud_api::CreateImageRequest {
        name: "shared".into(),
        path: "/var/lib/images/shared.qcow2".into(),
        format: cloud_api::ImageFormat::Qcow2,
        kernel: None,
        initrd: None,
        cmdline: None,
        public: None,
    })
    .await
    .unwrap();
    let b = cloud_api::Client::new(&c.http_url(), Some(b_key.clone())).unwrap();
    let shared = b.image_get("shared").await.unwrap();
    assert!(shared.public);
    let names: Vec<String> = b
        .image_list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(
        names,
        vec!["shared".to_string()],
        "A's private image stays A's"
    );
    assert_eq!(
        b.image_delete("shared").await.unwrap_err().status(),
        Some(403)
    );
}
