//! `identity.v1.AdminService`: the people who operate the service and their tenants.
//!
//! Beyond the permission each RPC needs, two rules keep admins from climbing: only a
//! SUPER_ADMIN creates SUPER_ADMINs or touches another tenant, and an admin never changes
//! a SUPER_ADMIN unless it is one.

use std::collections::BTreeSet;
use std::sync::Arc;

use identity_domain::admin::{admin_aggregate_id, admin_id, Admin, AdminCommand, AdminType};
use identity_domain::values::{Email, Name, TenantId};
use identity_domain::DomainError;
use identity_proto::v1 as pb;
use identity_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::context::RequestContext;
use crate::convert::timestamp;
use crate::convert::{checked, parse_fields};
use crate::core::Core;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
pub struct AdminApi {
    core: Core,
}

fn type_to_pb(t: Option<AdminType>) -> i32 {
    (match t {
        Some(AdminType::SuperAdmin) => pb::AdminType::SuperAdmin,
        Some(AdminType::TenantAdmin) => pb::AdminType::TenantAdmin,
        Some(AdminType::Auditor) => pb::AdminType::Auditor,
        None => pb::AdminType::Unspecified,
    }) as i32
}

fn admin_to_pb(a: &Admin) -> pb::Admin {
    pb::Admin {
        admin_id: a.id.map(|i| i.to_string()).unwrap_or_default(),
        email: a
            .email
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        display_name: a
            .display_name
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        admin_type: type_to_pb(a.admin_type),
        tenants: a.tenants.iter().map(ToString::to_string).collect(),
        removed: a.removed,
        created_at: timestamp(a.created_at),
    }
}

fn parse_admin_id(raw: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(raw.trim())
        .map_err(|_| DomainError::invalid("admin_id", "must be a UUID").into())
}

fn parse_tenant(raw: &str) -> ApiResult<TenantId> {
    TenantId::parse(raw.trim()).map_err(|e| e.at("tenant_id").into())
}

impl AdminApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    /// Refuses what only a SUPER_ADMIN may do: acting on another tenant than the call's, or
    /// on a SUPER_ADMIN.
    fn guard(
        &self,
        ctx: &RequestContext,
        tenant: &TenantId,
        target: Option<AdminType>,
    ) -> ApiResult<()> {
        if ctx.caller.is_super_admin() {
            return Ok(());
        }
        if *tenant != ctx.tenant {
            return Err(ApiError::Forbidden(format!(
                "only a SUPER_ADMIN manages admins of another tenant ({tenant})"
            )));
        }
        if target == Some(AdminType::SuperAdmin) {
            return Err(ApiError::Forbidden(
                "only a SUPER_ADMIN manages SUPER_ADMINs".into(),
            ));
        }
        Ok(())
    }

    /// [`AdminApi::guard`] in every tenant the admin belongs to: what acting on the admin as a
    /// whole (removing it, setting its password) needs.
    fn guard_everywhere(&self, ctx: &RequestContext, id: Uuid) -> ApiResult<()> {
        let snapshot = self.core.access.directory.snapshot();
        let current = snapshot
            .admins
            .get(&id)
            .ok_or(ApiError::Domain(DomainError::AdminNotFound))?;
        for t in &current.tenants {
            self.guard(ctx, t, current.admin_type)?;
        }
        Ok(())
    }

    async fn change(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        tenant: &TenantId,
        command: AdminCommand,
    ) -> ApiResult<Arc<Admin>> {
        let current = self
            .core
            .access
            .directory
            .snapshot()
            .admins
            .get(&id)
            .cloned();
        let current = current.ok_or(ApiError::Domain(DomainError::AdminNotFound))?;
        self.guard(ctx, tenant, current.admin_type)?;
        if self
            .core
            .access
            .directory
            .snapshot()
            .tenant(tenant.as_str())
            .is_none()
        {
            return Err(DomainError::TenantNotFound.into());
        }
        let executed = self
            .core
            .execute_as::<Admin>(
                ctx.event_metadata(),
                &admin_aggregate_id(&id),
                command,
                &self.core.user_services,
            )
            .await?;
        self.core.refresh_access().await?;
        Ok(executed.aggregate)
    }
}

impl AdminApi {
    /// Attaches an admin to a tenant or detaches it (`make` says which).
    async fn membership<T>(
        &self,
        request: &Request<T>,
        admin_id: &str,
        tenant_id: &str,
        make: fn(TenantId, chrono::DateTime<chrono::Utc>) -> AdminCommand,
    ) -> ApiResult<Option<pb::Admin>> {
        let ctx = RequestContext::from_request(request)?;
        let id = parse_admin_id(admin_id)?;
        let tenant = parse_tenant(tenant_id)?;
        let command = make(tenant.clone(), chrono::Utc::now());
        let admin = self.change(&ctx, id, &tenant, command).await?;
        Ok(Some(admin_to_pb(&admin)))
    }
}

/// CreateAdmin's fields, parsed (every field violation at once).
struct NewAdmin {
    email: Email,
    display_name: Name,
    admin_type: AdminType,
    tenants: BTreeSet<TenantId>,
}

impl TryFrom<&pb::CreateAdminRequest> for NewAdmin {
    type Error = ApiError;

