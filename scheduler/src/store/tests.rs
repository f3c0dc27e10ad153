//! Store tests, run against SQLite and against a real PostgreSQL server (a throwaway database
//! per test, created from `THECLOUD_TEST_DATABASE_URL`).

use super::*;
use chrono::Utc;
use cloud_api::{InstanceId, NodeId, ProjectId};
use std::future::Future;

/// A PostgreSQL database that exists for one test.
struct PgScratch {
    admin_url: String,
    name: String,
}

impl PgScratch {
    async fn create() -> Option<(Self, Store)> {
        let Ok(admin_url) = std::env::var("THECLOUD_TEST_DATABASE_URL") else {
            if std::env::var("THECLOUD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!("THECLOUD_REQUIRE_POSTGRES=1 but THECLOUD_TEST_DATABASE_URL is not set");
            }
            eprintln!(
                "skipping the PostgreSQL half of this test: THECLOUD_TEST_DATABASE_URL is not set (./scripts/test.sh sets it)"
            );
            return None;
        };
        let name = format!("thecloud_t_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPool::connect(&admin_url)
            .await
            .expect("connect to the test PostgreSQL server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create a scratch database");
        admin.close().await;
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("database URL with a path");
        let store = Store::connect(&format!("{base}/{name}"))
            .await
            .expect("connect scratch db");
        Some((Self { admin_url, name }, store))
    }

    async fn drop_db(self) {
        if let Ok(admin) = PgPool::connect(&self.admin_url).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&admin)
            .await;
            admin.close().await;
        }
    }
}

/// Runs `f` on a fresh SQLite store and on a fresh PostgreSQL store.
async fn on_both<F, Fut>(f: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::connect(&Store::sqlite_url_for(dir.path()))
        .await
        .unwrap();
    f(sqlite.clone()).await;
    sqlite.close().await;
    if let Some((scratch, pg)) = PgScratch::create().await {
        f(pg.clone()).await;
        pg.close().await;
        scratch.drop_db().await;
    }
}

async fn enroll(store: &Store, name: &str) -> NodeId {
    let token = format!("tok-{}", uuid::Uuid::new_v4());
    store
        .join_token_insert(&NewJoinToken {
            token_hash: token.clone().into_bytes(),
            is_bootstrap: false,
            expires_at: None,
            max_uses: 1,
        })
        .await
        .unwrap();
    let id = NodeId::new();
    store
        .join_token_consume_and_insert_node(token.as_bytes(), id, name, "host", "serial")
        .await
        .unwrap();
    id
}

fn facts(cpu: u64, mem: u64) -> NodeFacts {
    NodeFacts {
        hostname: "host-1".into(),
        cpu_millis: cpu,
        memory_mb: mem,
        disk_gb: 50,
        drivers: vec!["docker".into()],
        labels: [("zone".to_string(), "a".to_string())].into(),
        agent_version: "0.1.0".into(),
        underlay_ip: None,
        underlay_mtu: 0,
    }
}

fn new_instance(project: ProjectId, name: &str, cpu: u64, mem: u64) -> NewInstance {
    NewInstance {
        id: InstanceId::new(),
        project_id: project,
        name: name.into(),
        kind: "container".into(),
        image: "local/busybox:latest".into(),
        command: vec!["sh".into(), "-c".into(), "echo hi".into()],
        env: [("A".to_string(), "1".to_string())].into(),
        cpu_millis: cpu,
        memory_mb: mem,
        restart_policy: "always".into(),
        node_selector: Default::default(),
        placement_group: None,
        placement_strategy: None,
        created_at: Utc::now(),
        subnet_id: None,
        private_ip: None,
        mac: None,
        security_groups: Vec::new(),
        volumes: Vec::new(),
        required_node: None,
        vm: None,
    }
}

