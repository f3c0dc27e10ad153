//! The agent-facing gRPC service (mutual TLS): `Enroll` and the per-node `Session` stream.

pub(crate) mod convert;
mod session;
pub mod status;

use crate::app::App;
use crate::pki::node_id_from_cert;
use cloud_api::NodeId;
use cloud_proto::v1 as pb;
use cloud_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

pub struct AgentGrpc {
    app: Arc<App>,
}

/// The node id from the verified client certificate of a request.
fn peer_node_id<T>(req: &Request<T>) -> Result<NodeId, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated("a node client certificate is required: enroll this agent first")
    })?;
    certs
        .first()
        .and_then(|c| node_id_from_cert(c.as_ref()))
        .ok_or_else(|| Status::unauthenticated("the client certificate is not a node certificate"))
}

#[tonic::async_trait]
impl AgentService for AgentGrpc {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = req.into_inner();
        let e = self
            .app
            .node_enroll(&r.join_token, &r.csr_pem, &r.hostname, &r.name)
            .await
            .map_err(status::to_status)?;
        Ok(Response::new(pb::EnrollResponse {
            node_id: e.node_id.to_string(),
            certificate_pem: e.certificate_pem,
            ca_pem: self.app.pki.ca_pem().to_string(),
            node_name: e.node_name,
        }))
    }

    type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::SchedulerMessage, Status>> + Send>>;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let node = peer_node_id(&req)?;
        let stream = session::open(self.app.clone(), node, req.into_inner()).await?;
        Ok(Response::new(stream))
    }
}

/// The tonic service and its TLS configuration. Client certificates are optional at the TLS
/// layer so that `Enroll` works without one; `Session` refuses calls without a node
/// certificate signed by our CA (rustls has verified the chain before we see it).
pub fn service(app: Arc<App>) -> (AgentServiceServer<AgentGrpc>, ServerTlsConfig) {
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            app.pki.server_cert_pem(),
            app.pki.server_key_pem(),
        ))
        .client_ca_root(Certificate::from_pem(app.pki.ca_pem()))
        .client_auth_optional(true);
    let svc =
        AgentServiceServer::new(AgentGrpc { app }).max_decoding_message_size(16 * 1024 * 1024);
    (svc, tls)
}
