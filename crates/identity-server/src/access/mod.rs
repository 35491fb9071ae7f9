//! Who is calling, in which tenant, with which permissions: checked once per request, in the
//! request layer, before any handler runs.
//!
//! - `token`: bearer JWTs (the service's own Ed25519 key, external issuers' JWKS).
//! - `directory`: tenants, project keys, role tables and admins, refreshed from the store.
//! - `permission`: the permission of every RPC, and what each admin type, role and project
//!   key holds.
//!
//! [`Access::admit`] turns a request's credential into a [`Caller`] (principal, tenant,
//! permissions, RPC name, request id) that the layer hands to the handler in the request's
//! extensions. Refusals: no or bad credential → UNAUTHENTICATED; a tenant the principal may
//! not act in → PERMISSION_DENIED (`TENANT_NOT_ALLOWED`); an unknown tenant → NOT_FOUND
//! (`TENANT_NOT_FOUND`); a missing permission → PERMISSION_DENIED (`PERMISSION_DENIED`, with
//! the permission's name).

pub mod bootstrap;
pub mod directory;
pub mod scope;
pub use identity_access::{permission, token};

use std::sync::Arc;

use identity_domain::admin::AdminType;
use identity_domain::user::User;
use identity_domain::values::TenantId;
use identity_store::EventLog;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

pub use directory::Directory;
pub use permission::{Permission, Permissions};
pub use token::{Claims, SigningKey, Verifier};

use crate::error::ApiError;

pub const AUTHORIZATION_HEADER: &str = "authorization";
pub const PROJECT_KEY_HEADER: &str = "x-project-key";
pub const TENANT_HEADER: &str = "x-tenant-id";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

/// Who called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An admin (token kind `admin`); its type and tenants come from the registry.
    Admin {
        id: Uuid,
        admin_type: AdminType,
        /// The session of a token SignIn issued; checked on every call.
        session: Option<String>,
    },
    /// An internal service (token kind `service`), with the permissions its token lists.
    Service { name: String, issuer: String },
    /// A user (token kind `user`), with what the tenant's role table gives the user's roles.
    User {
        user_id: String,
        issuer: String,
        /// The session of a token SignIn issued; checked on every call.
        session: Option<String>,
    },
    /// A project key alone: public data of its tenant.
    ProjectKey { key_id: String },
}

impl Principal {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Admin { .. } => "admin",
            Self::Service { .. } => "service",
            Self::User { .. } => "user",
            Self::ProjectKey { .. } => "project_key",
        }
    }

    pub fn id(&self) -> String {
        match self {
            Self::Admin { id, .. } => id.to_string(),
            Self::Service { name, .. } => name.clone(),
            Self::User { user_id, .. } => user_id.clone(),
            Self::ProjectKey { key_id } => key_id.clone(),
        }
    }

    /// `kind:id`, the actor recorded on every event.
    pub fn actor(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id: &dyn std::fmt::Display = match self {
            Self::Admin { id, .. } => id,
            Self::Service { name, .. } => name,
            Self::User { user_id, .. } => user_id,
            Self::ProjectKey { key_id } => key_id,
        };
        write!(f, "{}:{id}", self.kind())
    }
}

/// An admitted call: what the handler may rely on.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The tenant the call acts in; `None` only for global RPCs.
    pub tenant: Option<TenantId>,
    pub permissions: Permissions,
    /// The RPC's name (`GetUser`), from the route.
    pub method: &'static str,
    pub request_id: String,
    pub correlation_id: String,
    /// The client's address, where the transport knows it (rate limits count by it).
    pub client: Option<std::net::IpAddr>,
    /// The personal fields the caller may read.
    pub scopes: scope::Scopes,
}

impl Caller {
    pub fn holds(&self, p: Permission) -> bool {
        self.permissions.contains(p)
    }

    pub fn is_super_admin(&self) -> bool {
        matches!(
            self.principal,
            Principal::Admin {
                admin_type: AdminType::SuperAdmin,
                ..
            }
        )
    }
}