/// A ready node and its placement generation (what plans are guarded by).
async fn ready_node(store: &Store, name: &str) -> (NodeId, i64) {
    let id = enroll(store, name).await;
    store
        .node_update_facts(id, &facts(2000, 4096))
        .await
        .unwrap();
    let generation = store.node_get(id).await.unwrap().node.placement_generation;
    (id, generation)
}

#[test]
fn migrations_are_in_step_for_both_databases() {
    let names = |dir: &str| {
        let mut v: Vec<String> = std::fs::read_dir(format!(
            "{}/../migrations/{dir}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
        v.sort();
        v
    };
    assert_eq!(names("sqlite"), names("postgres"));
}

#[tokio::test]
async fn join_tokens_are_single_use_and_enrollment_is_atomic() {
    on_both(|store| async move {
        let token = b"hash-of-token".to_vec();
        store
            .join_token_insert(&NewJoinToken {
                token_hash: token.clone(),
                is_bootstrap: true,
                expires_at: None,
                max_uses: 1,
            })
            .await
            .unwrap();
        assert!(store.join_token_is_usable(&token).await.unwrap());
        let first = NodeId::new();
        // A name clash leaves the token unused.
        let taken = enroll(&store, "taken").await;
        let err = store
            .join_token_consume_and_insert_node(&token, first, "taken", "h", "s")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Duplicate), "{err:?}");
        assert!(store.join_token_is_usable(&token).await.unwrap());
        assert!(
            store
                .join_token_consume_and_insert_node(&token, first, "n1", "h", "s")
                .await
                .unwrap()
        );
        let err = store
            .join_token_consume_and_insert_node(&token, NodeId::new(), "n2", "h", "s")
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound), "{err:?}");
        assert!(!store.join_token_is_usable(&token).await.unwrap());
        // Expired tokens are refused.
        let old = b"expired".to_vec();
        store
            .join_token_insert(&NewJoinToken {
                token_hash: old.clone(),
                is_bootstrap: false,
                expires_at: Some(Utc::now() - chrono::Duration::seconds(1)),
                max_uses: 5,
            })
            .await
            .unwrap();
        assert!(matches!(
            store
                .join_token_consume_and_insert_node(&old, NodeId::new(), "n3", "h", "s")
                .await,
            Err(StoreError::NotFound)
        ));
        let node = store.node_get(first).await.unwrap();
        assert_eq!(node.node.status, "down", "enrolled but not yet connected");
        assert_ne!(taken, first);
    })
    .await;
}

#[tokio::test]
async fn multi_use_tokens_allow_exactly_their_uses() {
    on_both(|store| async move {
        let token = b"fleet".to_vec();
        store
            .join_token_insert(&NewJoinToken {
                token_hash: token.clone(),
                is_bootstrap: false,
                expires_at: None,
                max_uses: 3,
            })
            .await
            .unwrap();
        for i in 0..3 {
            store
                .join_token_consume_and_insert_node(
                    &token,
                    NodeId::new(),
                    &format!("n{i}"),
                    "h",
                    "s",
                )
                .await
                .unwrap();
        }
        assert!(!store.join_token_is_usable(&token).await.unwrap());
        assert!(matches!(
            store
                .join_token_consume_and_insert_node(&token, NodeId::new(), "n9", "h", "s")
                .await,
            Err(StoreError::NotFound)
        ));
    })
    .await;
}

