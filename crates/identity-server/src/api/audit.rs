//! `identity.v1.AuditService`.

use std::pin::Pin;

use identity_domain::DomainError;
use identity_proto::v1 as pb;
use identity_proto::v1::audit_service_server::AuditService;
use identity_store::{EventFilter, FeedCursor, StoredEvent};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::access::scope::{cut_stored, Scopes};
use crate::context::RequestContext;
use crate::convert::{json_to_struct, timestamp_text};
use crate::core::Core;
use crate::error::{ApiError, ApiResult};
use identity_projections::replay::{
    redact, state_at, states_after, AsOf, ReplayError, AGGREGATE_TYPES,
};

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

    /// The bytes a page of audit answers may fill: half the response limit, leaving room
    /// for framing and one entry that pushes past it.
    fn page_budget(&self) -> usize {
        self.core.settings.max_response_bytes / 2
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

/// Runs a replay on the blocking pool: folding a long history is CPU work that must not
/// hold an async worker (and every call queued behind it).
async fn replay<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ReplayError> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("replay task: {e}")))?
        .map_err(replay_error)
}

fn page_size(requested: u32) -> u32 {
    if requested == 0 {
        DEFAULT_PAGE
    } else {
        requested.min(MAX_PAGE)
    }
}

/// A page token this service returned (a position or a sequence), or 0 for none.
fn page_token(raw: &str) -> ApiResult<u64> {
    if raw.is_empty() {
        return Ok(0);
    }
    raw.parse::<u64>().map_err(|_| {
        ApiError::from(DomainError::invalid(
            "page_token",
            "not a token this service returned",
        ))
    })
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

/// An event as auditors see it: tenant prefix removed, secrets redacted, personal fields
/// outside the caller's scopes removed (and named).
fn event_to_pb(e: &StoredEvent, scopes: Scopes) -> pb::Event {
    let mut payload = redact(e.payload.clone());
    let withheld_fields = cut_stored(&mut payload, scopes);
    let payload = match payload {
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
        withheld_fields,
    }
}

/// An aggregate's state cut to the caller's scopes, and what was cut.
fn state_struct(
    mut v: serde_json::Value,
    scopes: Scopes,
) -> (Option<identity_proto::prost_types::Struct>, Vec<String>) {
    let withheld = cut_stored(&mut v, scopes);
    let state = match v {
        serde_json::Value::Object(m) => Some(json_to_struct(&m)),
        _ => None,
    };
    (state, withheld)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let filter = store_filter(&ctx, req.filter)?;
        let size = page_size(req.page_size);
        let after = page_token(&req.page_token)?;
        let _slot = self.core.limits.expensive("ListEvents").await?;
        let mut events = self
            .core
            .log
            .list_events(&filter, after, size + 1)
            .await
            .map_err(ApiError::from)?;
        let mut more = events.len() > size as usize;
        events.truncate(size as usize);
        let budget = self.page_budget();
        let mut used = 0;
        let mut page = Vec::with_capacity(events.len());
        for e in &events {
            let event = event_to_pb(e, ctx.caller.scopes);
            used += identity_proto::prost::Message::encoded_len(&event);
            if used > budget && !page.is_empty() {
                more = true;
                break;
            }
            page.push(event);
        }
        let next_page_token = if more {
            page.last()
                .map(|e| e.position.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListEventsResponse {
            events: page,
            next_page_token,
        }))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let remote = request.remote_addr();
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
        let slot = self.core.limits.stream(ctx.tenant.as_str(), remote)?;
        let hub = self.core.hub.clone();
        let tenant = ctx.tenant.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::StreamEventsResponse, Status>>(256);
        let scopes = ctx.caller.scopes;
        tokio::spawn(async move {
            let _slot = slot;
            let send = |e: &StoredEvent| {
                let tx = tx.clone();
                let event = event_to_pb(e, scopes);
                async move {
                    tx.send(Ok(pb::StreamEventsResponse { event: Some(event) }))
                        .await
                        .is_ok()
                }
            };
            // Catch up alone, this tenant's events only, until a short page; then subscribe
            // to the shared tail and catch up once more to its starting point (a short
            // read, usually empty), so that a long catch-up never counts as lagging.
            let mut subscription = None;
            let events = loop {
                loop {
                    let (page, more) =
                        match crate::stream::catch_up_page(&log, cursor, &tenant).await {
                            Ok(p) => p,
                            Err(e) => {
                                let _ = tx.send(Err(Status::from(ApiError::from(e)))).await;
                                return;
                            }
                        };
                    for e in &page {
                        cursor = e.cursor();
                        if filter.matches(e) && !send(e).await {
                            return; // the client went away
                        }
                    }
                    if !more {
                        break;
                    }
                }
                match subscription.take() {
                    None => subscription = Some(hub.subscribe()),
                    Some(s) => break s,
                }
            };
            let mut events = events.events;
            loop {
                let next = tokio::select! {
                    next = events.recv() => next,
                    () = tx.closed() => return,
                };
                match next {
                    Ok(e) => {
                        if e.cursor() <= cursor {
                            continue; // delivered by the catch-up
                        }
                        cursor = e.cursor();
                        if filter.matches(&e) && !send(&e).await {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(behind)) => {
                        let error = ApiError::SlowConsumer {
                            behind,
                            resume_after: cursor.position,
                        };
                        tracing::info!(%error, "ending a stream whose consumer fell behind");
                        let _ = tx.send(Err(Status::from(error))).await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as EventStream,
        ))
    }

    async fn get_aggregate_history(
        &self,
        request: Request<pb::GetAggregateHistoryRequest>,
    ) -> Result<Response<pb::GetAggregateHistoryResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let size = page_size(req.page_size);
        let after = page_token(&req.page_token)?;
        let _slot = self.core.limits.expensive("GetAggregateHistory").await?;
        let (kind, events) = self
            .history_of(&ctx, &req.aggregate_type, req.aggregate_id)
            .await?;
        let start = events.partition_point(|e| e.sequence <= after);
        let end = start.saturating_add(size as usize).min(events.len());
        let (events, states) = replay(move || {
            let states = states_after(&kind, &events, start..end)?;
            Ok((events, states))
        })
        .await?;
        let budget = self.page_budget();
        let mut used = 0;
        let mut entries = Vec::with_capacity(states.len());
        for (e, s) in events[start..end].iter().zip(states) {
            let (state, withheld_fields) = state_struct(s, ctx.caller.scopes);
            let entry = pb::HistoryEntry {
                event: Some(event_to_pb(e, ctx.caller.scopes)),
                state,
                withheld_fields,
            };
            used += identity_proto::prost::Message::encoded_len(&entry);
            if used > budget && !entries.is_empty() {
                break;
            }
            entries.push(entry);
        }
        let shown = start + entries.len();
        let next_page_token = if shown < events.len() {
            events[shown - 1].sequence.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::GetAggregateHistoryResponse {
            entries,
            next_page_token,
        }))
    }

    async fn get_aggregate_state_at(
        &self,
        request: Request<pb::GetAggregateStateAtRequest>,
    ) -> Result<Response<pb::GetAggregateStateAtResponse>, Status> {
        use pb::get_aggregate_state_at_request::At;
        let ctx = RequestContext::from_request(&request)?;
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
        let _slot = self.core.limits.expensive("GetAggregateStateAt").await?;
        let (kind, events) = self.history_of(&ctx, &aggregate_kind, aggregate_id).await?;
        let found = replay(move || state_at(&kind, &events, &at)).await?;
        Ok(Response::new(match found {
            Some((state, last)) => {
                let (state, withheld_fields) = state_struct(state, ctx.caller.scopes);
                pb::GetAggregateStateAtResponse {
                    exists: true,
                    state,
                    sequence: last.sequence,
                    position: last.position,
                    withheld_fields,
                }
            }
            None => pb::GetAggregateStateAtResponse::default(),
        }))
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let ctx = RequestContext::from_request(&request)?;
        let _slot = self.core.limits.expensive("VerifyChain").await?;
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
        let log = &self.core.log;
        let checkpoint = match log.latest_checkpoint().await.map_err(ApiError::from)? {
            Some(c) => Some(
                log.check_checkpoint(&c, &self.core.checkpoints.keys)
                    .await
                    .map_err(ApiError::from)?,
            ),
            None => None,
        };
        let intact = report.intact() && checkpoint.as_ref().is_none_or(|c| c.matches());
        Ok(Response::new(pb::VerifyChainResponse {
            intact,
            events_checked: report.events_checked,
            aggregates_checked: report.aggregates_checked,
            unhashed: report.unhashed,
            first_break: report.first_break().map(to_pb),
            breaks: report.breaks.iter().map(to_pb).collect(),
            breaks_found: report.breaks_found,
            checkpoint: checkpoint.map(|c| pb::CheckpointCheck {
                position: c.checkpoint.position,
                events: c.checkpoint.events,
                signed_at: timestamp_text(&c.checkpoint.signed_at),
                key_id: c.checkpoint.key_id.clone(),
                matches: c.matches(),
                problem: c.problem.unwrap_or_default(),
            }),
        }))
    }
}