/// The gate every request passes (cheap to clone: one shared part).
#[derive(Debug, Clone)]
pub struct Access(Arc<Gate>);

#[derive(Debug)]
pub struct Gate {
    pub verifier: Verifier,
    pub directory: Directory,
    log: EventLog,
    /// Whether gRPC reflection is served (to anyone: it describes the API, not data).
    pub reflection: bool,
    /// The service's own public keys as a JWKS document (`/.well-known/jwks.json`).
    pub jwks: String,
    /// The service's own signing key, for the tokens SignIn issues.
    pub signer: Option<SigningKey>,
}

impl std::ops::Deref for Access {
    type Target = Gate;
    fn deref(&self) -> &Gate {
        &self.0
    }
}

/// A request's metadata value: printable ASCII, at most `max` characters, `None` if empty.
fn header<'h>(
    headers: &'h http::HeaderMap,
    key: &'static str,
    max: usize,
) -> Result<Option<&'h str>, ApiError> {
    let Some(v) = headers.get(key) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| ApiError::Metadata {
            key,
            message: "must be printable ASCII".into(),
        })?
        .trim();
    if s.is_empty() {
        return Ok(None);
    }
    // `to_str` admits visible ASCII and tabs only: a tab is the one control left to refuse.
    if s.len() > max || s.bytes().any(|b| b == b'\t') {
        return Err(ApiError::Metadata {
            key,
            message: format!("must be at most {max} printable characters"),
        });
    }
    Ok(Some(s))
}

/// A project key as handed out: `ik_<key id>_<secret>`.
pub fn project_key_secret(key_id: &str, secret: &str) -> String {
    format!("ik_{key_id}_{secret}")
}

