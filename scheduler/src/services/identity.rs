//! Identity rules: what an API key may do (its user's role bindings in its project, plus the
//! fleet role of operators), password login and self-registration (argon2id), API keys
//! (create, list, revoke, rotate with an overlap), users, projects, custom roles and bindings.
//! Clear keys and passwords are never stored or logged.

use super::Caller;
use crate::app::App;
use crate::authz::{self, Grant, OPERATOR_ROLE, PermissionSet};
use crate::error::{Error, Result};
use crate::keycache::CachedKey;
use crate::secrets;
use crate::store::{ApiKeyRecord, NewApiKey, NewUser, ProjectRecord, StoreError, UserRecord};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use chrono::{Duration, Utc};
use cloud_api::ProjectId;
use cloud_api::ids::ApiKeyId;
use cloud_api::{
    CreateApiKeyRequest, CreateBindingRequest, CreateProjectRequest, CreateRoleRequest,
    CreateUserRequest, LoginRequest, RegisterRequest, RotateApiKeyRequest,
};
use std::sync::Arc;
use uuid::Uuid;

/// Longest overlap of a rotated key.
const MAX_OVERLAP_SECS: u64 = 30 * 24 * 3600;
const DEFAULT_OVERLAP_SECS: u64 = 3600;
const MIN_PASSWORD: usize = 10;

/// The caller of a stored key: its permissions resolved now (cached briefly by the caller).
pub async fn resolve_key(app: &App, r: ApiKeyRecord) -> Result<CachedKey> {
    let project = ProjectId(r.project_id);
    let (permissions, disabled) = match (r.is_admin, r.user_id) {
        (true, _) => (PermissionSet::all(), false),
        (false, None) => (PermissionSet::default(), false),
        (false, Some(u)) => {
            let user = app.store.user_get(u).await?;
            let mut grants: Vec<Grant> = app
                .store
                .user_grants(project, u)
                .await?
                .iter()
                .filter_map(|g| Grant::parse(g).ok())
                .collect();
            if user.is_operator {
                grants.extend(authz::builtin_grants(OPERATOR_ROLE).unwrap_or_default());
            }
            (PermissionSet::new(grants), user.disabled_at.is_some())
        }
    };
    Ok(CachedKey {
        secret_hash: r.secret_hash,
        revoked: r.revoked_at.is_some() || disabled,
        expires_at: r.expires_at,
        caller: Caller {
            key_id: r.id.into(),
            user: r.user_id,
            project,
            permissions: Arc::new(permissions),
        },
    })
}

fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(Error::Invalid(format!(
            "password: at least {MIN_PASSWORD} characters"
        )));
    }
    if password.len() > 1024 {
        return Err(Error::Invalid("password: at most 1024 bytes".into()));
    }
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(Error::internal)?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(anyhow::anyhow!("argon2: {e}")))
}

fn password_matches(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The form emails are stored and compared in.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

fn check_email(email: &str) -> Result<String> {
    let e = normalize_email(email);
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(e)
    } else {
        Err(Error::Invalid(format!(
            "email: {email:?} is not an email address"
        )))
    }
}

fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{field}: {name:?} must be 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

fn not_found(what: &str) -> impl Fn(StoreError) -> Error + '_ {
    move |e| match e {
        StoreError::NotFound => Error::NotFound(format!("{what} not found")),
        other => other.into(),
    }
}

