//! The agent channel refuses anyone without the right credentials: unknown or used join
//! tokens, missing client certificates, certificates from another CA, and clients that do
//! not trust the scheduler.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: fail fast with the message

use cloud_proto::v1 as pb;
use cloud_proto::v1::agent_service_client::AgentServiceClient;
use cloud_tests::Cluster;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::time::Duration;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn channel(
    c: &Cluster,
    ca_pem: &str,
    identity: Option<Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    Channel::from_shared(format!("https://{}", c.grpc_endpoint()))
        .expect("uri")
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn csr() -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

fn enroll_request(token: &str, csr: &str, name: &str) -> pb::EnrollRequest {
    pb::EnrollRequest {
        join_token: token.into(),
        csr_pem: csr.into(),
        hostname: "test-host".into(),
        name: name.into(),
    }
}

async fn open_session(ch: Channel) -> Result<pb::SchedulerMessage, tonic::Status> {
    let hello = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            hostname: "test-host".into(),
            capacity: Some(pb::Capacity {
                cpu_millis: 1000,
                memory_mb: 1024,
                disk_gb: 10,
            }),
            drivers: vec!["docker".into()],
            agent_version: "test".into(),
            protocol_version: cloud_proto::PROTOCOL_VERSION,
            ..Default::default()
        })),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(hello).await.unwrap();
    let mut stream = AgentServiceClient::new(ch)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("no message"))?;
    drop(tx);
    Ok(first)
}

#[tokio::test]
async fn join_tokens_are_one_time_and_unknown_tokens_are_refused() {
    let c = Cluster::start().await;
    let ca = std::fs::read_to_string(c.ca_file()).unwrap();
    let ch = channel(&c, &ca, None).await.unwrap();
    let mut client = AgentServiceClient::new(ch);
    let (_k, csr_pem) = csr();

    let err = client
        .enroll(enroll_request("tcj_not-a-real-token", &csr_pem, "n1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let err = client
        .enroll(enroll_request("", &csr_pem, "n1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    let token = std::fs::read_to_string(c.join_token_file()).unwrap();
    let err = client
        .enroll(enroll_request(&token, "garbage", "n1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "a bad CSR does not burn the token: {err}"
    );
    let ok = client
        .enroll(enroll_request(&token, &csr_pem, "n1"))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.certificate_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(ok.node_name, "n1");

    let err = client
        .enroll(enroll_request(&token, &csr_pem, "n2"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "a used token is refused: {err}"
    );

    // The bootstrap token file now holds a fresh token for the next agent.
    let next = std::fs::read_to_string(c.join_token_file()).unwrap();
    assert_ne!(next.trim(), token.trim());
    let err = client
        .enroll(enroll_request(&next, &csr_pem, "n1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::AlreadyExists,
        "node names are unique: {err}"
    );
    client
        .enroll(enroll_request(&next, &csr_pem, "n2"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sessions_need_a_node_certificate_from_our_ca() {
    let c = Cluster::start().await;
    let ca = std::fs::read_to_string(c.ca_file()).unwrap();

    // No client certificate: TLS succeeds (enrollment needs it), the session is refused.
    let ch = channel(&c, &ca, None).await.unwrap();
    let err = open_session(ch).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    // A certificate from another CA (with a node-like subject) is refused by TLS itself.
    let rogue_key = KeyPair::generate().unwrap();
    let mut rogue_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    rogue_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let rogue_ca = Issuer::new(rogue_params, rogue_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, uuid::Uuid::now_v7().to_string());
    leaf.distinguished_name
        .push(DnType::OrganizationName, "thecloud-node");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &rogue_ca).unwrap();
    let identity = Identity::from_pem(leaf_cert.pem(), leaf_key.serialize_pem());
    let refused = match channel(&c, &ca, Some(identity)).await {
        Err(_) => true,
        Ok(ch) => open_session(ch).await.is_err(),
    };
    assert!(
        refused,
        "a certificate from another CA must not open a session"
    );

    // A client that does not trust our CA cannot even talk to the scheduler.
    let other_ca = {
        let k = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.self_signed(&k).unwrap().pem()
    };
    let untrusting = match channel(&c, &other_ca, None).await {
        Err(_) => true,
        Ok(ch) => AgentServiceClient::new(ch)
            .enroll(enroll_request("x", "y", "z"))
            .await
            .is_err(),
    };
    assert!(untrusting);

    // The real thing works: enroll, then open a session with the issued certificate.
    let (key, csr_pem) = csr();
    let token = std::fs::read_to_string(c.join_token_file()).unwrap();
    let enrolled = AgentServiceClient::new(channel(&c, &ca, None).await.unwrap())
        .enroll(enroll_request(&token, &csr_pem, "good"))
        .await
        .unwrap()
        .into_inner();
    let identity = Identity::from_pem(&enrolled.certificate_pem, key.serialize_pem());
    let first = open_session(channel(&c, &ca, Some(identity)).await.unwrap())
        .await
        .unwrap();
    match first.msg {
        Some(pb::scheduler_message::Msg::Accepted(a)) => {
            assert_eq!(a.node_id, enrolled.node_id);
            assert_eq!(a.node_name, "good");
        }
        other => panic!("expected SessionAccepted, got {other:?}"),
    }
}
