//! Client calls for identity and access: login, API keys, users, projects, roles, bindings,
//! quotas and the audit log.

use crate::client::{Client, ClientError};
use crate::identity::*;
use crate::{Method, Page};

impl Client {
    /// Email + password → a new (expiring) key; no key is needed for this call.
    pub async fn login(&self, req: &LoginRequest) -> Result<CreatedApiKey, ClientError> {
        self.post_json(&["v1", "auth", "login"], req).await
    }

    pub async fn register(&self, req: &RegisterRequest) -> Result<CreatedApiKey, ClientError> {
        self.post_json(&["v1", "auth", "register"], req).await
    }

    pub async fn key_create(
        &self,
        req: &CreateApiKeyRequest,
    ) -> Result<CreatedApiKey, ClientError> {
        self.post_json(&["v1", "auth", "keys"], req).await
    }

    pub async fn key_list(&self) -> Result<Vec<ApiKey>, ClientError> {
        self.get_json(&["v1", "auth", "keys"]).await
    }

    pub async fn key_revoke(&self, id: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, self.url(&["v1", "auth", "keys", id])))
            .await
            .map(drop)
    }

    pub async fn key_rotate(
        &self,
        id: &str,
        req: &RotateApiKeyRequest,
    ) -> Result<CreatedApiKey, ClientError> {
        self.post_json(&["v1", "auth", "keys", id, "rotate"], req)
            .await
    }

    pub async fn user_create(&self, req: &CreateUserRequest) -> Result<User, ClientError> {
        self.post_json(&["v1", "users"], req).await
    }

    pub async fn project_create(&self, req: &CreateProjectRequest) -> Result<Project, ClientError> {
        self.post_json(&["v1", "projects"], req).await
    }

    pub async fn project_list(&self) -> Result<Vec<Project>, ClientError> {
        self.get_json(&["v1", "projects"]).await
    }

    pub async fn binding_create(&self, req: &CreateBindingRequest) -> Result<(), ClientError> {
        self.send(
            self.request(Method::POST, self.url(&["v1", "bindings"]))
                .json(req),
        )
        .await
        .map(drop)
    }

    pub async fn binding_list(&self) -> Result<Vec<RoleBinding>, ClientError> {
        self.get_json(&["v1", "bindings"]).await
    }

    pub async fn role_list(&self) -> Result<Vec<Role>, ClientError> {
        self.get_json(&["v1", "roles"]).await
    }

    pub async fn quota(&self) -> Result<QuotaStatus, ClientError> {
        self.get_json(&["v1", "quota"]).await
    }

    /// The newest audit rows of the caller's project (`outcome`: success, denied, failure).
    pub async fn audit(
        &self,
        outcome: Option<&str>,
        limit: u32,
    ) -> Result<Page<AuditEntry>, ClientError> {
        let mut url = self.url(&["v1", "audit"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &limit.to_string());
            if let Some(o) = outcome {
                q.append_pair("outcome", o);
            }
        }
        self.json(self.request(Method::GET, url)).await
    }
}