impl App {
    /// Makes the built-in roles and the bootstrap admin user exist, and gives the bootstrap
    /// key(s) to that user (at start; idempotent).
    pub async fn ensure_identity(&self) -> Result<()> {
        let roles: Vec<(&str, Vec<String>)> = authz::BUILTIN_ROLES
            .iter()
            .map(|(n, g)| (*n, g.iter().map(|s| s.to_string()).collect()))
            .collect();
        self.store.roles_ensure_builtin(&roles).await?;
        let admin = match self.store.user_get_by_email(BOOTSTRAP_ADMIN).await {
            Ok(u) => u,
            Err(StoreError::NotFound) => {
                self.store
                    .user_insert(&NewUser {
                        id: Uuid::now_v7(),
                        email: BOOTSTRAP_ADMIN.into(),
                        name: "bootstrap admin".into(),
                        password_hash: None,
                        is_operator: true,
                    })
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
        let role = self.store.role_get(self.default_project, "admin").await?;
        self.store
            .binding_insert(self.default_project, admin.id, role.id)
            .await?;
        self.store.api_keys_adopt(admin.id).await?;
        Ok(())
    }

    fn new_key(
        &self,
        user: Uuid,
        project: Uuid,
        name: &str,
        expires_at: Option<chrono::DateTime<Utc>>,
    ) -> (NewApiKey, String) {
        let (prefix, key) = secrets::new_api_key();
        (
            NewApiKey {
                id: ApiKeyId::new(),
                project_id: ProjectId(project),
                name: name.to_owned(),
                prefix,
                secret_hash: secrets::sha256(&key),
                is_admin: false,
                user_id: Some(user),
                expires_at,
            },
            key,
        )
    }

    /// Self-registration: a user, a project they administer, and a key acting in it.
    pub async fn register(&self, req: RegisterRequest) -> Result<(ApiKeyRecord, String)> {
        if !self.config.allow_registration {
            return Err(Error::Forbidden(
                "self-registration is disabled on this scheduler; ask an operator for an account"
                    .into(),
            ));
        }
        let email = check_email(&req.email)?;
        let hash = hash_password(&req.password)?;
        let project_name = match req.project {
            Some(p) => p,
            None => email.replace(['@', '+'], "-"),
        };
        check_name("project", &project_name)?;
        let user = self
            .store
            .user_insert(&NewUser {
                id: Uuid::now_v7(),
                email: email.clone(),
                name: req.name.unwrap_or_else(|| email.clone()),
                password_hash: Some(hash),
                is_operator: false,
            })
            .await
            .map_err(|e| match e {
                StoreError::Duplicate => Error::AlreadyExists(format!("email: {email} is taken")),
                other => other.into(),
            })?;
        let project = self
            .store
            .project_insert(&project_name)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate => {
                    Error::AlreadyExists(format!("project: {project_name} is taken"))
                }
                other => other.into(),
            })?;
        let role = self.store.role_get(ProjectId(project.id), "admin").await?;
        self.store
            .binding_insert(ProjectId(project.id), user.id, role.id)
            .await?;
        self.insert_key(user.id, project.id, "registration", None)
            .await
    }

    /// Email + password → a key acting in one of the user's projects, expiring.
    pub async fn login(
        &self,
        req: LoginRequest,
        source: Option<std::net::IpAddr>,
    ) -> Result<(ApiKeyRecord, String)> {
        let denied = || Error::Unauthorized("wrong email or password".into());
        let email = check_email(&req.email).map_err(|_| denied())?;
        // Attempts are limited per account and per source address, before any work.
        let limited = self
            .login_account_limiter
            .check(&email)
            .and_then(|()| match source {
                Some(ip) => self.login_source_limiter.check(&ip.to_string()),
                None => Ok(()),
            });
        if let Err(wait) = limited {
            self.metrics.rate_limited.inc();
            let secs = crate::ratelimit::retry_after_secs(wait);
            return Err(Error::RateLimited(
                format!("too many login attempts; retry in {secs} s"),
                secs,
            ));
        }
        let user = match self.store.user_get_by_email(&email).await {
            Ok(u) => u,
            Err(StoreError::NotFound) => {
                // Same work as a real check, so timing does not tell which emails exist.
                let _ = password_matches(&req.password, DUMMY_HASH);
                return Err(denied());
            }
            Err(e) => return Err(e.into()),
        };
        let ok = user.disabled_at.is_none()
            && user
                .password_hash
                .as_deref()
                .is_some_and(|h| password_matches(&req.password, h));
        if !ok {
            return Err(denied());
        }
        let project = self.project_of_user(&user, req.project.as_deref()).await?;
        let expires = Utc::now() + Duration::hours(cloud_api::identity::LOGIN_KEY_HOURS);
        self.insert_key(user.id, project.id, "login", Some(expires))
            .await
    }

