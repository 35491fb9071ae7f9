//! The context a handler works in: built once, by the request layer, from the admitted
//! [`Caller`]; handlers never read metadata or name their RPC themselves.

use std::collections::HashMap;
use std::sync::Arc;

use identity_domain::values::TenantId;
use tonic::Request;

use crate::access::{caller_of, Caller, Principal};
use crate::error::{ApiError, ApiResult};

/// A tenant-scoped call.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub tenant: TenantId,
    pub caller: Arc<Caller>,
    /// The RPC's name, recorded as the command of every event it appends.
    pub rpc: &'static str,
}

impl RequestContext {
    /// The context the request layer built for this call.
    pub fn from_request<T>(req: &Request<T>) -> ApiResult<Self> {
        let caller = caller_of(req)?;
        let tenant = caller.tenant.clone().ok_or_else(|| {
            ApiError::Internal(format!("{} admitted without a tenant", caller.method))
        })?;
        let span = tracing::Span::current();
        span.record("tenant", tenant.as_str());
        span.record("request_id", caller.request_id.as_str());
        Ok(Self {
            tenant,
            rpc: caller.method,
            caller,
        })
    }

    /// The metadata stored beside every event this request appends.
    pub fn event_metadata(&self) -> HashMap<String, String> {
        event_metadata(&self.caller, Some(&self.tenant))
    }

    /// Who to count a rate-limited call against: the principal and the client address.
    pub fn caller_key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.tenant,
            self.caller.principal,
            self.caller
                .client
                .map_or_else(String::new, |ip| ip.to_string())
        )
    }

    /// An aggregate id in this tenant.
    pub fn aggregate_id(&self, id: impl std::fmt::Display) -> String {
        identity_domain::derive::aggregate_id(&self.tenant, id)
    }
}

/// Who really called, as recorded on events: the principal's kind and id (`actor` is
/// `kind:id`), the tenant, the admin id where an admin acted, and the token's issuer.
pub fn event_metadata(caller: &Caller, tenant: Option<&TenantId>) -> HashMap<String, String> {
    let mut m = HashMap::from([
        ("actor".to_string(), caller.principal.actor()),
        (
            "principal_kind".to_string(),
            caller.principal.kind().to_string(),
        ),
        ("principal_id".to_string(), caller.principal.id()),
        ("request_id".to_string(), caller.request_id.clone()),
        ("correlation_id".to_string(), caller.correlation_id.clone()),
        ("command".to_string(), caller.method.to_string()),
        ("time".to_string(), chrono::Utc::now().to_rfc3339()),
    ]);
    if let Some(t) = tenant {
        m.insert("tenant".to_string(), t.to_string());
    }
    match &caller.principal {
        Principal::Admin { id, .. } => {
            m.insert("admin_id".to_string(), id.to_string());
        }
        Principal::Service { issuer, .. } | Principal::User { issuer, .. } => {
            m.insert("issuer".to_string(), issuer.clone());
        }
        Principal::ProjectKey { .. } => {}
    }
    m
}
