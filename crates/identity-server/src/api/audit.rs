//! `identity.v1.AuditService`.

use std::pin::Pin;
use std::time::Duration;

use identity_domain::DomainError;
use identity_proto::v1 as pb;
use identity_proto::v1::audit_service_server::AuditService;
use identity_store::{EventFilter, FeedCursor, StoredEvent};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::audit::{redact, state_at, states_after_each, AsOf, ReplayError, AGGREGATE_TYPES};
use crate::context::RequestContext;
use crate::convert::{json_to_struct, timestamp_text};
use crate::core::Core;
use crate::error::{ApiError, ApiResult};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

#[derive(Debug, Clone)]
pub struct AuditApi {
    core: Core,
}

impl AuditApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    /// The validated aggregate type and every event of one aggregate of the caller's tenant.
    async fn history_of(
        &self,
        ctx: &RequestContext,
        aggregate_type_raw: &str,
        aggregate_id: String,
    ) -> ApiResult<(String, Vec<StoredEvent>)> {
        let kind = aggregate_type(aggregate_type_raw)?;
        let id = non_empty(aggregate_id)
            .ok_or_else(|| ApiError::from(DomainError::invalid("aggregate_id", "is required")))?;
        let events = self
            .core
            .log
            .aggregate_history(&kind, &ctx.aggregate_id(id.trim()))
            .await?;
        Ok((kind, events))
    }
}

fn replay_error(e: ReplayError) -> ApiError {
    match e {
        ReplayError::UnknownType(_) => DomainError::invalid("aggregate_type", e.to_string()).into(),
        ReplayError::Event { .. } => ApiError::Internal(e.to_string()),
    }
}

fn rfc3339(t: &identity_proto::prost_types::Timestamp) -> ApiResult<String> {
    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .ok_or_else(|| DomainError::invalid("time", "timestamp out of range").into())
}

fn non_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.trim().is_empty())
}

fn aggregate_type(raw: &str) -> ApiResult<String> {
    if AGGREGATE_TYPES.contains(&raw) {
        Ok(raw.to_string())
    } else {
        Err(DomainError::invalid(
            "aggregate_type",
            format!("must be one of {}", AGGREGATE_TYPES.join(", ")),
        )
        .into())
    }
}

/// The store filter for a request, always scoped to the caller's tenant.
fn store_filter(ctx: &RequestContext, f: Option<pb::EventFilter>) -> ApiResult<EventFilter> {
    let f = f.unwrap_or_default();
    Ok(EventFilter {
        tenant: Some(ctx.tenant.to_string()),
        aggregate_type: non_empty(f.aggregate_type)
            .map(|t| aggregate_type(&t))
            .transpose()?,
        aggregate_id: non_empty(f.aggregate_id).map(|id| ctx.aggregate_id(id.trim())),
        event_type: non_empty(f.event_type),
        actor: non_empty(f.actor),
        request_id: non_empty(f.request_id),
        from_time: f.from_time.as_ref().map(rfc3339).transpose()?,
        to_time: f.to_time.as_ref().map(rfc3339).transpose()?,
        from_position: Some(f.from_position).filter(|p| *p > 0),
        to_position: Some(f.to_position).filter(|p| *p > 0),
    })
}

/// An event as auditors see it: tenant prefix removed, secrets redacted.
fn event_to_pb(e: &StoredEvent) -> pb::Event {
    let payload = match redact(e.payload.clone()) {
        serde_json::Value::Object(m) => Some(json_to_struct(&m)),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("value".into(), other);
            Some(json_to_struct(&m))
        }
    };
    let metadata = e
        .metadata
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    pb::Event {
        position: e.position,
        aggregate_type: e.aggregate_type.clone(),
        aggregate_id: e
            .aggregate_id
            .split_once('/')
            .map_or(e.aggregate_id.clone(), |(_, id)| id.to_string()),
        sequence: e.sequence,
        event_type: e.event_type.clone(),
        event_version: e.event_version.clone(),
        payload,
        metadata,
        recorded_at: timestamp_text(&e.recorded_at),
        hash: e.hash.clone().unwrap_or_default(),
    }
}

