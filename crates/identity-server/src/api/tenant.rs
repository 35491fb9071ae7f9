//! `identity.v1.TenantService`: the tenant registry, project keys and role tables.

use identity_domain::tenant::{tenant_aggregate_id, Tenant, TenantCommand};
use identity_domain::values::{Name, TenantId};
use identity_proto::v1 as pb;
use identity_proto::v1::tenant_service_server::TenantService;
use rand::Rng as _;
use tonic::{Request, Response, Status};

use crate::access::{caller_of, permission, project_key_digest, project_key_secret};
use crate::context::{event_metadata, RequestContext};
use crate::convert::timestamp;
use crate::core::Core;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
pub struct TenantApi {
    core: Core,
}

fn tenant_to_pb(t: &Tenant) -> pb::Tenant {
    pb::Tenant {
        tenant_id: t.id.as_ref().map(ToString::to_string).unwrap_or_default(),
        name: t.name.as_ref().map(ToString::to_string).unwrap_or_default(),
        created_at: timestamp(t.created_at),
    }
}

fn key_to_pb(k: &identity_domain::tenant::ProjectKey) -> pb::ProjectKey {
    pb::ProjectKey {
        key_id: k.key_id.clone(),
        name: k.name.to_string(),
        issued_at: timestamp(Some(k.issued_at)),
        revoked_at: timestamp(k.revoked_at),
    }
}

