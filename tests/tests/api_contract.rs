//! The public contract through real HTTP: authentication, the error envelope with the right
//! status and a message naming the field, request ids, and that bad input writes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{ErrorCode, ErrorEnvelope, InstanceStatus, Method};
use cloud_tests::{Cluster, busybox};

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    content_type: &'static str,
    status: u16,
    code: ErrorCode,
    mentions: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    status: u16,
    code: ErrorCode,
    mentions: &'static str,
) -> Case {
    Case {
        what,
        method,
        path,
        body,
        content_type: "application/json",
        status,
        code,
        mentions,
    }
}

#[tokio::test]
async fn bad_input_gets_the_envelope_and_changes_nothing() {
    let c = Cluster::start().await;
    let _node = c.fake_node("node-1").await;
    let client = c.client();
    client
        .instance_create(&busybox("web", &["sleep", "1000"]))
        .await
        .unwrap();
    c.wait_instance("web", cloud_api::InstanceStatus::Running)
        .await;
    client
        .image_create(&cloud_api::CreateImageRequest {
            name: "debian".into(),
            path: "/var/lib/images/debian.qcow2".into(),
            format: cloud_api::ImageFormat::Qcow2,
            kernel: None,
            initrd: None,
            cmdline: None,
            public: None,
        })
        .await
        .unwrap();
    let before = client.instance_list().await.unwrap();

    let post = Method::POST;
    let get = Method::GET;
    let cases = vec![
        case(
            "malformed JSON",
            post.clone(),
            "/v1/instances",
            Some("{\"image\": "),
            400,
            ErrorCode::InvalidRequest,
            "malformed JSON",
        ),
        case(
            "trailing garbage",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"x","cpu_millis":1,"memory_mb":64} x"#),
            400,
            ErrorCode::InvalidRequest,
            "malformed",
        ),
        case(
            "unknown field",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"x","cpu_millis":100,"memory_mb":64,"gpus":1}"#),
            422,
            ErrorCode::InvalidRequest,
            "gpus",
        ),
        case(
            "missing field",
            post.clone(),
            "/v1/instances",
            Some(r#"{"cpu_millis":100,"memory_mb":64}"#),
            422,
            ErrorCode::InvalidRequest,
            "image",
        ),
        case(
            "negative size",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"x","cpu_millis":-1,"memory_mb":64}"#),
            422,
            ErrorCode::InvalidRequest,
            "cpu_millis",
        ),
        case(
            "absurd memory",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"x","cpu_millis":100,"memory_mb":999999999999}"#),
            422,
            ErrorCode::InvalidRequest,
            "memory_mb",
        ),
        case(
            "zero cpu",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"x","cpu_millis":0,"memory_mb":64}"#),
            422,
            ErrorCode::InvalidRequest,
            "cpu_millis",
        ),
        case(
            "wrong type",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"x","cpu_millis":"lots","memory_mb":64}"#),
            422,
            ErrorCode::InvalidRequest,
            "cpu_millis",
        ),
        case(
            "bad restart policy",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"x","cpu_millis":1,"memory_mb":64,"restart_policy":"sometimes"}"#),
            422,
            ErrorCode::InvalidRequest,
            "restart_policy",
        ),
        case(
            "bad name",
            post.clone(),
            "/v1/instances",
            Some(r#"{"name":"Not A Name","image":"x","cpu_millis":1,"memory_mb":64}"#),
            422,
            ErrorCode::InvalidRequest,
            "name",
        ),
        case(
            "bad env name",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"x","cpu_millis":1,"memory_mb":64,"env":{"1X":"y"}}"#),
            422,
            ErrorCode::InvalidRequest,
            "env",
        ),
        case(
            "empty image",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"","cpu_millis":1,"memory_mb":64}"#),
            422,
            ErrorCode::InvalidRequest,
            "image",
        ),
        case(
            "duplicate name",
            post.clone(),
            "/v1/instances",
            Some(r#"{"name":"web","image":"local/busybox:latest","cpu_millis":1,"memory_mb":64}"#),
            409,
            ErrorCode::AlreadyExists,
            "web",
        ),
        case(
            "no capacity",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"local/busybox:latest","cpu_millis":500000,"memory_mb":64}"#),
            409,
            ErrorCode::InsufficientCapacity,
            "lacks CPU",
        ),
        case(
            "VM without a libvirt node",
            post.clone(),
            "/v1/instances",
            Some(r#"{"kind":"vm","image":"debian","cpu_millis":100,"memory_mb":64}"#),
            409,
            ErrorCode::InsufficientCapacity,
            "libvirt",
        ),
        case(
            "VM of an unknown image",
            post.clone(),
            "/v1/instances",
            Some(r#"{"kind":"vm","image":"ghost","cpu_millis":100,"memory_mb":64}"#),
            422,
            ErrorCode::InvalidRequest,
            "image",
        ),
        case(
            "VM with a command",
            post.clone(),
            "/v1/instances",
            Some(
                r#"{"kind":"vm","image":"debian","command":["sh"],"cpu_millis":100,"memory_mb":64}"#,
            ),
            422,
            ErrorCode::InvalidRequest,
            "command",
        ),
        case(
            "VM volume at a mount path",
            post.clone(),
            "/v1/instances",
            Some(
                r#"{"kind":"vm","image":"debian","volumes":[{"volume":"v","mount_path":"/data"}],"cpu_millis":100,"memory_mb":64}"#,
            ),
            422,
            ErrorCode::InvalidRequest,
            "volumes[0].mount_path",
        ),
        case(
            "container with user_data",
            post.clone(),
            "/v1/instances",
            Some(r#"{"image":"busybox","user_data":"x","cpu_millis":100,"memory_mb":64}"#),
            422,
            ErrorCode::InvalidRequest,
            "user_data",
        ),
        case(
            "image with a relative path",
            post.clone(),
            "/v1/images",
            Some(r#"{"name":"rel","path":"images/x.qcow2"}"#),
            422,
            ErrorCode::InvalidRequest,
            "path",
        ),
        case(
            "image of an unknown format",
            post.clone(),
            "/v1/images",
            Some(r#"{"name":"fmt","path":"/x.img","format":"vmdk"}"#),
            422,
            ErrorCode::InvalidRequest,
            "format",
        ),
        case(
            "unknown id",
            get.clone(),
            "/v1/instances/0190a000-0000-7000-8000-000000000000",
            None,
            404,
            ErrorCode::NotFound,
            "not found",
        ),
        case(
            "unknown name",
            get.clone(),
            "/v1/instances/nope",
            None,
            404,
            ErrorCode::NotFound,
            "nope",
        ),
        case(
            "unknown node",
            get.clone(),
            "/v1/nodes/nope",
            None,
            404,
            ErrorCode::NotFound,
            "nope",
        ),
        case(
            "stop unknown",
            post.clone(),
            "/v1/instances/nope/stop",
            Some("{}"),
            404,
            ErrorCode::NotFound,
            "nope",
        ),
        case(
            "delete unknown",
            Method::DELETE,
            "/v1/instances/nope",
            None,
            404,
            ErrorCode::NotFound,
            "nope",
        ),
        case(
            "bad limit",
            get.clone(),
            "/v1/instances?limit=0",
            None,
            422,
            ErrorCode::InvalidRequest,
            "limit",
        ),
        case(
            "bad cursor",
            get.clone(),
            "/v1/instances?cursor=xyz",
            None,
            400,
            ErrorCode::InvalidRequest,
            "cursor",
        ),
        case(
            "unknown query parameter",
            get.clone(),
            "/v1/instances?colour=red",
            None,
            400,
            ErrorCode::InvalidRequest,
            "colour",
        ),
        case(
            "unknown route",
            get.clone(),
            "/v1/teapots",
            None,
            404,
            ErrorCode::NotFound,
            "endpoint",
        ),
        case(
            "wrong method",
            Method::PUT,
            "/v1/instances",
            None,
            405,
            ErrorCode::InvalidRequest,
            "method",
        ),
        Case {
            content_type: "text/plain",
            ..case(
                "not JSON content type",
                post.clone(),
                "/v1/instances",
                Some("{}"),
                400,
                ErrorCode::InvalidRequest,
                "Content-Type",
            )
        },
    ];
    for case in cases {
        let mut rb = client.raw(case.method.clone(), case.path);
        if let Some(body) = case.body {
            rb = rb.header("content-type", case.content_type).body(body);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let header_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap();
        assert_eq!(status, case.status, "{}: {text}", case.what);
        let env: ErrorEnvelope = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not an envelope ({e}): {text}", case.what));
        assert_eq!(env.error.code, case.code, "{}: {text}", case.what);
        assert!(
            env.error.message.contains(case.mentions),
            "{}: message should mention {:?}: {text}",
            case.what,
            case.mentions
        );
        assert_eq!(
            header_id.as_deref(),
            Some(env.request_id.as_str()),
            "{}: request id in header and body",
            case.what
        );
    }
    // Telemetry (usage) arrives on its own timer: it is not a write.
    let stored = |mut v: Vec<cloud_api::Instance>| {
        v.iter_mut().for_each(|i| i.usage = None);
        v
    };
    let after = client.instance_list().await.unwrap();
    assert_eq!(
        stored(before),
        stored(after),
        "bad requests must not write anything"
    );
}

#[tokio::test]
async fn api_keys_are_required_and_checked() {
    let c = Cluster::start().await;
    for key in [
        None,
        Some("tck_000000000000_forged"),
        Some("garbage"),
        Some(""),
    ] {
        let err = c.client_with_key(key).instance_list().await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{key:?}: {err}");
        assert_eq!(err.status(), Some(401));
    }
    // A real key with one character changed.
    let mut forged = c.admin_key();
    let last = forged.pop().unwrap();
    forged.push(if last == 'a' { 'b' } else { 'a' });
    assert_eq!(
        c.client_with_key(Some(&forged))
            .node_list()
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    // Bearer works too.
    let resp = c
        .client_with_key(None)
        .raw(Method::GET, "/v1/nodes")
        .header("authorization", format!("Bearer {}", c.admin_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Health endpoints need no key; every response has a request id, and a client-chosen
    // one is echoed.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = c
            .client_with_key(None)
            .raw(Method::GET, path)
            .header("x-request-id", "my-trace-1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert_eq!(resp.headers().get("x-request-id").unwrap(), "my-trace-1");
    }
}

#[tokio::test]
async fn metrics_count_requests_and_states() {
    let c = Cluster::start().await;
    let _node = c.fake_node("node-1").await;
    let client = c.client();
    client
        .instance_create(&busybox("m1", &["sleep", "100"]))
        .await
        .unwrap();
    c.wait_instance("m1", InstanceStatus::Running).await;
    let text = c
        .client_with_key(None)
        .raw(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"thecloud_http_requests_total{method="POST",route="/v1/instances",status="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"thecloud_nodes{status="ready"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"thecloud_instances{status="running"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("thecloud_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn lists_page_with_a_stable_cursor() {
    let c = Cluster::start().await;
    let _node = c.fake_node("node-1").await;
    let client = c.client();
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(
            client
                .instance_create(&busybox(&format!("p{i}"), &["sleep", "100"]))
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut query = cloud_api::PageQuery {
        limit: Some(2),
        cursor: None,
    };
    loop {
        let page = client.instance_list_page(&query).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|i| i.id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, created, "every item once, in creation order");
}

#[tokio::test]
async fn only_operators_register_or_remove_images() {
    let c = Cluster::start().await;
    let admin = c.client();
    let member = cloud_api::Client::new(&c.http_url(), Some(c.member_key().await)).unwrap();
    let req = cloud_api::CreateImageRequest {
        name: "debian".into(),
        path: "/var/lib/images/debian.qcow2".into(),
        format: cloud_api::ImageFormat::Qcow2,
        kernel: None,
        initrd: None,
        cmdline: None,
        public: None,
    };
    let e = member.image_create(&req).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("image:write"), "{e}");
    admin.image_create(&req).await.unwrap();
    // Tenants may use (list, show) images, not remove them.
    assert_eq!(member.image_list().await.unwrap().len(), 1);
    let e = member.image_delete("debian").await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(
        admin.image_get("debian").await.is_ok(),
        "the refusal changed nothing"
    );
}