    /// The project a user's new key acts in: the one named (where they have a binding, or any
    /// for operators), else their only one.
    async fn project_of_user(
        &self,
        user: &UserRecord,
        named: Option<&str>,
    ) -> Result<ProjectRecord> {
        let mine = self
            .store
            .project_list((!user.is_operator).then_some(user.id))
            .await?;
        match named {
            Some(n) => mine
                .into_iter()
                .find(|p| p.name == n || p.id.to_string() == n)
                .ok_or_else(|| Error::NotFound(format!("project {n} not found"))),
            None if mine.len() == 1 => Ok(mine
                .into_iter()
                .next()
                .ok_or_else(|| Error::internal(anyhow::anyhow!("one project expected")))?),
            None if mine.is_empty() => Err(Error::Forbidden(
                "this user has no role in any project yet".into(),
            )),
            None => Err(Error::Invalid(format!(
                "project: this user is in {} projects; name one",
                mine.len()
            ))),
        }
    }

    async fn insert_key(
        &self,
        user: Uuid,
        project: Uuid,
        name: &str,
        expires_at: Option<chrono::DateTime<Utc>>,
    ) -> Result<(ApiKeyRecord, String)> {
        let (new, key) = self.new_key(user, project, name, expires_at);
        self.store.api_key_insert(&new).await?;
        Ok((self.store.api_key_get(user, new.id.0).await?, key))
    }

    fn user_of(caller: &Caller) -> Result<Uuid> {
        caller
            .user
            .ok_or_else(|| Error::Forbidden("this key belongs to no user; make a new key".into()))
    }

    pub async fn key_create(
        &self,
        caller: &Caller,
        req: CreateApiKeyRequest,
    ) -> Result<(ApiKeyRecord, String)> {
        let user_id = Self::user_of(caller)?;
        check_name("name", &req.name)?;
        let project = match &req.project {
            None => caller.project.0,
            Some(p) => {
                let user = self.store.user_get(user_id).await?;
                self.project_of_user(&user, Some(p)).await?.id
            }
        };
        let expires = match req.expires_in_seconds {
            None => None,
            Some(s) if (60..=10 * 365 * 86400).contains(&s) => {
                Some(Utc::now() + Duration::seconds(s as i64))
            }
            Some(s) => {
                return Err(Error::Invalid(format!(
                    "expires_in_seconds: {s} is out of range (60 s to 10 years)"
                )));
            }
        };
        self.insert_key(user_id, project, &req.name, expires).await
    }

    pub async fn key_list(&self, caller: &Caller) -> Result<Vec<ApiKeyRecord>> {
        Ok(self.store.api_key_list(Self::user_of(caller)?).await?)
    }

    pub async fn key_revoke(&self, caller: &Caller, id: &str) -> Result<()> {
        let id: Uuid = id
            .parse()
            .map_err(|_| Error::NotFound(format!("API key {id} not found")))?;
        self.store
            .api_key_revoke(Self::user_of(caller)?, id)
            .await
            .map_err(not_found("API key"))?;
        self.key_cache.clear();
        Ok(())
    }

    pub async fn key_rotate(
        &self,
        caller: &Caller,
        id: &str,
        req: RotateApiKeyRequest,
    ) -> Result<(ApiKeyRecord, String)> {
        let user = Self::user_of(caller)?;
        let id: Uuid = id
            .parse()
            .map_err(|_| Error::NotFound(format!("API key {id} not found")))?;
        let overlap = req.overlap_seconds.unwrap_or(DEFAULT_OVERLAP_SECS);
        if overlap > MAX_OVERLAP_SECS {
            return Err(Error::Invalid(format!(
                "overlap_seconds: at most {MAX_OVERLAP_SECS} (30 days)"
            )));
        }
        let old = self
            .store
            .api_key_get(user, id)
            .await
            .map_err(not_found("API key"))?;
        if old.revoked_at.is_some() {
            return Err(Error::Conflict("the key is revoked; make a new one".into()));
        }
        let (new, key) = self.new_key(user, old.project_id, &old.name, old.expires_at);
        let until = Utc::now() + Duration::seconds(overlap as i64);
        self.store
            .api_key_rotate(user, id, until, &new)
            .await
            .map_err(not_found("API key"))?;
        self.key_cache.clear();
        Ok((self.store.api_key_get(user, new.id.0).await?, key))
    }