impl TenantApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    /// Runs a registry command for the caller's tenant, then refreshes this replica's
    /// registry so that its next call already sees the change.
    async fn run(
        &self,
        ctx: &RequestContext,
        command: TenantCommand,
    ) -> ApiResult<std::sync::Arc<Tenant>> {
        let executed = self
            .core
            .execute_as::<Tenant>(
                ctx.event_metadata(),
                &tenant_aggregate_id(&ctx.tenant),
                command,
                &(),
            )
            .await?;
        self.core.refresh_access().await?;
        Ok(executed.aggregate)
    }
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let caller = caller_of(&request)?;
        let req = request.get_ref();
        let tenant =
            TenantId::parse(req.tenant_id.trim()).map_err(|e| ApiError::from(e.at("tenant_id")))?;
        let name = if req.name.trim().is_empty() {
            Name::parse(tenant.as_str())
        } else {
            Name::parse(&req.name)
        }
        .map_err(|e| ApiError::from(e.at("name")))?;
        let executed = self
            .core
            .execute_as::<Tenant>(
                event_metadata(&caller, Some(&tenant)),
                &tenant_aggregate_id(&tenant),
                TenantCommand::Create {
                    tenant,
                    name,
                    at: chrono::Utc::now(),
                },
                &(),
            )
            .await?;
        self.core.refresh_access().await?;
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(tenant_to_pb(&executed.aggregate)),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let snapshot = self.core.access.directory.snapshot();
        let t = snapshot
            .tenant(ctx.tenant.as_str())
            .ok_or(ApiError::Domain(
                identity_domain::DomainError::TenantNotFound,
            ))?;
        Ok(Response::new(pb::GetTenantResponse {
            tenant: Some(tenant_to_pb(t)),
        }))
    }

    async fn list_tenants(
        &self,
        _request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let snapshot = self.core.access.directory.snapshot();
        let mut tenants: Vec<pb::Tenant> =
            snapshot.tenants.values().map(|t| tenant_to_pb(t)).collect();
        tenants.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        Ok(Response::new(pb::ListTenantsResponse { tenants }))
    }

    async fn issue_project_key(
        &self,
        request: Request<pb::IssueProjectKeyRequest>,
    ) -> Result<Response<pb::IssueProjectKeyResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let name =
            Name::parse(&request.get_ref().name).map_err(|e| ApiError::from(e.at("name")))?;
        let (key_id, secret) = {
            let mut rng = rand::thread_rng();
            let id: [u8; 6] = rng.gen();
            let secret: [u8; 32] = rng.gen();
            (hex::encode(id), key_text(&secret))
        };
        let full = project_key_secret(&key_id, &secret);
        let tenant = self
            .run(
                &ctx,
                TenantCommand::IssueProjectKey {
                    key_id: key_id.clone(),
                    digest: project_key_digest(&full),
                    name,
                    at: chrono::Utc::now(),
                },
            )
            .await?;
        let key = tenant
            .keys
            .get(&key_id)
            .ok_or_else(|| ApiError::Internal("the issued key is missing".into()))?;
        tracing::info!(key_id = %key_id, "project key issued");
        Ok(Response::new(pb::IssueProjectKeyResponse {
            key: Some(key_to_pb(key)),
            secret: full,
        }))
    }

    async fn revoke_project_key(
        &self,
        request: Request<pb::RevokeProjectKeyRequest>,
    ) -> Result<Response<pb::RevokeProjectKeyResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let key_id = request.get_ref().key_id.trim().to_string();
        let tenant = self
            .run(
                &ctx,
                TenantCommand::RevokeProjectKey {
                    key_id: key_id.clone(),
                    at: chrono::Utc::now(),
                },
            )
            .await?;
        let key = tenant.keys.get(&key_id).ok_or(ApiError::Domain(
            identity_domain::DomainError::ProjectKeyNotFound,
        ))?;
        tracing::info!(key_id = %key_id, "project key revoked");
        Ok(Response::new(pb::RevokeProjectKeyResponse {
            key: Some(key_to_pb(key)),
        }))
    }

    async fn list_project_keys(
        &self,
        request: Request<pb::ListProjectKeysRequest>,
    ) -> Result<Response<pb::ListProjectKeysResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let snapshot = self.core.access.directory.snapshot();
        let keys = snapshot
            .tenant(ctx.tenant.as_str())
            .map(|t| t.keys.values().map(key_to_pb).collect())
            .unwrap_or_default();
        Ok(Response::new(pb::ListProjectKeysResponse { keys }))
    }

    async fn set_role_permissions(
        &self,
        request: Request<pb::SetRolePermissionsRequest>,
    ) -> Result<Response<pb::SetRolePermissionsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.get_ref();
        let role = identity_domain::values::Role::parse(&req.role)
            .map_err(|e| ApiError::from(e.at("role")))?;
        let permissions = permission::parse_names(req.permissions.iter().map(String::as_str))
            .map_err(|unknown| {
                ApiError::from(identity_domain::DomainError::invalid(
                    "permissions",
                    format!("unknown permission {unknown:?}"),
                ))
            })?;
        if let Some(p) = permissions.iter().find(|p| p.is_global()) {
            return Err(ApiError::from(identity_domain::DomainError::invalid(
                "permissions",
                format!(
                    "{} acts on the whole service; roles cannot grant it",
                    p.name()
                ),
            ))
            .into());
        }
        // Granting more than one holds would be a way up: a caller grants only what it has.
        if let Some(p) = permissions.iter().find(|p| !ctx.caller.holds(**p)) {
            return Err(ApiError::Forbidden(format!(
                "a role cannot grant {}, which the caller does not hold",
                p.name()
            ))
            .into());
        }
        self.run(
            &ctx,
            TenantCommand::SetRolePermissions {
                role: role.to_string(),
                permissions: permissions.iter().map(|p| p.name().to_string()).collect(),
                at: chrono::Utc::now(),
            },
        )
        .await?;
        let table = self
            .core
            .access
            .directory
            .snapshot()
            .roles_of(ctx.tenant.as_str());
        let granted = table.get(role.as_str()).cloned().unwrap_or_default();
        Ok(Response::new(pb::SetRolePermissionsResponse {
            role: Some(pb::Role {
                role: role.to_string(),
                permissions: granted.iter().map(|p| p.name().to_string()).collect(),
            }),
        }))
    }

    async fn list_roles(
        &self,
        request: Request<pb::ListRolesRequest>,
    ) -> Result<Response<pb::ListRolesResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let table = self
            .core
            .access
            .directory
            .snapshot()
            .roles_of(ctx.tenant.as_str());
        Ok(Response::new(pb::ListRolesResponse {
            roles: table
                .into_iter()
                .map(|(role, ps)| pb::Role {
                    role,
                    permissions: ps.iter().map(|p| p.name().to_string()).collect(),
                })
                .collect(),
        }))
    }
}

/// A key secret's text: URL-safe base64 without padding (43 characters for 32 bytes).
fn key_text(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
