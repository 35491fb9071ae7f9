//! `identity.v1.ProjectionService`: where each read model stands, and rebuild jobs.

use identity_projections::{JobState, Projection, RebuildJob};
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
        let health = self.core.projections.health(p);
        Ok(pb::ProjectionState {
            name: p.name().to_string(),
            position,
            head_position: head,
            lag: head.saturating_sub(position),
            leader: self.core.projections.is_leader(p),
            consecutive_failures: health.consecutive_failures,
            last_error: health.last_error,
            rebuild: self.core.projections.rebuild_job(p).map(|j| job_to_pb(&j)),
        })
    }
}

fn job_to_pb(j: &RebuildJob) -> pb::RebuildJob {
    pb::RebuildJob {
        job_id: j.id.clone(),
        state: j.state.as_str().to_string(),
        events_replayed: j.events_replayed,
        seconds: j.seconds,
        error: match &j.state {
            JobState::Failed(why) => why.clone(),
            JobState::Running | JobState::Succeeded => String::new(),
        },
    }
}

#[tonic::async_trait]
impl ProjectionService for ProjectionApi {
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

    async fn rebuild_projection(
        &self,
        request: Request<pb::RebuildProjectionRequest>,
    ) -> Result<Response<pb::RebuildProjectionResponse>, Status> {
        let p = Projection::parse(request.get_ref().name.trim()).map_err(ApiError::from)?;
        tracing::Span::current().record("projection", p.name());
        let job = self
            .core
            .projections
            .start_rebuild(p)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(projection = p.name(), job = %job.id, "rebuild started");
        Ok(Response::new(pb::RebuildProjectionResponse {
            job: Some(job_to_pb(&job)),
            state: Some(self.state(p).await?),
        }))
    }
}
