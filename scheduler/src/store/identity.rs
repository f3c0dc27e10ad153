//! Users, roles and role bindings, and the grants a user holds in a project. Passwords are
//! stored only as argon2id PHC strings (hashed by the caller).

use super::{Store, StoreError, StoreResult, on_pool};
use chrono::{DateTime, Utc};
use cloud_api::ProjectId;
use sqlx::types::Json;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_operator: bool,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub is_operator: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RoleRecord {
    pub id: Uuid,
    /// `None`: a built-in role.
    pub project_id: Option<Uuid>,
    pub name: String,
    pub permissions: Json<Vec<String>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BindingRecord {
    pub project_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub role_id: Uuid,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

macro_rules! user_cols {
    () => {
        "id, email, name, password_hash, is_operator, created_at, disabled_at"
    };
}
macro_rules! role_cols {
    () => {
        "id, project_id, name, permissions, created_at"
    };
}

impl Store {
    pub async fn user_insert(&self, u: &NewUser) -> StoreResult<UserRecord> {
        let now = Utc::now();
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO users (id, email, name, password_hash, is_operator, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(u.id)
            .bind(&u.email)
            .bind(&u.name)
            .bind(&u.password_hash)
            .bind(u.is_operator)
            .bind(now)
            .execute(p)
            .await?;
        });
        self.user_get(u.id).await
    }

    pub async fn user_get(&self, id: Uuid) -> StoreResult<UserRecord> {
        const SQL: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1");
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, UserRecord>(SQL).bind(id).fetch_one(p).await?)
        })
    }

    pub async fn user_get_by_email(&self, email: &str) -> StoreResult<UserRecord> {
        const SQL: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE email = $1");
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, UserRecord>(SQL).bind(email).fetch_one(p).await?)
        })
    }

    pub async fn user_list(&self) -> StoreResult<Vec<UserRecord>> {
        const SQL: &str = concat!("SELECT ", user_cols!(), " FROM users ORDER BY email");
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, UserRecord>(SQL).fetch_all(p).await?)
        })
    }

    /// Makes the built-in roles exist with exactly these grants (at start).
    pub async fn roles_ensure_builtin(&self, roles: &[(&str, Vec<String>)]) -> StoreResult<()> {
        let now = Utc::now();
        for (name, grants) in roles {
            on_pool!(self, p => {
                let updated = sqlx::query(
                    "UPDATE roles SET permissions = $1 WHERE project_id IS NULL AND name = $2",
                )
                .bind(Json(grants))
                .bind(name)
                .execute(p)
                .await?
                .rows_affected();
                if updated == 0 {
                    sqlx::query(
                        "INSERT INTO roles (id, project_id, name, permissions, created_at)
                         VALUES ($1, NULL, $2, $3, $4)",
                    )
                    .bind(Uuid::now_v7())
                    .bind(name)
                    .bind(Json(grants))
                    .bind(now)
                    .execute(p)
                    .await?;
                }
            });
        }
        Ok(())
    }

    /// A role usable in `project`: a built-in one or the project's own, by name or id.
    pub async fn role_get(&self, project: ProjectId, name_or_id: &str) -> StoreResult<RoleRecord> {
        let by_id = name_or_id.parse::<Uuid>().ok();
        const SQL: &str = concat!(
            "SELECT ",
            role_cols!(),
            " FROM roles
             WHERE (project_id IS NULL OR project_id = $1) AND (name = $2 OR id = $3)
             ORDER BY project_id IS NULL LIMIT 1"
        );
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, RoleRecord>(SQL)
                .bind(project.0)
                .bind(name_or_id)
                .bind(by_id)
                .fetch_one(p)
                .await?)
        })
    }

    /// Built-in roles and the project's custom ones.
    pub async fn role_list(&self, project: ProjectId) -> StoreResult<Vec<RoleRecord>> {
        const SQL: &str = concat!(
            "SELECT ",
            role_cols!(),
            " FROM roles WHERE project_id IS NULL OR project_id = $1
             ORDER BY project_id IS NOT NULL, name"
        );
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, RoleRecord>(SQL).bind(project.0).fetch_all(p).await?)
        })
    }

    pub async fn role_insert(
        &self,
        project: ProjectId,
        name: &str,
        grants: &[String],
    ) -> StoreResult<RoleRecord> {
        let id = Uuid::now_v7();
        on_pool!(self, p => {
            let builtin: Option<(Uuid,)> =
                sqlx::query_as("SELECT id FROM roles WHERE project_id IS NULL AND name = $1")
                    .bind(name)
                    .fetch_optional(p)
                    .await?;
            if builtin.is_some() {
                return Err(StoreError::Duplicate);
            }
            sqlx::query(
                "INSERT INTO roles (id, project_id, name, permissions, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(project.0)
            .bind(name)
            .bind(Json(grants))
            .bind(Utc::now())
            .execute(p)
            .await?;
        });
        self.role_get(project, &id.to_string()).await
    }

    /// Deletes a project's custom role; `InUse` while bindings use it.
    pub async fn role_delete(&self, project: ProjectId, id: Uuid) -> StoreResult<()> {
        on_pool!(self, p => {
            let bound: (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM role_bindings WHERE role_id = $1")
                    .bind(id)
                    .fetch_one(p)
                    .await?;
            if bound.0 > 0 {
                return Err(StoreError::InUse(format!(
                    "the role has {} binding(s); remove them first",
                    bound.0
                )));
            }
            let n = sqlx::query("DELETE FROM roles WHERE id = $1 AND project_id = $2")
                .bind(id)
                .bind(project.0)
                .execute(p)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
        });
        Ok(())
    }

    /// Binds a user to a role in a project (idempotent).
    pub async fn binding_insert(
        &self,
        project: ProjectId,
        user: Uuid,
        role: Uuid,
    ) -> StoreResult<()> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO role_bindings (project_id, user_id, role_id, created_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(project.0)
            .bind(user)
            .bind(role)
            .bind(Utc::now())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    pub async fn binding_list(&self, project: ProjectId) -> StoreResult<Vec<BindingRecord>> {
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, BindingRecord>(
                "SELECT b.project_id, b.user_id, u.email, b.role_id, r.name AS role, b.created_at
                 FROM role_bindings b JOIN users u ON u.id = b.user_id JOIN roles r ON r.id = b.role_id
                 WHERE b.project_id = $1 ORDER BY u.email, r.name",
            )
            .bind(project.0)
            .fetch_all(p)
            .await?)
        })
    }

    pub async fn binding_delete(
        &self,
        project: ProjectId,
        user: Uuid,
        role: Uuid,
    ) -> StoreResult<()> {
        on_pool!(self, p => {
            let n = sqlx::query(
                "DELETE FROM role_bindings WHERE project_id = $1 AND user_id = $2 AND role_id = $3",
            )
            .bind(project.0)
            .bind(user)
            .bind(role)
            .execute(p)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
        });
        Ok(())
    }

    /// Every grant of every role `user` is bound to in `project`.
    pub async fn user_grants(&self, project: ProjectId, user: Uuid) -> StoreResult<Vec<String>> {
        let rows: Vec<(Json<Vec<String>>,)> = on_pool!(self, p => {
            sqlx::query_as(
                "SELECT r.permissions FROM role_bindings b JOIN roles r ON r.id = b.role_id
                 WHERE b.project_id = $1 AND b.user_id = $2",
            )
            .bind(project.0)
            .bind(user)
            .fetch_all(p)
            .await?
        });
        Ok(rows.into_iter().flat_map(|(g,)| g.0).collect())
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProjectRecord {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    pub async fn project_insert(&self, name: &str) -> StoreResult<ProjectRecord> {
        let id = Uuid::now_v7();
        on_pool!(self, p => {
            sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(name)
                .bind(Utc::now())
                .execute(p)
                .await?;
        });
        self.project_get(&id.to_string()).await
    }

    /// A project by name or id.
    pub async fn project_get(&self, name_or_id: &str) -> StoreResult<ProjectRecord> {
        let by_id = name_or_id.parse::<Uuid>().ok();
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, ProjectRecord>(
                "SELECT id, name, created_at FROM projects WHERE name = $1 OR id = $2",
            )
            .bind(name_or_id)
            .bind(by_id)
            .fetch_one(p)
            .await?)
        })
    }

    /// Every project (`user` None) or those `user` has a binding in.
    pub async fn project_list(&self, user: Option<Uuid>) -> StoreResult<Vec<ProjectRecord>> {
        on_pool!(self, p => {
            Ok(sqlx::query_as::<_, ProjectRecord>(
                "SELECT id, name, created_at FROM projects
                 WHERE $1 IS NULL OR id IN (SELECT project_id FROM role_bindings WHERE user_id = $1)
                 ORDER BY name",
            )
            .bind(user)
            .fetch_all(p)
            .await?)
        })
    }
}
