//! VPC networking through the public API with real schedulers and agents (fake container
//! runtime and fake data plane): validation, IPAM, conflicts, and what each node is told to
//! build (peers, remote endpoints, security group rules). Runs on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_api::{
    Client, ClientError, CreateInstanceRequest, CreateSecurityGroupRequest, CreateSubnetRequest,
    CreateVpcRequest, Direction, InstanceStatus, Protocol, ReplaceRulesRequest, SecurityGroupRule,
    SubnetId,
};
use cloud_tests::{Cluster, busybox, wait_for};
use std::net::Ipv4Addr;
use std::time::Duration;

fn status(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(e) => (e.status().unwrap_or(0), e.to_string()),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

fn in_subnet(name: &str, subnet: SubnetId) -> CreateInstanceRequest {
    CreateInstanceRequest {
        subnet_id: Some(subnet),
        ..busybox(name, &["sleep", "1000"])
    }
}

fn rule(direction: Direction, protocol: Protocol, ports: Option<(u16, u16)>) -> SecurityGroupRule {
    SecurityGroupRule {
        direction,
        protocol,
        port_min: ports.map(|p| p.0),
        port_max: ports.map(|p| p.1),
        cidr: Some("0.0.0.0/0".into()),
        source_group: None,
    }
}

async fn vpc_and_subnet(
    client: &Client,
    vpc: &str,
    cidr: &str,
    subnet: &str,
    scidr: &str,
) -> SubnetId {
    client
        .vpc_create(&CreateVpcRequest {
            name: vpc.into(),
            cidr: cidr.into(),
        })
        .await
        .unwrap();
    client
        .subnet_create(
            vpc,
            &CreateSubnetRequest {
                name: subnet.into(),
                cidr: scidr.into(),
                nat_egress: false,
            },
        )
        .await
        .unwrap()
        .id
}

async fn api_rules(c: &Cluster) {
    let (_node, _net) = c
        .fake_vpc_node("vpc-node", Ipv4Addr::new(192, 0, 2, 1))
        .await;
    let client = c.client();

    // VPCs.
    let vpc = client
        .vpc_create(&CreateVpcRequest {
            name: "prod".into(),
            cidr: "10.10.0.0/16".into(),
        })
        .await
        .unwrap();
    assert!((1..1 << 24).contains(&vpc.vni), "{vpc:?}");
    let (s, m) = status(
        client
            .vpc_create(&CreateVpcRequest {
                name: "prod".into(),
                cidr: "10.20.0.0/16".into(),
            })
            .await,
    );
    assert_eq!(s, 409, "{m}");
    for (cidr, says) in [
        ("10.10.0.0", "cidr"),
        ("10.10.0.5/16", "did you mean 10.10.0.0/16"),
        ("nope", "cidr"),
        ("10.0.0.0/30", "/28"),
    ] {
        let (s, m) = status(
            client
                .vpc_create(&CreateVpcRequest {
                    name: "other".into(),
                    cidr: cidr.into(),
                })
                .await,
        );
        assert_eq!(s, 422, "{cidr}: {m}");
        assert!(m.contains(says), "{cidr}: {m}");
    }
    let (s, _) = status(client.vpc_get("nope").await);
    assert_eq!(s, 404);

    // Subnets.
    let web = client
        .subnet_create(
            "prod",
            &CreateSubnetRequest {
                name: "web".into(),
                cidr: "10.10.1.0/24".into(),
                nat_egress: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(web.gateway, "10.10.1.1");
    assert_eq!(web.vpc_id, vpc.id);
    for (cidr, says) in [
        ("10.10.1.128/25", "overlaps subnet \"web\""),
        ("10.11.0.0/24", "not inside"),
        ("10.10.2.0/30", "/29"),
        ("10.10.2.1/24", "host bits"),
    ] {
        let (s, m) = status(
            client
                .subnet_create(
                    "prod",
                    &CreateSubnetRequest {
                        name: "db".into(),
                        cidr: cidr.into(),
                        nat_egress: false,
                    },
                )
                .await,
        );
        assert_eq!(s, 422, "{cidr}: {m}");
        assert!(m.contains(says), "{cidr}: {m}");
    }
    let (s, m) = status(
        client
            .subnet_create(
                "prod",
                &CreateSubnetRequest {
                    name: "web".into(),
                    cidr: "10.10.9.0/24".into(),
                    nat_egress: false,
                },
            )
            .await,
    );
    assert_eq!(s, 409, "{m}");
    assert_eq!(
        client.subnet_list("prod").await.unwrap().len(),
        1,
        "no half-made subnet"
    );

    // Security groups.
    let mut self_ref = rule(Direction::Ingress, Protocol::Tcp, Some((8000, 8080)));
    self_ref.cidr = None;
    self_ref.source_group = Some("web".into());
    let sg = client
        .sg_create(&CreateSecurityGroupRequest {
            name: "web".into(),
            description: "web tier".into(),
            rules: vec![
                rule(Direction::Ingress, Protocol::Tcp, Some((22, 22))),
                self_ref,
            ],
        })
        .await
        .unwrap();
    assert_eq!(sg.rules.len(), 2);
    assert_eq!(
        sg.rules[1].source_group.as_deref(),
        Some(sg.id.to_string().as_str())
    );
    let bad_rules = [
        (
            rule(Direction::Ingress, Protocol::Icmp, Some((1, 2))),
            "rules[0]: ports apply to tcp and udp only",
        ),
        (
            rule(Direction::Ingress, Protocol::Tcp, Some((90, 80))),
            "rules[0]",
        ),
        (
            SecurityGroupRule {
                source_group: Some("ghost".into()),
                cidr: None,
                ..rule(Direction::Ingress, Protocol::All, None)
            },
            "rules[0].source_group",
        ),
        (
            SecurityGroupRule {
                cidr: None,
                ..rule(Direction::Egress, Protocol::All, None)
            },
            "give cidr",
        ),
    ];
    for (r, says) in bad_rules {
        let (s, m) = status(
            client
                .sg_create(&CreateSecurityGroupRequest {
                    name: "bad".into(),
                    description: String::new(),
                    rules: vec![r],
                })
                .await,
        );
        assert_eq!(s, 422, "{m}");
        assert!(m.contains(says), "{m}");
    }
    assert_eq!(
        client.sg_list().await.unwrap().len(),
        1,
        "no half-made group"
    );

    // IPAM: lowest free address, explicit addresses checked, no duplicates.
    let a = client
        .instance_create(&CreateInstanceRequest {
            security_groups: vec!["web".into()],
            ..in_subnet("a", web.id)
        })
        .await
        .unwrap();
    assert_eq!(a.private_ip.as_deref(), Some("10.10.1.2"));
    assert_eq!(a.mac.as_deref(), Some("02:7c:0a:0a:01:02"));
    assert_eq!(a.security_groups, vec![sg.id]);
    let b = client
        .instance_create(&in_subnet("b", web.id))
        .await
        .unwrap();
    assert_eq!(b.private_ip.as_deref(), Some("10.10.1.3"));
    let fixed = client
        .instance_create(&CreateInstanceRequest {
            private_ip: Some("10.10.1.50".into()),
            ..in_subnet("fixed", web.id)
        })
        .await
        .unwrap();
    assert_eq!(fixed.private_ip.as_deref(), Some("10.10.1.50"));
    let before = client.instance_list().await.unwrap().len();
    for (ip, code, says) in [
        ("10.10.1.50", 409, "already used"),
        ("10.10.2.5", 422, "outside the subnet"),
        ("10.10.1.1", 422, "reserved"),
        ("10.10.1.255", 422, "reserved"),
        ("banana", 422, "private_ip"),
    ] {
        let (s, m) = status(
            client
                .instance_create(&CreateInstanceRequest {
                    private_ip: Some(ip.into()),
                    ..in_subnet("x", web.id)
                })
                .await,
        );
        assert_eq!(s, code, "{ip}: {m}");
        assert!(m.contains(says), "{ip}: {m}");
    }
    let (s, m) = status(
        client
            .instance_create(&CreateInstanceRequest {
                subnet_id: Some(SubnetId::new()),
                ..busybox("x", &[])
            })
            .await,
    );
    assert_eq!(s, 422, "{m}");
    assert!(m.contains("subnet_id"), "{m}");
    let (s, m) = status(
        client
            .instance_create(&CreateInstanceRequest {
                security_groups: vec!["web".into()],
                ..busybox("x", &[])
            })
            .await,
    );
    assert_eq!(s, 422, "{m}");
    assert!(m.contains("security_groups"), "{m}");
    let (s, m) = status(
        client
            .instance_create(&CreateInstanceRequest {
                security_groups: vec!["ghost".into()],
                ..in_subnet("x", web.id)
            })
            .await,
    );
    assert_eq!(s, 422, "{m}");
    assert_eq!(
        client.instance_list().await.unwrap().len(),
        before,
        "no half-made instance"
    );
    c.wait_instance("a", InstanceStatus::Running).await;

    // In use: 409 with what to do.
    let (s, m) = status(client.subnet_delete("prod", "web").await);
    assert_eq!(s, 409, "{m}");
    assert!(m.contains("delete them first"), "{m}");
    let (s, _) = status(client.vpc_delete("prod").await);
    assert_eq!(s, 409);
    let (s, m) = status(client.sg_delete("web").await);
    assert_eq!(s, 409, "{m}");

    // Security groups on a running instance, idempotently.
    client.instance_sg_attach("b", "web").await.unwrap();
    let b2 = client.instance_sg_attach("b", "web").await.unwrap();
    assert_eq!(b2.security_groups, vec![sg.id]);
    let b3 = client.instance_sg_detach("b", "web").await.unwrap();
    assert!(b3.security_groups.is_empty());

    // Deleting releases the address.
    for n in ["a", "b", "fixed"] {
        client.instance_delete(n).await.unwrap();
        c.wait_instance_gone(n).await;
    }
    let again = client
        .instance_create(&in_subnet("again", web.id))
        .await
        .unwrap();
    assert_eq!(again.private_ip.as_deref(), Some("10.10.1.2"));
    client.instance_delete("again").await.unwrap();
    c.wait_instance_gone("again").await;
    client.sg_delete("web").await.unwrap();
    client.subnet_delete("prod", "web").await.unwrap();
    client.vpc_delete("prod").await.unwrap();
    assert!(client.vpc_list().await.unwrap().is_empty());
}

#[tokio::test]
async fn vpc_api_validates_allocates_and_refuses_conflicts_on_sqlite() {
    let c = Cluster::start().await;
    api_rules(&c).await;
}

#[tokio::test]
async fn vpc_api_validates_allocates_and_refuses_conflicts_on_postgres() {
    let Some(url) = cloud_tests::postgres_scratch_url().await else {
        return;
    };
    let db = url.clone();
    let mut c = Cluster::start_with(move |cfg| cfg.database_url = Some(db)).await;
    api_rules(&c).await;
    c.stop_scheduler().await;
    cloud_tests::postgres_drop(&url).await;
}

#[tokio::test]
async fn instances_in_a_subnet_only_go_to_nodes_with_vpc_networking() {
    let c = Cluster::start().await;
    let _plain = c.fake_node("plain").await;
    let client = c.client();
    let subnet = vpc_and_subnet(&client, "v", "10.0.0.0/16", "s", "10.0.1.0/24").await;
    let (s, m) = status(client.instance_create(&in_subnet("x", subnet)).await);
    assert_eq!(s, 409, "{m}");
    assert!(m.contains("thecloud.io/vpc"), "{m}");
    let (_node, net) = c.fake_vpc_node("netted", Ipv4Addr::new(192, 0, 2, 9)).await;
    let x = client
        .instance_create(&in_subnet("x", subnet))
        .await
        .unwrap();
    assert_eq!(x.node_name.as_deref(), Some("netted"));
    c.wait_instance("x", InstanceStatus::Running).await;
    assert!(net.port(&x.id.to_string()).is_some());
}

#[tokio::test]
async fn nodes_are_told_their_peers_endpoints_and_resolved_rules() {
    let c = Cluster::start().await;
    let (_n1, net1) = c.fake_vpc_node("n1", Ipv4Addr::new(192, 0, 2, 1)).await;
    let (_n2, net2) = c.fake_vpc_node("n2", Ipv4Addr::new(192, 0, 2, 2)).await;
    let client = c.client();
    let subnet = vpc_and_subnet(&client, "v", "10.0.0.0/16", "s", "10.0.1.0/24").await;
    let other = vpc_and_subnet(&client, "w", "10.0.0.0/16", "s", "10.0.1.0/24").await;
    let mut from_group = rule(Direction::Ingress, Protocol::Tcp, Some((80, 80)));
    from_group.cidr = None;
    from_group.source_group = Some("app".into());
    client
        .sg_create(&CreateSecurityGroupRequest {
            name: "app".into(),
            description: String::new(),
            rules: vec![from_group],
        })
        .await
        .unwrap();
    let spread = |name: &str, subnet: SubnetId| CreateInstanceRequest {
        security_groups: vec!["app".into()],
        placement_group: Some(cloud_api::PlacementGroup {
            name: "g".into(),
            policy: cloud_api::GroupPolicy::Spread,
        }),
        ..in_subnet(name, subnet)
    };
    let a = client.instance_create(&spread("a", subnet)).await.unwrap();
    let b = client.instance_create(&spread("b", subnet)).await.unwrap();
    assert_ne!(a.node_name, b.node_name, "spread over both nodes");
    // A member of the same security group in another VPC (placed on one of the same nodes)
    // must show up in neither VPC v's endpoints nor its source-group expansion.
    let stranger = client
        .instance_create(&CreateInstanceRequest {
            private_ip: Some("10.0.1.77".into()),
            security_groups: vec!["app".into()],
            ..in_subnet("stranger", other)
        })
        .await
        .unwrap();
    c.wait_instance("stranger", InstanceStatus::Running).await;
    let v_id = client.vpc_get("v").await.unwrap().id.to_string();
    let w_id = client.vpc_get("w").await.unwrap().id.to_string();
    c.wait_instance("a", InstanceStatus::Running).await;
    c.wait_instance("b", InstanceStatus::Running).await;
    let (net_a, net_b) = if a.node_name.as_deref() == Some("n1") {
        (&net1, &net2)
    } else {
        (&net2, &net1)
    };
    let (ip_a, ip_b) = (a.private_ip.clone().unwrap(), b.private_ip.clone().unwrap());
    let underlay_b = if std::ptr::eq(net_b, &net2) {
        "192.0.2.2"
    } else {
        "192.0.2.1"
    };

    let vpc = wait_for(
        "a's node knows b's endpoint",
        Duration::from_secs(10),
        || async {
            let v = net_a.vpcs().remove(&v_id)?;
            (v.remote_endpoints.len() == 1).then_some(v)
        },
    )
    .await;
    assert_eq!(vpc.peers, vec![underlay_b.parse::<Ipv4Addr>().unwrap()]);
    assert_eq!(vpc.remote_endpoints[0].ip.to_string(), ip_b);
    assert_eq!(
        vpc.remote_endpoints[0].mac.to_string(),
        b.mac.clone().unwrap()
    );
    assert_eq!(vpc.subnets[0].gateway, Ipv4Addr::new(10, 0, 1, 1));
    let stranger_node_has_w =
        |net: &cloud_agent::network::FakeNetwork| net.vpcs().contains_key(&w_id);
    assert_eq!(
        stranger_node_has_w(net_a),
        stranger.node_name == a.node_name,
        "VPC w only where its instance runs"
    );
    for net in [&net1, &net2] {
        if let Some(v) = net.vpcs().get(&v_id) {
            assert!(
                v.remote_endpoints
                    .iter()
                    .all(|e| e.ip.to_string() != "10.0.1.77"),
                "another VPC's instance leaked into v: {v:?}"
            );
        }
    }

    // The source group expanded to the members' addresses.
    let (_, att) = wait_for(
        "a's rules name both members",
        Duration::from_secs(10),
        || async {
            let (ns, att) = net_a.port(&a.id.to_string())?;
            (att.ingress.first()?.cidrs.len() == 2).then_some((ns, att))
        },
    )
    .await;
    let mut cidrs: Vec<String> = att.ingress[0].cidrs.iter().map(|c| c.to_string()).collect();
    cidrs.sort();
    let mut want = vec![format!("{ip_a}/32"), format!("{ip_b}/32")];
    want.sort();
    assert_eq!(cidrs, want);
    assert_eq!((att.ingress[0].port_min, att.ingress[0].port_max), (80, 80));
    assert!(!att.egress_restricted);

    // Replacing the rules reaches the node.
    client
        .sg_replace_rules(
            "app",
            &ReplaceRulesRequest {
                rules: vec![rule(Direction::Egress, Protocol::Udp, Some((53, 53)))],
            },
        )
        .await
        .unwrap();
    wait_for("new rules on a's port", Duration::from_secs(10), || async {
        let (_, att) = net_a.port(&a.id.to_string())?;
        (att.ingress.is_empty() && att.egress_restricted && att.egress.len() == 1).then_some(())
    })
    .await;

    // b leaves: a's node forgets its endpoint and peer.
    client.instance_delete("b").await.unwrap();
    c.wait_instance_gone("b").await;
    wait_for(
        "b's endpoint gone from a's node",
        Duration::from_secs(10),
        || async {
            let v = net_a.vpcs().remove(&v_id)?;
            (v.remote_endpoints.is_empty() && v.peers.is_empty()).then_some(())
        },
    )
    .await;
    wait_for(
        "b's node tore VPC v down",
        Duration::from_secs(10),
        || async { (!net_b.vpcs().contains_key(&v_id)).then_some(()) },
    )
    .await;
}