    pub async fn user_create(&self, req: CreateUserRequest) -> Result<UserRecord> {
        let email = check_email(&req.email)?;
        let hash = match &req.password {
            Some(p) => Some(hash_password(p)?),
            None => None,
        };
        let binding = match (&req.project, &req.role) {
            (Some(p), Some(r)) => {
                let project = self
                    .store
                    .project_get(p)
                    .await
                    .map_err(|_| Error::Invalid(format!("project: {p} not found")))?;
                let role = self
                    .store
                    .role_get(ProjectId(project.id), r)
                    .await
                    .map_err(|_| Error::Invalid(format!("role: {r} not found")))?;
                Some((project.id, role.id))
            }
            (None, None) => None,
            _ => {
                return Err(Error::Invalid(
                    "project and role: give both or neither".into(),
                ));
            }
        };
        let user = self
            .store
            .user_insert(&NewUser {
                id: Uuid::now_v7(),
                email: email.clone(),
                name: req.name.unwrap_or_else(|| email.clone()),
                password_hash: hash,
                is_operator: req.operator,
            })
            .await
            .map_err(|e| match e {
                StoreError::Duplicate => Error::AlreadyExists(format!("email: {email} is taken")),
                other => other.into(),
            })?;
        if let Some((project, role)) = binding {
            self.store
                .binding_insert(ProjectId(project), user.id, role)
                .await?;
        }
        Ok(user)
    }

    /// Operators make a key for any user (service accounts, tests): acting in `project`.
    pub async fn user_key_create(
        &self,
        user: &str,
        req: CreateApiKeyRequest,
    ) -> Result<(ApiKeyRecord, String)> {
        check_name("name", &req.name)?;
        let user = self.user_lookup(user).await?;
        let project = match &req.project {
            Some(p) => self
                .store
                .project_get(p)
                .await
                .map_err(not_found("project"))?,
            None => self.project_of_user(&user, None).await?,
        };
        self.insert_key(user.id, project.id, &req.name, None).await
    }

    async fn user_lookup(&self, email_or_id: &str) -> Result<UserRecord> {
        let r = match email_or_id.parse::<Uuid>() {
            Ok(id) => self.store.user_get(id).await,
            Err(_) => {
                self.store
                    .user_get_by_email(&email_or_id.trim().to_ascii_lowercase())
                    .await
            }
        };
        r.map_err(not_found("user"))
    }