fn state_struct(v: serde_json::Value) -> Option<identity_proto::prost_types::Struct> {
    match v {
        serde_json::Value::Object(m) => Some(json_to_struct(&m)),
        _ => None,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    #[tracing::instrument(name = "ListEvents", skip_all, fields(tenant, request_id))]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let ctx = RequestContext::from_request(&request, "ListEvents")?;
        let req = request.into_inner();
        let filter = store_filter(&ctx, req.filter)?;
        let size = if req.page_size == 0 {
            DEFAULT_PAGE
        } else {
            req.page_size.min(MAX_PAGE)
        };
        let after = if req.page_token.is_empty() {
            0
        } else {
            req.page_token.parse::<u64>().map_err(|_| {
                ApiError::from(DomainError::invalid(
                    "page_token",
                    "not a token this service returned",
                ))
            })?
        };
        let mut events = self
            .core
            .log
            .list_events(&filter, after, size + 1)
            .await
            .map_err(ApiError::from)?;
        let more = events.len() > size as usize;
        events.truncate(size as usize);
        let next_page_token = if more {
            events
                .last()
                .map(|e| e.position.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(event_to_pb).collect(),
            next_page_token,
        }))
    }

    type StreamEventsStream = EventStream;

    #[tracing::instrument(name = "StreamEvents", skip_all, fields(tenant, request_id))]
    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let ctx = RequestContext::from_request(&request, "StreamEvents")?;
        let req = request.into_inner();
        let filter = store_filter(&ctx, req.filter)?;
        let log = self.core.log.clone();
        // Resume exactly after the client's last event, in feed order.
        let mut cursor = if req.after_position == 0 {
            FeedCursor::default()
        } else {
            log.cursor_of(req.after_position)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| {
                    ApiError::from(DomainError::invalid(
                        "after_position",
                        "no event has this position (yet)",
                    ))
                })?
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::StreamEventsResponse, Status>>(256);
        tokio::spawn(async move {
            let notifier = log.notifier();
            loop {
                let notified = notifier.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let batch = match log.read_feed(cursor, 500).await {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                        return;
                    }
                };
                let empty = batch.is_empty();
                for e in batch {
                    cursor = e.cursor();
                    if filter.matches(&e)
                        && tx
                            .send(Ok(pb::StreamEventsResponse {
                                event: Some(event_to_pb(&e)),
                            }))
                            .await
                            .is_err()
                    {
                        return; // the client went away
                    }
                }
                if empty {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as EventStream,
        ))
    }

    #[tracing::instrument(name = "GetAggregateHistory", skip_all, fields(tenant, request_id))]
    async fn get_aggregate_history(
        &self,
        request: Request<pb::GetAggregateHistoryRequest>,
    ) -> Result<Response<pb::GetAggregateHistoryResponse>, Status> {
        let ctx = RequestContext::from_request(&request, "GetAggregateHistory")?;
        let req = request.into_inner();
        let (kind, events) = self
            .history_of(&ctx, &req.aggregate_type, req.aggregate_id)
            .await?;
        let states = states_after_each(&kind, &events).map_err(replay_error)?;
        let entries = events
            .iter()
            .zip(states)
            .map(|(e, s)| pb::HistoryEntry {
                event: Some(event_to_pb(e)),
                state: state_struct(s),
            })
            .collect();
        Ok(Response::new(pb::GetAggregateHistoryResponse { entries }))
    }

    #[tracing::instrument(name = "GetAggregateStateAt", skip_all, fields(tenant, request_id))]
    async fn get_aggregate_state_at(
        &self,
        request: Request<pb::GetAggregateStateAtRequest>,
    ) -> Result<Response<pb::GetAggregateStateAtResponse>, Status> {
        use pb::get_aggregate_state_at_request::At;
        let ctx = RequestContext::from_request(&request, "GetAggregateStateAt")?;
        let req = request.into_inner();
        let aggregate_id = req.aggregate_id;
        let aggregate_kind = req.aggregate_type;
        let at = match req.at {
            Some(At::Position(p)) => AsOf::Position(p),
            Some(At::Time(t)) => AsOf::Time(rfc3339(&t)?),
            None => {
                return Err(ApiError::from(DomainError::invalid(
                    "at",
                    "a position or a time is required",
                ))
                .into())
            }
        };
        let (kind, events) = self.history_of(&ctx, &aggregate_kind, aggregate_id).await?;
        let found = state_at(&kind, &events, &at).map_err(replay_error)?;
        Ok(Response::new(match found {
            Some((state, last)) => pb::GetAggregateStateAtResponse {
                exists: true,
                state: state_struct(state),
                sequence: last.sequence,
                position: last.position,
            },
            None => pb::GetAggregateStateAtResponse::default(),
        }))
    }

    #[tracing::instrument(name = "VerifyChain", skip_all, fields(tenant, request_id))]
    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let ctx = RequestContext::from_request(&request, "VerifyChain")?;
        let report = self
            .core
            .log
            .verify_chains(Some(ctx.tenant.as_str()), |_| {})
            .await
            .map_err(ApiError::from)?;
        let to_pb = |b: &identity_store::ChainBreak| pb::ChainBreak {
            position: b.position,
            aggregate_type: b.aggregate_type.clone(),
            aggregate_id: b
                .aggregate_id
                .split_once('/')
                .map_or(b.aggregate_id.clone(), |(_, id)| id.to_string()),
            sequence: b.sequence,
            reason: b.reason.clone(),
        };
        Ok(Response::new(pb::VerifyChainResponse {
            intact: report.intact(),
            events_checked: report.events_checked,
            aggregates_checked: report.aggregates_checked,
            unhashed: report.unhashed,
            first_break: report.first_break().map(to_pb),
            breaks: report.breaks.iter().map(to_pb).collect(),
            breaks_found: report.breaks_found,
        }))
    }
}
