//! Who is calling, for which tenant, and the metadata every event records.

use std::collections::HashMap;

use identity_domain::values::TenantId;
use tonic::Request;

use crate::error::{ApiError, ApiResult};

pub const TENANT_HEADER: &str = "x-tenant-id";
pub const ACTOR_HEADER: &str = "x-actor";
pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

/// The caller's context, taken from gRPC metadata.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub tenant: TenantId,
    pub actor: String,
    pub request_id: String,
    pub correlation_id: String,
    /// The RPC's name, recorded as the command of every event it appends.
    pub rpc: &'static str,
}

fn header<T>(req: &Request<T>, key: &'static str) -> ApiResult<Option<String>> {
    match req.metadata().get(key) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| ApiError::Metadata {
                key,
                message: "must be printable ASCII".into(),
            })?;
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            if s.len() > 128 || s.chars().any(|c| c.is_control()) {
                return Err(ApiError::Metadata {
                    key,
                    message: "must be at most 128 printable characters".into(),
                });
            }
            Ok(Some(s.to_string()))
        }
    }
}

impl RequestContext {
    pub fn from_request<T>(req: &Request<T>, rpc: &'static str) -> ApiResult<Self> {
        let tenant_raw = header(req, TENANT_HEADER)?.ok_or(ApiError::Metadata {
            key: TENANT_HEADER,
            message: "every call must name its tenant".into(),
        })?;
        let tenant = TenantId::parse(&tenant_raw).map_err(|e| ApiError::Metadata {
            key: TENANT_HEADER,
            message: e.to_string(),
        })?;
        let actor = header(req, ACTOR_HEADER)?.unwrap_or_else(|| "anonymous".to_string());
        let request_id =
            header(req, REQUEST_ID_HEADER)?.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let correlation_id =
            header(req, CORRELATION_ID_HEADER)?.unwrap_or_else(|| request_id.clone());
        let ctx = Self {
            tenant,
            actor,
            request_id,
            correlation_id,
            rpc,
        };
        let span = tracing::Span::current();
        span.record("tenant", ctx.tenant.as_str());
        span.record("request_id", ctx.request_id.as_str());
        Ok(ctx)
    }

    /// The metadata stored beside every event this request appends.
    pub fn event_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("tenant".to_string(), self.tenant.to_string()),
            ("actor".to_string(), self.actor.clone()),
            ("request_id".to_string(), self.request_id.clone()),
            ("correlation_id".to_string(), self.correlation_id.clone()),
            ("command".to_string(), self.rpc.to_string()),
            ("time".to_string(), chrono::Utc::now().to_rfc3339()),
        ])
    }

    /// An aggregate id in this tenant.
    pub fn aggregate_id(&self, id: impl std::fmt::Display) -> String {
        identity_domain::derive::aggregate_id(&self.tenant, id)
    }
}