    pub async fn project_create(&self, req: CreateProjectRequest) -> Result<ProjectRecord> {
        check_name("name", &req.name)?;
        let admin = match &req.admin {
            Some(a) => Some(
                self.user_lookup(a)
                    .await
                    .map_err(|_| Error::Invalid(format!("admin: user {a} not found")))?,
            ),
            None => None,
        };
        let project = self
            .store
            .project_insert(&req.name)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate => {
                    Error::AlreadyExists(format!("project {} exists", req.name))
                }
                other => other.into(),
            })?;
        if let Some(u) = admin {
            let role = self.store.role_get(ProjectId(project.id), "admin").await?;
            self.store
                .binding_insert(ProjectId(project.id), u.id, role.id)
                .await?;
        }
        Ok(project)
    }

    pub async fn project_list_for(&self, caller: &Caller) -> Result<Vec<ProjectRecord>> {
        if caller.is_operator() {
            return Ok(self.store.project_list(None).await?);
        }
        match caller.user {
            Some(u) => Ok(self.store.project_list(Some(u)).await?),
            None => Ok(Vec::new()),
        }
    }

    pub async fn role_create(
        &self,
        caller: &Caller,
        req: CreateRoleRequest,
    ) -> Result<crate::store::RoleRecord> {
        check_name("name", &req.name)?;
        if req.permissions.is_empty() {
            return Err(Error::Invalid("permissions: give at least one".into()));
        }
        let mut grants = Vec::with_capacity(req.permissions.len());
        for (i, g) in req.permissions.iter().enumerate() {
            let grant =
                Grant::parse(g).map_err(|e| Error::Invalid(format!("permissions[{i}]: {e}")))?;
            // Fleet permissions are not for project roles: an admin cannot mint an operator.
            let fleet = ["node", "user", "project"]
                .iter()
                .any(|r| grant.as_str() == "*" || grant.as_str().starts_with(&format!("{r}:")));
            if fleet || grant.as_str() == "image:write" || grant.as_str() == "image:*" {
                return Err(Error::Invalid(format!(
                    "permissions[{i}]: {g:?} is a fleet permission; project roles cannot hold it"
                )));
            }
            grants.push(grant.as_str().to_owned());
        }
        self.store
            .role_insert(caller.project, &req.name, &grants)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate => Error::AlreadyExists(format!("role {} exists", req.name)),
                other => other.into(),
            })
    }

    pub async fn role_delete(&self, caller: &Caller, id: &str) -> Result<()> {
        let role = self
            .store
            .role_get(caller.project, id)
            .await
            .map_err(not_found("role"))?;
        if role.project_id.is_none() {
            return Err(Error::Forbidden(format!(
                "{} is a built-in role; it cannot be deleted",
                role.name
            )));
        }
        self.store
            .role_delete(caller.project, role.id)
            .await
            .map_err(not_found("role"))?;
        self.key_cache.clear();
        Ok(())
    }

    pub async fn binding_create(&self, caller: &Caller, req: CreateBindingRequest) -> Result<()> {
        let user = self
            .user_lookup(&req.user)
            .await
            .map_err(|_| Error::Invalid(format!("user: {} not found", req.user)))?;
        let role = self
            .store
            .role_get(caller.project, &req.role)
            .await
            .map_err(|_| Error::Invalid(format!("role: {} not found", req.role)))?;
        if role.name == OPERATOR_ROLE && role.project_id.is_none() {
            return Err(Error::Invalid(
                "role: operator is a fleet role, given by an operator to a user (POST /v1/users)"
                    .into(),
            ));
        }
        self.store
            .binding_insert(caller.project, user.id, role.id)
            .await?;
        self.key_cache.clear();
        Ok(())
    }

    pub async fn binding_delete(&self, caller: &Caller, user: &str, role: &str) -> Result<()> {
        let user = self.user_lookup(user).await?;
        let role = self
            .store
            .role_get(caller.project, role)
            .await
            .map_err(not_found("role"))?;
        self.store
            .binding_delete(caller.project, user.id, role.id)
            .await
            .map_err(not_found("binding"))?;
        self.key_cache.clear();
        Ok(())
    }
}

/// Email of the user that owns the bootstrap admin key.
pub const BOOTSTRAP_ADMIN: &str = "admin@thecloud.local";

/// A valid argon2id hash of a random password, checked when the email is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3Qk2i2BzyeHrXPw8PxNWmXb4kkWAmNfTo7nm3uyB2vs";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(password_matches("correct horse battery", &h));
        assert!(!password_matches("wrong horse battery", &h));
        assert!(hash_password("short").is_err());
        assert!(
            PasswordHash::new(DUMMY_HASH).is_ok(),
            "the dummy hash parses"
        );
    }

    #[test]
    fn emails_and_names_are_checked() {
        assert_eq!(check_email(" Ann@Example.org ").unwrap(), "ann@example.org");
        for bad in ["", "ann", "@x.org", "ann@x", "a n@x.org"] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        assert!(check_name("name", "ci-2").is_ok());
        assert!(check_name("name", "-x").is_err() && check_name("name", "a b").is_err());
    }
}