#[tokio::test]
async fn drains_survive_the_agent_going_down_and_keep_the_down_grace() {
    on_both(|store| async move {
        let (node, _) = ready_node(&store, "maint").await;
        let status = |store: Store| async move {
            let n = store.node_get(node).await.unwrap().node;
            (n.status, n.drain)
        };
        // Maintenance drain, then the agent goes away and returns: still drained.
        assert!(
            store
                .node_set_drain(node, Some("keep_instances"), "ready")
                .await
                .unwrap()
        );
        assert!(
            !store
                .node_set_drain(node, Some("keep_instances"), "ready")
                .await
                .unwrap()
        );
        assert_eq!(
            status(store.clone()).await,
            ("draining".into(), Some("keep_instances".into()))
        );
        assert!(store.node_mark_down(node, "agent stopped").await.unwrap());
        assert_eq!(
            status(store.clone()).await,
            ("down".into(), Some("keep_instances".into()))
        );
        let down_since = store.node_get(node).await.unwrap().node.status_changed_at;
        assert!(down_since.is_some(), "going down is timed");
        assert_eq!(
            store.node_set_ready_if_down(node).await.unwrap().as_deref(),
            Some("draining")
        );
        assert_eq!(
            status(store.clone()).await,
            ("draining".into(), Some("keep_instances".into()))
        );
        store
            .node_update_facts(node, &facts(2000, 4096))
            .await
            .unwrap();
        assert_eq!(
            status(store.clone()).await.0,
            "draining",
            "a hello keeps the drain"
        );
        assert!(
            store.node_list_unavailable().await.unwrap().is_empty(),
            "nothing to move off a node drained with keep_instances"
        );
        // Switching the mode is a change; undrain clears it.
        assert!(
            store
                .node_set_drain(node, Some("evacuate"), "ready")
                .await
                .unwrap()
        );
        assert_eq!(status(store.clone()).await.1.as_deref(), Some("evacuate"));
        assert_eq!(
            store.node_list_unavailable().await.unwrap().len(),
            1,
            "evacuate: its instances move"
        );
        assert!(store.node_set_drain(node, None, "ready").await.unwrap());
        assert!(!store.node_set_drain(node, None, "ready").await.unwrap());
        assert_eq!(status(store.clone()).await, ("ready".into(), None));
        // A down node drained to keep its instances stays down with its grace clock running.
        assert!(store.node_mark_down(node, "agent stopped").await.unwrap());
        let down_since = store.node_get(node).await.unwrap().node.status_changed_at;
        assert!(down_since.is_some(), "going down is timed");
        assert!(
            store
                .node_set_drain(node, Some("keep_instances"), "ready")
                .await
                .unwrap()
        );
        let n = store.node_get(node).await.unwrap().node;
        assert_eq!(
            (n.status.as_str(), n.status_changed_at),
            ("down", down_since)
        );
        assert!(store.node_set_drain(node, None, "down").await.unwrap());
        let n = store.node_get(node).await.unwrap().node;
        assert_eq!(
            (n.status.as_str(), n.status_changed_at, n.drain),
            ("down", down_since, None)
        );
        let unavailable = store.node_list_unavailable().await.unwrap();
        assert_eq!(unavailable.len(), 1);
        assert_eq!(unavailable[0].2, "down");
    })
    .await;
}

#[tokio::test]
async fn hello_makes_a_node_ready_and_lists_page_in_id_order() {
    on_both(|store| async move {
        let mut ids = Vec::new();
        for i in 0..5 {
            let (id, _) = ready_node(&store, &format!("node-{i}")).await;
            ids.push(id);
        }
        let n = store.node_get_by_name("node-3").await.unwrap();
        assert_eq!(n.node.status, "ready");
        assert_eq!(n.node.cpu_millis, 2000);
        assert_eq!(n.node.labels.0.get("zone").map(String::as_str), Some("a"));
        let page1 = store.node_list(None, 2).await.unwrap();
        let page2 = store
            .node_list(Some(page1[1].node.id.into()), 2)
            .await
            .unwrap();
        let page3 = store
            .node_list(Some(page2[1].node.id.into()), 2)
            .await
            .unwrap();
        let seen: Vec<NodeId> = page1
            .iter()
            .chain(&page2)
            .chain(&page3)
            .map(|n| n.node.id.into())
            .collect();
        assert_eq!(seen, ids);
        assert!(matches!(
            store.node_update_facts(NodeId::new(), &facts(1, 1)).await,
            Err(StoreError::NotFound)
        ));
    })
    .await;
}