/// The stored digest of a project key's secret.
pub fn project_key_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Access {
    pub fn new(
        verifier: Verifier,
        directory: Directory,
        log: EventLog,
        reflection: bool,
        own_key: Option<&SigningKey>,
        previous: &[token::PublicKey],
    ) -> Self {
        // The current key first; rotated-out keys stay published until their tokens expire.
        let keys: Vec<serde_json::Value> = own_key
            .map(|k| k.public().clone())
            .into_iter()
            .chain(previous.iter().cloned())
            .fold(Vec::<token::PublicKey>::new(), |mut all, k| {
                if !all.iter().any(|x| x.kid == k.kid) {
                    all.push(k);
                }
                all
            })
            .iter()
            .map(token::PublicKey::jwk)
            .collect();
        Self(Arc::new(Gate {
            verifier,
            directory,
            log,
            reflection,
            jwks: serde_json::json!({ "keys": keys }).to_string(),
            signer: own_key.cloned(),
        }))
    }

    /// Checks one request against the rule of its route.
    pub async fn admit(
        &self,
        rule: &'static permission::Rule,
        headers: &http::HeaderMap,
    ) -> Result<Caller, ApiError> {
        let request_id = header(headers, REQUEST_ID_HEADER, 128)?
            .map_or_else(|| Uuid::new_v4().to_string(), str::to_string);
        let correlation_id = header(headers, CORRELATION_ID_HEADER, 128)?
            .map_or_else(|| request_id.clone(), str::to_string);
        let requested = header(headers, TENANT_HEADER, 63)?
            .map(|t| {
                TenantId::parse(t).map_err(|e| ApiError::Metadata {
                    key: TENANT_HEADER,
                    message: e.to_string(),
                })
            })
            .transpose()?;
        // The largest header on every call: `to_str`'s one pass is all the checking it needs
        // here (a tab or any other stray byte cannot be part of a valid token).
        let bearer = match headers.get(AUTHORIZATION_HEADER) {
            None => None,
            Some(v) if v.len() > 8192 => {
                return Err(ApiError::Unauthenticated(
                    "the bearer token is too long".into(),
                ))
            }
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::Unauthenticated("authorization must be printable ASCII".into())
            })?),
        };
        let key = header(headers, PROJECT_KEY_HEADER, 256)?;
        let snapshot = self.directory.snapshot();
        let mut scopes = scope::Scopes::all();
        let (principal, home, permissions) = match (bearer, key) {
            (Some(b), _) => {
                let token = b
                    .strip_prefix("Bearer ")
                    .or_else(|| b.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        ApiError::Unauthenticated("authorization must be `Bearer <token>`".into())
                    })?
                    .trim();
                let verified = self
                    .verifier
                    .verify(token)
                    .map_err(|e| ApiError::Unauthenticated(e.0))?;
                if let Some(listed) = &verified.claims.scopes {
                    scopes = scope::Scopes::parse_names(listed.iter().map(String::as_str))
                        .map_err(|name| {
                            ApiError::Unauthenticated(format!(
                                "the token names an unknown scope {name:?}"
                            ))
                        })?;
                }
                self.principal_of(&verified, &snapshot).await?
            }
            (None, Some(k)) => {
                let (key_id, _) = k
                    .strip_prefix("ik_")
                    .and_then(|rest| rest.split_once('_'))
                    .ok_or_else(|| {
                        ApiError::Unauthenticated("the project key is malformed".into())
                    })?;
                let (tenant, _) = snapshot
                    .keys
                    .get(key_id)
                    .filter(|(_, digest)| same(digest, &project_key_digest(k)))
                    .ok_or_else(|| {
                        ApiError::Unauthenticated("the project key is unknown or revoked".into())
                    })?;
                // Public profiles only: no personal field at all.
                scopes = scope::Scopes::none();
                (
                    Principal::ProjectKey {
                        key_id: key_id.to_string(),
                    },
                    Some(TenantId::parse(tenant).map_err(|e| ApiError::Internal(e.to_string()))?),
                    permission::of_project_key(),
                )
            }
            (None, None) => {
                return Err(ApiError::Unauthenticated(
                    "this call needs `authorization: Bearer <token>` or `x-project-key`".into(),
                ))
            }
        };
        let tenant = if rule.permission.is_global() {
            None
        } else {
            let unnamed = || ApiError::Metadata {
                key: TENANT_HEADER,
                message: "name the tenant to act in".into(),
            };
            let tenant = match &principal {
                // An admin picks among its tenants (a SUPER_ADMIN: any that exists); without
                // x-tenant-id, the token's tenant or its only one.
                Principal::Admin { id, admin_type, .. } => {
                    let t = requested.or(home).ok_or_else(unnamed)?;
                    let acts = *admin_type == AdminType::SuperAdmin
                        || snapshot.admins.get(id).is_some_and(|a| a.acts_in(&t));
                    if !acts {
                        return Err(ApiError::TenantNotAllowed(t.to_string()));
                    }
                    t
                }
                // Everyone else acts in the tenant of its credential, and only there.
                _ => match (requested, home) {
                    (Some(r), Some(h)) if r != h => {
                        return Err(ApiError::TenantNotAllowed(r.to_string()))
                    }
                    (_, Some(h)) => h,
                    (Some(r), None) => return Err(ApiError::TenantNotAllowed(r.to_string())),
                    (None, None) => return Err(unnamed()),
                },
            };
            if snapshot.tenant(tenant.as_str()).is_none() {
                return Err(ApiError::Domain(
                    identity_domain::DomainError::TenantNotFound,
                ));
            }
            Some(tenant)
        };
        let permissions = match (&principal, &tenant) {
            (
                Principal::User {
                    user_id, session, ..
                },
                Some(t),
            ) => {
                self.user_permissions(t, user_id, session.as_deref(), &snapshot)
                    .await?
            }
            (
                Principal::Admin {
                    id,
                    session: Some(session),
                    ..
                },
                _,
            ) => {
                self.admin_session(id, session).await?;
                permissions
            }
            _ => permissions,
        };
        if !permissions.contains(rule.permission) {
            return Err(ApiError::PermissionDenied(rule.permission));
        }
        // The handler's span records tenant and request id (`RequestContext`): each record
        // costs the JSON log format a re-serialization of the span's fields, so once only.
        Ok(Caller {
            client: None,
            scopes,
            principal,
            tenant,
            permissions,
            method: rule.method,
            request_id,
            correlation_id,
        })
    }

    /// The principal of verified claims, the tenant its credential is for, and what it holds.
    async fn principal_of(
        &self,
        verified: &token::Verified,
        snapshot: &directory::Snapshot,
    ) -> Result<(Principal, Option<TenantId>, Permissions), ApiError> {
        let claims = &verified.claims;
        let home = verified.tenant.clone();
        match claims.kind.as_str() {
            "admin" => {
                let id = Uuid::parse_str(&claims.sub).map_err(|_| {
                    ApiError::Unauthenticated(
                        "an admin token's subject must be the admin id".into(),
                    )
                })?;
                let admin = snapshot
                    .admins
                    .get(&id)
                    .filter(|a| !a.removed)
                    .ok_or_else(|| {
                        ApiError::Unauthenticated("the admin is unknown or removed".into())
                    })?;
                let admin_type = admin
                    .admin_type
                    .ok_or_else(|| ApiError::Internal("an admin without a type".into()))?;
                // Without x-tenant-id: the token's tenant, else the admin's only tenant.
                let home = match home {
                    Some(h) => Some(h),
                    None if admin.tenants.len() == 1 => admin.tenants.iter().next().cloned(),
                    None => None,
                };
                Ok((
                    Principal::Admin {
                        id,
                        admin_type,
                        session: claims.sid.clone(),
                    },
                    home,
                    permission::of_admin(admin_type),
                ))
            }
            "service" => Ok((
                Principal::Service {
                    name: claims.sub.clone(),
                    issuer: claims.iss.clone(),
                },
                home,
                verified.permissions,
            )),
            "user" => Ok((
                Principal::User {
                    user_id: claims.sub.clone(),
                    issuer: claims.iss.clone(),
                    session: claims.sid.clone(),
                },
                home,
                Permissions::default(),
            )),
            _ => Err(ApiError::Unauthenticated(
                "the token's kind must be admin, service or user".into(),
            )),
        }
    }

    /// A token from an admin's SignIn lives only as long as its session.
    async fn admin_session(&self, id: &Uuid, session: &str) -> Result<(), ApiError> {
        let admin = self
            .log
            .load::<identity_domain::admin::Admin>(&identity_domain::admin::admin_aggregate_id(id))
            .await?;
        let live = identity_domain::values::SessionId::parse(session)
            .ok()
            .zip(admin)
            .is_some_and(|(s, a)| a.aggregate.sign_in.is_live(s, chrono::Utc::now()));
        if live {
            Ok(())
        } else {
            Err(ApiError::Unauthenticated("the session has ended".into()))
        }
    }

    /// What the tenant's role table gives a user's current roles.
    async fn user_permissions(
        &self,
        tenant: &TenantId,
        user_id: &str,
        session: Option<&str>,
        snapshot: &directory::Snapshot,
    ) -> Result<Permissions, ApiError> {
        let id = identity_domain::derive::aggregate_id(tenant, user_id);
        let user = self.log.load::<User>(&id).await?;
        let Some(user) = user.filter(|u| u.aggregate.id.is_some() && u.aggregate.active) else {
            return Err(ApiError::Unauthenticated(
                "the user is unknown or inactive".into(),
            ));
        };
        // A token from SignIn lives only as long as its session: signing out, a reused
        // refresh token or a password reset end it on every replica at once.
        if let Some(session) = session {
            let now = chrono::Utc::now();
            let live = identity_domain::values::SessionId::parse(session)
                .ok()
                .is_some_and(|id| user.aggregate.live_sessions(now).any(|(s, _)| *s == id));
            if !live {
                return Err(ApiError::Unauthenticated("the session has ended".into()));
            }
        }
        Ok(snapshot
            .permissions_of_roles(
                tenant.as_str(),
                user.aggregate.roles.iter().map(|r| r.as_str()),
            )
            .union(Permissions::of_self()))
    }
}

/// The caller the request layer admitted, from a handler's request.
pub fn caller_of<T>(request: &tonic::Request<T>) -> Result<Arc<Caller>, ApiError> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("the request passed no access check".into()))
}
