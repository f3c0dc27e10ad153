//! Authorisation: permissions (`resource:action`), grants (`*`, `volume:*`, `instance:read`),
//! the built-in roles, and the set of permissions a caller holds. Every `/v1` route declares
//! the [`Access`] it needs where it is routed (see `http::routes`), so none can forget it.
//!
//! Project roles (`viewer`, `member`, `admin`, custom ones) apply in the project the caller's
//! key acts in; the fleet role `operator` (a user flag) applies everywhere.

use std::fmt;

/// Every resource and its actions. Grants naming anything else are refused.
pub const RESOURCES: &[(&str, &[&str])] = &[
    ("instance", &["read", "write"]),
    ("volume", &["read", "write"]),
    ("snapshot", &["read", "write"]),
    ("network", &["read", "write"]),
    ("image", &["read", "write"]),
    ("event", &["read"]),
    ("audit", &["read"]),
    ("binding", &["read", "write"]),
    ("role", &["read", "write"]),
    ("node", &["read", "admin"]),
    ("user", &["read", "write"]),
    ("project", &["read", "write"]),
];

/// One permission a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    pub resource: &'static str,
    pub action: &'static str,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.resource, self.action)
    }
}

const fn p(resource: &'static str, action: &'static str) -> Permission {
    Permission { resource, action }
}

pub const INSTANCE_READ: Permission = p("instance", "read");
pub const INSTANCE_WRITE: Permission = p("instance", "write");
pub const VOLUME_READ: Permission = p("volume", "read");
pub const VOLUME_WRITE: Permission = p("volume", "write");
pub const SNAPSHOT_READ: Permission = p("snapshot", "read");
pub const SNAPSHOT_WRITE: Permission = p("snapshot", "write");
pub const NETWORK_READ: Permission = p("network", "read");
pub const NETWORK_WRITE: Permission = p("network", "write");
pub const IMAGE_READ: Permission = p("image", "read");
pub const IMAGE_WRITE: Permission = p("image", "write");
pub const EVENT_READ: Permission = p("event", "read");
pub const AUDIT_READ: Permission = p("audit", "read");
pub const BINDING_READ: Permission = p("binding", "read");
pub const BINDING_WRITE: Permission = p("binding", "write");
pub const ROLE_READ: Permission = p("role", "read");
pub const ROLE_WRITE: Permission = p("role", "write");
pub const NODE_READ: Permission = p("node", "read");
pub const NODE_ADMIN: Permission = p("node", "admin");
pub const USER_READ: Permission = p("user", "read");
pub const USER_WRITE: Permission = p("user", "write");
pub const PROJECT_READ: Permission = p("project", "read");
pub const PROJECT_WRITE: Permission = p("project", "write");

/// What a route needs: a permission, or only an authenticated caller (routes that act on
/// the caller's own things, like their API keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Need(Permission),
    AnyCaller,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Need(p) => p.fmt(f),
            Access::AnyCaller => f.write_str("authenticated"),
        }
    }
}

/// A granted pattern: `*`, `<resource>:*` or `<resource>:<action>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Grant(String);