    fn try_from(req: &pb::CreateAdminRequest) -> ApiResult<Self> {
        let mut v = identity_domain::Violations::new();
        let mut tenants = BTreeSet::new();
        for (i, t) in req.tenants.iter().enumerate() {
            if let Some(t) = v.check(&format!("tenants[{i}]"), TenantId::parse(t.trim())) {
                tenants.insert(t);
            }
        }
        parse_fields! { v;
            email = checked("email", Email::parse(&req.email)),
            display_name = checked("display_name", Name::parse(&req.display_name)),
            admin_type = checked(
                "admin_type",
                match pb::AdminType::try_from(req.admin_type) {
                    Ok(pb::AdminType::SuperAdmin) => Ok(AdminType::SuperAdmin),
                    Ok(pb::AdminType::TenantAdmin) => Ok(AdminType::TenantAdmin),
                    Ok(pb::AdminType::Auditor) => Ok(AdminType::Auditor),
                    _ => Err(identity_domain::ValueError::new(
                        "must be ADMIN_TYPE_SUPER_ADMIN, ADMIN_TYPE_TENANT_ADMIN or ADMIN_TYPE_AUDITOR",
                    )),
                },
            ),
        }
        Ok(Self {
            email,
            display_name,
            admin_type,
            tenants,
        })
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_admins(
        &self,
        request: Request<pb::ListAdminsRequest>,
    ) -> Result<Response<pb::ListAdminsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let snapshot = self.core.access.directory.snapshot();
        let mut admins: Vec<pb::Admin> = snapshot
            .admins
            .values()
            .filter(|a| a.tenants.contains(&ctx.tenant))
            .map(|a| admin_to_pb(a))
            .collect();
        admins.sort_by(|a, b| a.email.cmp(&b.email));
        Ok(Response::new(pb::ListAdminsResponse { admins }))
    }

    async fn create_admin(
        &self,
        request: Request<pb::CreateAdminRequest>,
    ) -> Result<Response<pb::CreateAdminResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let NewAdmin {
            email,
            display_name,
            admin_type,
            mut tenants,
        } = NewAdmin::try_from(request.get_ref())?;
        if tenants.is_empty() {
            tenants.insert(ctx.tenant.clone());
        }
        let snapshot = self.core.access.directory.snapshot();
        for t in &tenants {
            self.guard(&ctx, t, Some(admin_type))?;
            if snapshot.tenant(t.as_str()).is_none() {
                return Err(ApiError::from(DomainError::TenantNotFound).into());
            }
        }
        let id = admin_id(&email);
        let executed = self
            .core
            .execute_as::<Admin>(
                ctx.event_metadata(),
                &admin_aggregate_id(&id),
                AdminCommand::Create {
                    admin_id: id,
                    email,
                    display_name,
                    admin_type,
                    tenants,
                    at: chrono::Utc::now(),
                },
                &self.core.user_services,
            )
            .await?;
        self.core.refresh_access().await?;
        tracing::info!(admin_id = %id, admin_type = admin_type.as_str(), "admin created");
        Ok(Response::new(pb::CreateAdminResponse {
            admin: Some(admin_to_pb(&executed.aggregate)),
        }))
    }

    async fn assign_admin_to_tenant(
        &self,
        request: Request<pb::AssignAdminToTenantRequest>,
    ) -> Result<Response<pb::AssignAdminToTenantResponse>, Status> {
        let (admin_id, tenant_id) = (&request.get_ref().admin_id, &request.get_ref().tenant_id);
        let admin = self
            .membership(&request, admin_id, tenant_id, |tenant, at| {
                AdminCommand::AssignTenant { tenant, at }
            })
            .await?;
        Ok(Response::new(pb::AssignAdminToTenantResponse { admin }))
    }

    async fn remove_admin_from_tenant(
        &self,
        request: Request<pb::RemoveAdminFromTenantRequest>,
    ) -> Result<Response<pb::RemoveAdminFromTenantResponse>, Status> {
        let (admin_id, tenant_id) = (&request.get_ref().admin_id, &request.get_ref().tenant_id);
        let admin = self
            .membership(&request, admin_id, tenant_id, |tenant, at| {
                AdminCommand::RemoveTenant { tenant, at }
            })
            .await?;
        Ok(Response::new(pb::RemoveAdminFromTenantResponse { admin }))
    }

    async fn set_admin_password(
        &self,
        request: Request<pb::SetAdminPasswordRequest>,
    ) -> Result<Response<pb::SetAdminPasswordResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let id = parse_admin_id(&req.admin_id)?;
        let password = identity_domain::user::Secret::new_password(&req.password)
            .map_err(|why| ApiError::from(DomainError::invalid("password", why)))?;
        let itself = matches!(
            &ctx.caller.principal,
            crate::access::Principal::Admin { id: me, .. } if *me == id
        );
        if !itself {
            use crate::access::Permission;
            if !ctx.caller.holds(Permission::ManageAdmins) {
                return Err(ApiError::PermissionDenied(Permission::ManageAdmins).into());
            }
            self.guard_everywhere(&ctx, id)?;
        }
        let executed = self
            .core
            .execute_as::<Admin>(
                ctx.event_metadata(),
                &admin_aggregate_id(&id),
                AdminCommand::SetPassword {
                    password,
                    at: chrono::Utc::now(),
                },
                &self.core.user_services,
            )
            .await?;
        self.core.refresh_access().await?;
        tracing::info!(admin_id = %id, "admin password set");
        Ok(Response::new(pb::SetAdminPasswordResponse {
            position: executed.position,
        }))
    }

    async fn remove_admin(
        &self,
        request: Request<pb::RemoveAdminRequest>,
    ) -> Result<Response<pb::RemoveAdminResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let id = parse_admin_id(&request.get_ref().admin_id)?;
        // An admin of several tenants is removed everywhere: a tenant admin may do that only
        // when the admin belongs to its tenant alone.
        self.guard_everywhere(&ctx, id)?;
        let tenant = ctx.tenant.clone();
        let admin = self
            .change(
                &ctx,
                id,
                &tenant,
                AdminCommand::Remove {
                    at: chrono::Utc::now(),
                },
            )
            .await?;
        Ok(Response::new(pb::RemoveAdminResponse {
            admin: Some(admin_to_pb(&admin)),
        }))
    }
}