#[tokio::test]
async fn placement_writes_are_guarded_by_node_generation() {
    on_both(|store| async move {
        let project = store.project_ensure("p").await.unwrap();
        let (node, pgen) = ready_node(&store, "n").await;
        let desired_gen = store.node_generation(node).await.unwrap();
        let a = new_instance(project, "a", 500, 512);
        assert!(matches!(
            store.instance_insert_placed(&a, node, pgen + 7).await,
            Err(StoreError::Conflict)
        ));
        store.instance_insert_placed(&a, node, pgen).await.unwrap();
        // The placement generation moved: a plan made on the old snapshot must re-plan.
        let b = new_instance(project, "b", 500, 512);
        assert!(matches!(
            store.instance_insert_placed(&b, node, pgen).await,
            Err(StoreError::Conflict)
        ));
        let now = store.node_get(node).await.unwrap();
        assert_eq!(now.node.placement_generation, pgen + 1);
        assert_eq!(
            now.node.generation,
            desired_gen + 1,
            "the node's desired state changed"
        );
        assert_eq!(now.alloc_cpu_millis, Some(500));
        assert_eq!(now.alloc_memory_mb, Some(512));
        // A duplicate name writes nothing, not even the generation bumps.
        let dup = new_instance(project, "a", 1, 6);
        assert!(matches!(
            store
                .instance_insert_placed(&dup, node, now.node.placement_generation)
                .await,
            Err(StoreError::Duplicate)
        ));
        let after = store.node_get(node).await.unwrap();
        assert_eq!(after.node.generation, now.node.generation);
        assert_eq!(
            after.node.placement_generation,
            now.node.placement_generation
        );
        // Stopping, starting or deleting does not invalidate plans (no capacity is taken).
        store
            .instance_set_desired(project, a.id, "stopped", "stopping")
            .await
            .unwrap();
        let bump = store.node_get(node).await.unwrap();
        assert_eq!(
            bump.node.placement_generation,
            now.node.placement_generation
        );
        // The same name is fine in another project.
        let other = store.project_ensure("other").await.unwrap();
        store
            .instance_insert_placed(
                &new_instance(other, "a", 1, 6),
                node,
                now.node.placement_generation,
            )
            .await
            .unwrap();
        let got = store.instance_get_by_name(project, "a").await.unwrap();
        assert_eq!(got.status, "stopping");
        assert_eq!(got.node_name.as_deref(), Some("n"));
        assert_eq!(got.command.0.len(), 3);
        assert_eq!(got.change_generation, desired_gen + 2);
        // Project isolation in the query itself.
        assert!(matches!(
            store.instance_get(other, got.id.into()).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            store.instance_list(project, None, 10).await.unwrap().len(),
            1
        );
        assert_eq!(store.instance_list_by_node(node).await.unwrap().len(), 2);
    })
    .await;
}

#[tokio::test]
async fn observations_older_than_the_last_change_are_ignored() {
    on_both(|store| async move {
        let project = store.project_ensure("p").await.unwrap();
        let (node, pgen) = ready_node(&store, "n").await;
        let generation = store.node_generation(node).await.unwrap();
        let inst = new_instance(project, "web", 100, 64);
        store
            .instance_insert_placed(&inst, node, pgen)
            .await
            .unwrap();
        let running = InstanceUpdate {
            status: "running".into(),
            status_reason: None,
            runtime_id: Some("c1".into()),
            started_at: Some(Utc::now()),
            exit_code: None,
        };
        let applied = u64::try_from(generation).unwrap();
        assert!(
            !store
                .instance_apply_observation(node, inst.id, applied, &running)
                .await
                .unwrap()
        );
        assert!(
            store
                .instance_apply_observation(node, inst.id, applied + 1, &running)
                .await
                .unwrap()
        );
        // Another node cannot report on it.
        assert!(
            !store
                .instance_apply_observation(NodeId::new(), inst.id, 999, &running)
                .await
                .unwrap()
        );
        store
            .instance_set_desired(project, inst.id, "stopped", "stopping")
            .await
            .unwrap();
        let r = store.instance_get(project, inst.id).await.unwrap();
        assert_eq!(
            (r.desired_state.as_str(), r.status.as_str()),
            ("stopped", "stopping")
        );
        assert_eq!(r.change_generation, generation + 2);
        // A stale "running" report does not undo the stop request.
        assert!(
            !store
                .instance_apply_observation(node, inst.id, applied + 1, &running)
                .await
                .unwrap()
        );
        assert_eq!(
            store.instance_get(project, inst.id).await.unwrap().status,
            "stopping"
        );
    })
    .await;
}

#[tokio::test]
async fn deletion_waits_for_the_agent_unless_the_node_is_down() {
    on_both(|store| async move {
        let project = store.project_ensure("p").await.unwrap();
        let (node, generation) = ready_node(&store, "n").await;
        let a = new_instance(project, "a", 100, 64);
        let b = new_instance(project, "b", 100, 64);
        store
            .instance_insert_placed(&a, node, generation)
            .await
            .unwrap();
        store
            .instance_insert_placed(&b, node, generation + 1)
            .await
            .unwrap();
        assert_eq!(
            store.instance_delete(project, a.id).await.unwrap(),
            DeleteOutcome::Deleting
        );
        let del_gen = store
            .instance_get(project, a.id)
            .await
            .unwrap()
            .change_generation;
        assert!(matches!(
            store
                .instance_set_desired(project, a.id, "running", "starting")
                .await,
            Err(StoreError::Conflict)
        ));
        let applied = u64::try_from(del_gen).unwrap();
        assert!(
            !store
                .instance_confirm_deleted(node, a.id, applied - 1)
                .await
                .unwrap()
        );
        assert!(
            store
                .instance_confirm_deleted(node, a.id, applied)
                .await
                .unwrap()
        );
        assert!(matches!(
            store.instance_get(project, a.id).await,
            Err(StoreError::NotFound)
        ));
        // Down node: instances become lost; deleting then is immediate.
        assert!(store.node_mark_down(node, "no heartbeats").await.unwrap());
        assert!(!store.node_mark_down(node, "no heartbeats").await.unwrap());
        let lost = store.instance_get(project, b.id).await.unwrap();
        assert_eq!(lost.status, "lost");
        assert_eq!(lost.status_reason.as_deref(), Some("no heartbeats"));
        assert_eq!(
            store.instance_delete(project, b.id).await.unwrap(),
            DeleteOutcome::Deleted
        );
        assert_eq!(
            store.node_set_ready_if_down(node).await.unwrap().as_deref(),
            Some("ready")
        );
        assert_eq!(store.node_set_ready_if_down(node).await.unwrap(), None);
        assert!(matches!(
            store.instance_delete(project, b.id).await,
            Err(StoreError::NotFound)
        ));
    })
    .await;
}

#[tokio::test]
async fn keys_projects_counts_and_heartbeats() {
    on_both(|store| async move {
        let p1 = store.project_ensure("default").await.unwrap();
        assert_eq!(store.project_ensure("default").await.unwrap(), p1);
        assert_eq!(store.api_key_count_admin().await.unwrap(), 0);
        let key = NewApiKey {
            id: cloud_api::ids::ApiKeyId::new(),
            project_id: p1,
            name: "admin".into(),
            prefix: "abcdef012345".into(),
            secret_hash: vec![1, 2, 3],
            is_admin: true,
            user_id: None,
            expires_at: None,
        };
        store.api_key_insert(&key).await.unwrap();
        assert!(matches!(
            store.api_key_insert(&key).await,
            Err(StoreError::Duplicate)
        ));
        let got = store.api_key_get_by_prefix("abcdef012345").await.unwrap();
        assert_eq!(got.secret_hash, vec![1, 2, 3]);
        assert!(got.is_admin);
        assert_eq!(store.api_key_count_admin().await.unwrap(), 1);
        let (node, _) = ready_node(&store, "n").await;
        let at = Utc::now();
        store.node_record_heartbeats(&[(node, at)]).await.unwrap();
        let hb = store
            .node_get(node)
            .await
            .unwrap()
            .node
            .last_heartbeat_at
            .unwrap();
        assert!((hb - at).num_milliseconds().abs() < 2);
        let counts = store.node_count_by_status().await.unwrap();
        assert_eq!(
            counts,
            vec![StatusCount {
                status: "ready".into(),
                count: 1
            }]
        );
        store.ping().await.unwrap();
    })
    .await;
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact_url("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
    assert_eq!(
        redact_url("postgres://u@h/db?sslmode=require&password=hunter2&sslpassword=x"),
        "postgres://u@h/db?sslmode=require&password=***&sslpassword=***"
    );
}

#[tokio::test]
async fn desired_state_reads_agree_with_full_records() {
    on_both(|store| async move {
        let project = store.project_ensure("p").await.unwrap();
        let (node, pgen) = ready_node(&store, "n").await;
        let a = new_instance(project, "a", 100, 64);
        let b = new_instance(project, "b", 100, 64);
        store.instance_insert_placed(&a, node, pgen).await.unwrap();
        store
            .instance_insert_placed(&b, node, pgen + 1)
            .await
            .unwrap();
        store.instance_delete(project, b.id).await.unwrap();
        let (generation, light) = store.node_desired_light(node).await.unwrap();
        let (full_gen, full) = store.node_desired_state(node).await.unwrap();
        assert_eq!(generation, full_gen);
        assert_eq!(generation, store.node_generation(node).await.unwrap());
        assert_eq!(
            light.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![a.id.0],
            "deleting instances are not desired"
        );
        assert_eq!(full.len(), 1);
        let states = store.instance_states_by_node(node).await.unwrap();
        assert_eq!(states.len(), 2, "the states include deleting instances");
        let many = store
            .instances_get_many(&[a.id.0, b.id.0, uuid::Uuid::nil()])
            .await
            .unwrap();
        assert_eq!(many.len(), 2);
        assert!(
            many.iter()
                .any(|r| r.id == a.id.0 && r.env.0.get("A").map(String::as_str) == Some("1"))
        );
        // An empty node still has a generation.
        let (empty, _) = ready_node(&store, "m").await;
        let (g, none) = store.node_desired_light(empty).await.unwrap();
        assert!(none.is_empty());
        assert_eq!(g, store.node_generation(empty).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn users_roles_bindings_key_rotation_and_audit() {
    on_both(|store| async move {
        let p1 = store.project_ensure("default").await.unwrap();
        let p2 = store.project_insert("other").await.unwrap();
        store
            .roles_ensure_builtin(&[("viewer", vec!["instance:read".into()])])
            .await
            .unwrap();
        // Idempotent, and updates the grants in place.
        store
            .roles_ensure_builtin(&[("viewer", vec!["instance:read".into(), "volume:read".into()])])
            .await
            .unwrap();
        let u = store
            .user_insert(&NewUser {
                id: uuid::Uuid::now_v7(),
                email: "ann@example.org".into(),
                name: "Ann".into(),
                password_hash: None,
                is_operator: false,
            })
            .await
            .unwrap();
        let dup = NewUser {
            id: uuid::Uuid::now_v7(),
            email: "ann@example.org".into(),
            name: "Ann again".into(),
            password_hash: None,
            is_operator: false,
        };
        assert!(matches!(
            store.user_insert(&dup).await,
            Err(StoreError::Duplicate)
        ));
        let viewer = store.role_get(p1, "viewer").await.unwrap();
        store.binding_insert(p1, u.id, viewer.id).await.unwrap();
        store.binding_insert(p1, u.id, viewer.id).await.unwrap();
        assert_eq!(
            store.user_grants(p1, u.id).await.unwrap(),
            vec!["instance:read".to_string(), "volume:read".into()]
        );
        let other = cloud_api::ProjectId(p2.id);
        assert!(
            store.user_grants(other, u.id).await.unwrap().is_empty(),
            "bindings are per project"
        );
        // Custom roles: per project, never shadowing a built-in one.
        let custom = store
            .role_insert(other, "ops", &["instance:*".into()])
            .await
            .unwrap();
        assert!(matches!(
            store.role_insert(other, "viewer", &[]).await,
            Err(StoreError::Duplicate)
        ));
        assert!(
            store.role_get(p1, "ops").await.is_err(),
            "another project's role is invisible"
        );
        store.binding_insert(other, u.id, custom.id).await.unwrap();
        assert!(matches!(
            store.role_delete(other, custom.id).await,
            Err(StoreError::InUse(_))
        ));
        store.binding_delete(other, u.id, custom.id).await.unwrap();
        store.role_delete(other, custom.id).await.unwrap();
        assert_eq!(store.project_list(Some(u.id)).await.unwrap().len(), 1);

        // Keys: rotation keeps the old one until the overlap ends; revocation is per user.
        let key = |prefix: &str| NewApiKey {
            id: cloud_api::ids::ApiKeyId::new(),
            project_id: p1,
            name: "k".into(),
            prefix: prefix.into(),
            secret_hash: vec![9],
            is_admin: false,
            user_id: Some(u.id),
            expires_at: None,
        };
        let k1 = key("aaaaaaaaaaaa");
        store.api_key_insert(&k1).await.unwrap();
        let until = Utc::now() + chrono::Duration::seconds(60);
        let k2 = key("bbbbbbbbbbbb");
        store
            .api_key_rotate(u.id, k1.id.0, until, &k2)
            .await
            .unwrap();
        let old = store.api_key_get(u.id, k1.id.0).await.unwrap();
        assert!(
            old.expires_at
                .is_some_and(|t| (t - until).num_seconds().abs() <= 1)
        );
        assert_eq!(store.api_key_list(u.id).await.unwrap().len(), 2);
        store.api_key_revoke(u.id, k1.id.0).await.unwrap();
        assert_eq!(store.api_key_list(u.id).await.unwrap().len(), 1);
        assert!(matches!(
            store.api_key_revoke(uuid::Uuid::now_v7(), k2.id.0).await,
            Err(StoreError::NotFound)
        ));

        // Audit rows: per project, newest first, filtered.
        let entry = |project: uuid::Uuid, outcome: &str| NewAuditEntry {
            at: Utc::now(),
            request_id: "r1".into(),
            project_id: Some(project),
            user_id: Some(u.id),
            key_id: None,
            action: "POST /v1/instances".into(),
            resource_type: "instance".into(),
            resource_id: Some("i1".into()),
            outcome: outcome.into(),
            status: 201,
            source: "127.0.0.1".into(),
        };
        store
            .audit_insert(&[
                entry(p1.0, "success"),
                entry(p1.0, "denied"),
                entry(p2.id, "success"),
            ])
            .await
            .unwrap();
        let all = store
            .audit_list(p1.0, &AuditFilter::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].outcome, "denied", "newest first");
        let denied = AuditFilter {
            outcome: Some("denied".into()),
            ..Default::default()
        };
        assert_eq!(
            store
                .audit_list(p1.0, &denied, None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        let page2 = store
            .audit_list(p1.0, &AuditFilter::default(), Some(all[0].id), 10)
            .await
            .unwrap();
        assert_eq!(page2.len(), 1);
        assert_eq!(page2[0].id, all[1].id);
    })
    .await;
}