impl Grant {
    /// Parses and checks a grant against [`RESOURCES`]; the error names what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Self(s.to_owned()));
        }
        let (res, act) = s.split_once(':').ok_or_else(|| {
            format!("{s:?} is not resource:action (e.g. instance:read, volume:*)")
        })?;
        let (_, actions) = RESOURCES
            .iter()
            .find(|(r, _)| *r == res)
            .ok_or_else(|| format!("unknown resource {res:?} in {s:?}"))?;
        if act != "*" && !actions.contains(&act) {
            return Err(format!(
                "unknown action {act:?} for {res}: one of {}, or *",
                actions.join(", ")
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn allows(&self, p: Permission) -> bool {
        if self.0 == "*" {
            return true;
        }
        match self.0.split_once(':') {
            Some((r, a)) => r == p.resource && (a == "*" || a == p.action),
            None => false,
        }
    }
}

/// The permissions a caller holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PermissionSet {
    grants: Vec<Grant>,
}

impl PermissionSet {
    pub fn new(grants: impl IntoIterator<Item = Grant>) -> Self {
        let mut grants: Vec<Grant> = grants.into_iter().collect();
        grants.sort();
        grants.dedup();
        Self { grants }
    }

    /// Everything (the bootstrap admin key).
    pub fn all() -> Self {
        Self::new([Grant("*".into())])
    }

    /// Whether this is the bootstrap key's set (`*`).
    pub fn is_all(&self) -> bool {
        self.grants.iter().any(|g| g.0 == "*")
    }

    pub fn allows(&self, p: Permission) -> bool {
        self.grants.iter().any(|g| g.allows(p))
    }

    pub fn permits(&self, access: Access) -> bool {
        match access {
            Access::Need(p) => self.allows(p),
            Access::AnyCaller => true,
        }
    }

    pub fn grants(&self) -> impl Iterator<Item = &str> {
        self.grants.iter().map(Grant::as_str)
    }
}

/// The built-in project roles and the fleet role, with their grants.
pub const BUILTIN_ROLES: &[(&str, &[&str])] = &[
    (
        "viewer",
        &[
            "instance:read",
            "volume:read",
            "snapshot:read",
            "network:read",
            "image:read",
            "event:read",
        ],
    ),
    (
        "member",
        &[
            "instance:*",
            "volume:*",
            "snapshot:*",
            "network:*",
            "image:read",
            "event:read",
        ],
    ),
    (
        "admin",
        &[
            "instance:*",
            "volume:*",
            "snapshot:*",
            "network:*",
            "image:read",
            "event:read",
            "audit:read",
            "binding:*",
            "role:*",
            "project:read",
        ],
    ),
    (
        OPERATOR_ROLE,
        &["node:*", "image:*", "user:*", "project:*", "event:read"],
    ),
];

/// The fleet role: held by users flagged operator, in every project.
pub const OPERATOR_ROLE: &str = "operator";

/// Grants of a built-in role.
pub fn builtin_grants(role: &str) -> Option<Vec<Grant>> {
    BUILTIN_ROLES
        .iter()
        .find(|(n, _)| *n == role)
        .map(|(_, g)| {
            g.iter()
                .filter_map(|s| Grant::parse(s).ok())
                .collect::<Vec<_>>()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(role: &str) -> PermissionSet {
        PermissionSet::new(builtin_grants(role).unwrap())
    }

    #[test]
    fn builtin_roles_parse_and_mean_what_they_say() {
        for (name, grants) in BUILTIN_ROLES {
            for g in *grants {
                assert!(Grant::parse(g).is_ok(), "{name}: {g}");
            }
        }
        let viewer = set("viewer");
        assert!(viewer.allows(INSTANCE_READ) && !viewer.allows(INSTANCE_WRITE));
        let member = set("member");
        assert!(member.allows(VOLUME_WRITE) && !member.allows(BINDING_WRITE));
        assert!(!member.allows(AUDIT_READ) && !member.allows(NODE_READ));
        let admin = set("admin");
        assert!(admin.allows(BINDING_WRITE) && admin.allows(AUDIT_READ));
        assert!(!admin.allows(NODE_READ) && !admin.allows(IMAGE_WRITE));
        let op = set(OPERATOR_ROLE);
        assert!(op.allows(NODE_ADMIN) && op.allows(IMAGE_WRITE) && !op.allows(INSTANCE_READ));
        assert!(PermissionSet::all().allows(NODE_ADMIN));
        assert!(!PermissionSet::default().permits(Access::Need(EVENT_READ)));
        assert!(PermissionSet::default().permits(Access::AnyCaller));
    }

    #[test]
    fn bad_grants_are_refused_with_the_reason() {
        assert!(
            Grant::parse("instance")
                .unwrap_err()
                .contains("resource:action")
        );
        assert!(
            Grant::parse("kitten:read")
                .unwrap_err()
                .contains("unknown resource")
        );
        assert!(
            Grant::parse("node:write")
                .unwrap_err()
                .contains("read, admin")
        );
        assert_eq!(Grant::parse(" volume:* ").unwrap().as_str(), "volume:*");
    }
}
