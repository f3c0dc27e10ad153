//! Identity and access end to end: built-in roles enforced on every route of the route table
//! (deny by default), API keys (create, rotate with an overlap, revoke) whose clear text is
//! never stored, password login, role bindings managed by project admins only, and the audit
//! log of mutating requests and refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_scheduler::authz::Access;
use cloud_scheduler::http::routes::Gate;
use cloud_tests::{Cluster, busybox};
use reqwest::Method;
use serde_json::{Value, json};

struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    fn new(c: &Cluster) -> Self {
        Self {
            base: c.http_url(),
            http: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

#[tokio::test]
async fn every_route_denies_a_key_without_the_permission() {
    let c = Cluster::start().await;
    let h = Http::new(&c);
    // A user with no role anywhere: every permission-gated route refuses it.
    let app = &c.running().app;
    let project = app.default_project.0.to_string();
    app.user_create(cloud_api::CreateUserRequest {
        email: "nobody@test.example".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_, nobody) = app
        .user_key_create(
            "nobody@test.example",
            cloud_api::CreateApiKeyRequest {
                name: "k".into(),
                project: Some(project),
                expires_in_seconds: None,
            },
        )
        .await
        .unwrap();
    let viewer = c.key_with_role("viewer").await;
    let routes = cloud_scheduler::http::v1_routes();
    let table = routes.table().to_vec();
    assert!(table.len() > 40, "the whole table: {}", table.len());
    let id = uuid::Uuid::now_v7().to_string();
    for r in &table {
        let path = format!(
            "/v1{}",
            r.path
                .replace("{id}", &id)
                .replace("{subnet}", &id)
                .replace("{group}", &id)
        );
        let method = Method::from_bytes(r.method.as_bytes()).unwrap();
        let (status, body) = h
            .call(Some(&nobody), method.clone(), &path, Some(json!({})))
            .await;
        match r.gate {
            Gate::Key(Access::Need(p)) => {
                assert_eq!(status, 403, "{} {path} needs {p}: {body}", r.method);
                assert!(body.to_string().contains(&p.to_string()), "{body}");
                // And no key at all is a 401.
                let (status, _) = h.call(None, method.clone(), &path, None).await;
                assert_eq!(status, 401, "{} {path} without a key", r.method);
                // A viewer may read, never write.
                let (status, _) = h.call(Some(&viewer), method, &path, Some(json!({}))).await;
                let reads = [
                    "instance", "volume", "snapshot", "network", "image", "event",
                ];
                if p.action == "read" && reads.contains(&p.resource) {
                    assert_ne!(status, 403, "a viewer reads {path}");
                } else {
                    assert_eq!(status, 403, "a viewer may not {} {path}", r.method);
                }
            }
            Gate::Key(Access::AnyCaller) => {
                assert_ne!(status, 403, "{} {path}: {body}", r.method);
                assert_ne!(status, 401, "{} {path}: {body}", r.method);
            }
            Gate::Public => assert_ne!(status, 401, "{} {path} is public", r.method),
        }
    }
}

#[tokio::test]
async fn roles_keys_login_and_audit() {
    let c = Cluster::start().await;
    let _node = c.fake_node_with("n1", |_| {}).await;
    let h = Http::new(&c);
    let admin_key = c.admin_key();
    let member = c.member_key().await;
    let viewer = c.key_with_role("viewer").await;

    // RBAC: a viewer cannot write, a member cannot manage bindings, only operators see nodes.
    let launch = serde_json::to_value(busybox("web", &["sleep", "1000"])).unwrap();
    let (s, body) = h
        .call(
            Some(&viewer),
            Method::POST,
            "/v1/instances",
            Some(launch.clone()),
        )
        .await;
    assert_eq!(s, 403, "{body}");
    let (s, _) = h.call(Some(&member), Method::GET, "/v1/nodes", None).await;
    assert_eq!(s, 403);
    let (s, _) = h
        .call(
            Some(&member),
            Method::POST,
            "/v1/bindings",
            Some(json!({"user": "x@y.org", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = h.call(Some(&member), Method::GET, "/v1/audit", None).await;
    assert_eq!(s, 403, "members do not read the audit log");
    let (s, body) = h
        .call(Some(&admin_key), Method::GET, "/v1/nodes", None)
        .await;
    assert_eq!(s, 200, "{body}");

    // A project admin makes a user a viewer: the user (logging in) can read, not write.
    let (s, body) = h
        .call(
            Some(&admin_key),
            Method::POST,
            "/v1/users",
            Some(json!({"email": "Bob@Example.org", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = h
        .call(
            Some(&admin_key),
            Method::POST,
            "/v1/bindings",
            Some(json!({"user": "bob@example.org", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = h
        .call(
            None,
            Method::POST,
            "/v1/auth/login",
            Some(json!({"email": "bob@example.org", "password": "wrong password!"})),
        )
        .await;
    assert_eq!(s, 401, "{body}");
    let (s, body) = h
        .call(
            None,
            Method::POST,
            "/v1/auth/login",
            Some(json!({"email": "nobody@example.org", "password": "whatever it is"})),
        )
        .await;
    assert_eq!(s, 401, "unknown emails look the same: {body}");
    let (s, login) = h
        .call(
            None,
            Method::POST,
            "/v1/auth/login",
            Some(json!({"email": "bob@example.org", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(s, 201, "{login}");
    let bob = login["key"].as_str().unwrap().to_string();
    assert!(
        login["expires_at"].is_string(),
        "login keys expire: {login}"
    );
    let (s, _) = h.call(Some(&bob), Method::GET, "/v1/instances", None).await;
    assert_eq!(s, 200);
    let (s, _) = h
        .call(
            Some(&bob),
            Method::POST,
            "/v1/instances",
            Some(launch.clone()),
        )
        .await;
    assert_eq!(s, 403);
    // Registration is off unless configured.
    let (s, body) = h
        .call(
            None,
            Method::POST,
            "/v1/auth/register",
            Some(json!({"email": "eve@example.org", "password": "correct horse battery"})),
        )
        .await;
    assert_eq!(s, 403, "{body}");

    // Bob's own keys: make one, rotate it with no overlap, revoke the new one.
    let (s, k1) = h
        .call(
            Some(&bob),
            Method::POST,
            "/v1/auth/keys",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(s, 201, "{k1}");
    let key1 = k1["key"].as_str().unwrap().to_string();
    let (s, _) = h.call(Some(&key1), Method::GET, "/v1/volumes", None).await;
    assert_eq!(s, 200);
    let (s, listed) = h.call(Some(&bob), Method::GET, "/v1/auth/keys", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "the login key and ci: {listed}"
    );
    assert!(
        !listed.to_string().contains(&key1),
        "listing never shows a secret"
    );
    let path = format!("/v1/auth/keys/{}/rotate", k1["id"].as_str().unwrap());
    let (s, k2) = h
        .call(
            Some(&bob),
            Method::POST,
            &path,
            Some(json!({"overlap_seconds": 0})),
        )
        .await;
    assert_eq!(s, 201, "{k2}");
    let key2 = k2["key"].as_str().unwrap().to_string();
    let (s, _) = h.call(Some(&key1), Method::GET, "/v1/volumes", None).await;
    assert_eq!(s, 401, "the rotated key stopped (no overlap)");
    let (s, _) = h.call(Some(&key2), Method::GET, "/v1/volumes", None).await;
    assert_eq!(s, 200);
    let path = format!("/v1/auth/keys/{}", k2["id"].as_str().unwrap());
    let (s, _) = h.call(Some(&bob), Method::DELETE, &path, None).await;
    assert_eq!(s, 204);
    let (s, _) = h.call(Some(&key2), Method::GET, "/v1/volumes", None).await;
    assert_eq!(s, 401, "a revoked key stops at once");
    // Another user's key id is not found, not forbidden.
    let (s, _) = h
        .call(
            Some(&member),
            Method::DELETE,
            &format!("/v1/auth/keys/{}", k1["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 404);

    // Audit: the admin's binding, bob's refused create and the failed logins.
    let (s, created) = h
        .call(Some(&member), Method::POST, "/v1/instances", Some(launch))
        .await;
    assert_eq!(s, 201, "{created}");
    let (s, audit) = h
        .call(Some(&admin_key), Method::GET, "/v1/audit?limit=100", None)
        .await;
    assert_eq!(s, 200, "{audit}");
    let rows = audit["items"].as_array().unwrap();
    let find = |action: &str, outcome: &str| {
        rows.iter()
            .find(|r| r["action"] == action && r["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {action} {outcome} in {audit}"))
    };
    let create = find("POST /v1/instances", "success");
    assert_eq!(create["resource_id"], created["id"], "{create}");
    assert_eq!(create["status"], 201);
    assert!(create["user_id"].is_string() && create["request_id"].is_string());
    find("POST /v1/instances", "denied");
    find("POST /v1/bindings", "success");
    let (s, only) = h
        .call(
            Some(&admin_key),
            Method::GET,
            "/v1/audit?outcome=denied&resource_type=instance",
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(
        only["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "denied")
    );

    // No clear key anywhere in the database (keys, audit rows).
    let db = std::fs::read(c.dir.path().join("scheduler").join("thecloud.db")).unwrap();
    let wal =
        std::fs::read(c.dir.path().join("scheduler").join("thecloud.db-wal")).unwrap_or_default();
    for key in [&admin_key, &member, &viewer, &bob, &key1, &key2] {
        // tc_<prefix>_<secret>: the secret itself may contain '_'.
        let secret = key.splitn(3, '_').nth(2).unwrap().as_bytes();
        assert!(secret.len() >= 40);
        for bytes in [&db, &wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "a clear key is stored"
            );
        }
    }
    // Failed logins are audited with the attempted email, in no project: operators see them.
    let (s, logins) = h
        .call(
            Some(&admin_key),
            Method::GET,
            "/v1/audit?resource_type=login&outcome=denied",
            None,
        )
        .await;
    assert_eq!(s, 200, "{logins}");
    let rows = logins["items"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["resource_id"] == "bob@example.org" && r["status"] == 401),
        "{logins}"
    );
    let (s, theirs) = h
        .call(Some(&admin_key), Method::GET, "/v1/audit?limit=1000", None)
        .await;
    assert_eq!(s, 200, "{theirs}");
    let audit = theirs.to_string();
    assert!(
        audit.contains("bob@example.org"),
        "the failed logins are there"
    );
    for password in ["correct horse", "wrong password!", "whatever it is"] {
        assert!(!audit.contains(password), "no password in the audit log");
    }
    // Failed logins also count in the metrics.
    let failures = app_failures(&c).await;
    assert!(failures >= 2, "{failures}");
}

async fn app_failures(c: &Cluster) -> usize {
    let metrics = reqwest::get(format!("{}/metrics", c.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("thecloud_auth_failures_total{reason=\"unauthenticated\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

#[tokio::test]
async fn keys_over_their_rate_get_429_with_retry_after() {
    let c = Cluster::start_with(|cfg| {
        cfg.rate_limit_per_second = 1.0;
        cfg.rate_limit_burst = 3;
    })
    .await;
    let h = Http::new(&c);
    let member = c.member_key().await;
    let other = c.member_key().await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            h.call(Some(&member), Method::GET, "/v1/volumes", None)
                .await
                .0,
        );
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[4], 429, "{statuses:?}");
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/volumes", c.http_url()))
        .header("X-API-Key", &member)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another key is not affected; the bootstrap admin key is never limited.
    assert_eq!(
        h.call(Some(&other), Method::GET, "/v1/volumes", None)
            .await
            .0,
        200
    );
    for _ in 0..10 {
        assert_eq!(
            h.call(Some(&c.admin_key()), Method::GET, "/v1/volumes", None)
                .await
                .0,
            200
        );
    }
    // Logins: 10 attempts per account, then 429 (right or wrong password alike).
    let mut last = 0;
    for _ in 0..11 {
        last = h
            .call(
                None,
                Method::POST,
                "/v1/auth/login",
                Some(json!({"email": "x@example.org", "password": "wrong password"})),
            )
            .await
            .0;
    }
    assert_eq!(last, 429);
    let metrics = reqwest::get(format!("{}/metrics", c.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("thecloud_rate_limited_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}
