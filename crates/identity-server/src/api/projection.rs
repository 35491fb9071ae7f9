//! `identity.v1.ProjectionService`: where each read model stands, and rebuilds.

use std::time::Instant;

use identity_projections::Projection;
use identity_proto::v1 as pb;
use identity_proto::v1::projection_service_server::ProjectionService;
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
pub struct ProjectionApi {
    core: Core,
}

impl ProjectionApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    async fn state(&self, p: Projection) -> ApiResult<pb::ProjectionState> {
        let head = self.core.log.head_position().await?;
        let position = self.core.projections.cursor(p).position;
        Ok(pb::ProjectionState {
            name: p.name().to_string(),
            position,
            head_position: head,
            lag: head.saturating_sub(position),
            leader: self.core.projections.is_leader(p),
        })
    }
}

#[tonic::async_trait]
impl ProjectionService for ProjectionApi {
    #[tracing::instrument(name = "ListProjections", skip_all)]
    async fn list_projections(
        &self,
        _request: Request<pb::ListProjectionsRequest>,
    ) -> Result<Response<pb::ListProjectionsResponse>, Status> {
        let mut projections = Vec::new();
        for p in Projection::ALL {
            projections.push(self.state(p).await?);
        }
        Ok(Response::new(pb::ListProjectionsResponse { projections }))
    }

    #[tracing::instrument(name = "RebuildProjection", skip_all, fields(projection))]
    async fn rebuild_projection(
        &self,
        request: Request<pb::RebuildProjectionRequest>,
    ) -> Result<Response<pb::RebuildProjectionResponse>, Status> {
        let p = Projection::parse(request.get_ref().name.trim()).map_err(ApiError::from)?;
        tracing::Span::current().record("projection", p.name());
        let started = Instant::now();
        let replayed = self
            .core
            .projections
            .rebuild(p)
            .await
            .map_err(ApiError::from)?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(projection = p.name(), replayed, seconds, "rebuilt");
        Ok(Response::new(pb::RebuildProjectionResponse {
            events_replayed: replayed,
            seconds,
            state: Some(self.state(p).await?),
        }))
    }
}
