//! What every gRPC service shares: the event log, the domain's services, and the command
//! path (execute, surface recorded rejections, claim unique values).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use identity_domain::claim::{ClaimCommand, UniqueClaim};
use identity_domain::derive::claim_id;
use identity_domain::user::{User, UserServices};
use identity_domain::values::UserId;
use identity_domain::{ClaimKind, DomainError, RecordsRejection};
use identity_projections::{Projection, Projections};
use identity_store::{widen, Built, EventLog, Executed, Loaded, Unit};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

use crate::context::RequestContext;
use crate::credentials::Passwords;
use crate::error::{ApiError, ApiResult};
use crate::settings::Settings;

#[derive(Debug, Clone)]
pub struct Core {
    pub log: EventLog,
    pub passwords: Passwords,
    pub user_services: UserServices,
    pub settings: Arc<Settings>,
    pub projections: Projections,
    pub limits: crate::limits::Limits,
    /// The shared tail of the feed behind every StreamEvents call.
    pub hub: crate::stream::FeedHub,
    /// The gate every request passes, and the access registry it reads.
    pub access: crate::access::Access,
    /// The outbox writer and relay of one-time codes.
    pub delivery: crate::delivery::Delivery,
    /// The keys that sign and verify checkpoints of the log.
    pub checkpoints: crate::checkpoints::Checkpoints,
    /// Where each EVM network's smart contract wallets are deployed from.
    pub factories: crate::factories::Factories,
}

/// The longest a query waits for its read model when the call sets no deadline.
const DEFAULT_READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The call's deadline from the `grpc-timeout` header (e.g. `250m`, `5S`), if any.
pub fn deadline_of<T>(request: &tonic::Request<T>) -> std::time::Duration {
    let parsed = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (num, unit) = v.split_at(v.len().checked_sub(1)?);
            let n: u64 = num.parse().ok()?;
            Some(match unit {
                "H" => std::time::Duration::from_secs(n.saturating_mul(3600)),
                "M" => std::time::Duration::from_secs(n.saturating_mul(60)),
                "S" => std::time::Duration::from_secs(n),
                "m" => std::time::Duration::from_millis(n),
                "u" => std::time::Duration::from_micros(n),
                "n" => std::time::Duration::from_nanos(n),
                _ => return None,
            })
        });
    // Leave some of the caller's budget for the answer itself: a tenth, and never under
    // 50 ms (a 300 ms deadline with 30 ms left was seen to expire before READ_MODEL_BEHIND
    // reached a caller on a loaded machine).
    let margin = |d: std::time::Duration| (d / 10).max(std::time::Duration::from_millis(50));
    parsed
        .map_or(DEFAULT_READ_WAIT, |d| d.saturating_sub(margin(d)))
        .min(std::time::Duration::from_secs(30))
}

/// An aggregate the core runs commands on: its errors are the domain's, its events say which
/// of them record a refused attempt, and its command can be decided again after a lost race.
pub trait Runnable:
    Aggregate<Error = DomainError, Event: RecordsRejection, Command: Clone + Send + Sync>
    + Clone
    + 'static
{
}

impl<A> Runnable for A where
    A: Aggregate<Error = DomainError, Event: RecordsRejection, Command: Clone + Send + Sync>
        + Clone
        + 'static
{
}

impl Core {
    pub fn new(
        log: EventLog,
        settings: Arc<Settings>,
        projections: Projections,
        access: crate::access::Access,
    ) -> Self {
        // Half the cores hash passwords (at a lower priority); the rest serve everything else.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let passwords = Passwords::new((cores / 2).max(1), settings.password_queue);
        let user_services = UserServices {
            credentials: Arc::new(passwords.clone()),
        };
        Self {
            hub: crate::stream::FeedHub::start(log.clone(), settings.stream_buffer),
            delivery: crate::delivery::Delivery::new(log.clone(), settings.clone()),
            checkpoints: crate::checkpoints::Checkpoints::default(),
            factories: crate::factories::Factories::default(),
            log,
            passwords,
            user_services,
            limits: crate::limits::Limits::new(&settings),
            settings,
            projections,
            access,
        }
    }

    /// Reloads the access registry (tenants, keys, admins) after this replica changed it, so
    /// its next request already sees the change.
    pub async fn refresh_access(&self) -> ApiResult<()> {
        Ok(self.access.directory.refresh().await?)
    }

    /// Read-your-writes: waits until read model `p` has applied `min_position`, within
    /// `wait`; past it, fails with UNAVAILABLE saying how far behind the read model is.
    pub async fn catch_up(
        &self,
        p: Projection,
        min_position: u64,
        wait: std::time::Duration,
    ) -> ApiResult<()> {
        if min_position == 0 {
            return Ok(());
        }
        if self.projections.wait_for(p, min_position, wait).await? {
            return Ok(());
        }
        let head = self.log.head_position().await?;
        Err(ApiError::ReadModelBehind {
            projection: p.name(),
            requested: min_position,
            applied: self.projections.cursor(p).position,
            head,
        })
    }

    /// Runs a command on one aggregate of the caller's tenant. An event that records a
    /// refused attempt (a wrong code) is kept, and the caller still gets its error.
    pub async fn execute<A: Runnable>(
        &self,
        ctx: &RequestContext,
        id: &str,
        command: A::Command,
        services: &A::Services,
    ) -> ApiResult<Executed<A>> {
        self.execute_as(ctx.event_metadata(), id, command, services)
            .await
    }

    /// [`Core::execute`] outside any one tenant (the access registry), recording `metadata`.
    pub async fn execute_as<A: Runnable>(
        &self,
        metadata: std::collections::HashMap<String, String>,
        id: &str,
        command: A::Command,
        services: &A::Services,
    ) -> ApiResult<Executed<A>> {
        self.transact::<A, _>(metadata, id, |mut unit| {
            let command = command.clone();
            Box::pin(async move {
                let decided = unit.decide::<A>(id, command, services).await?;
                Ok((unit, decided))
            })
        })
        .await
    }

    /// Runs a unit of work: `build` makes its decisions (claims, the command they guard,
    /// releases) and hands the unit back with the decision on the aggregate the caller
    /// asked about (`id`); all their events commit in one transaction or none do, whatever
    /// happens to the caller, recording `metadata` (a request's: `ctx.event_metadata()`).
    /// After a lost race the unit is built again on fresh state.
    pub async fn transact<'c, A, F>(
        &'c self,
        metadata: std::collections::HashMap<String, String>,
        id: &str,
        build: F,
    ) -> ApiResult<Executed<A>>
    where
        A: Runnable,
        F: FnMut(Unit<'c>) -> Built<'c, A, ApiError>,
    {
        use tracing::Instrument as _;
        let span = tracing::Span::current();
        span.record("aggregate_id", id);
        let command_span = tracing::info_span!(
            "command",
            aggregate_type = A::TYPE,
            aggregate_id = id,
            events = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        let result = self
            .log
            .run_unit(&metadata, build, |e| {
                ApiError::from(widen::<DomainError>(e))
            })
            .instrument(command_span.clone())
            .await;
        let executed = match result {
            Ok(executed) => executed,
            Err(e) => {
                span.record("outcome", outcome_of(&e));
                command_span.record("outcome", outcome_of(&e));
                return Err(e);
            }
        };
        command_span.record("events", executed.events.len());
        if let Some(rejection) = executed.events.iter().find_map(RecordsRejection::rejection) {
            span.record("outcome", rejection.reason());
            command_span.record("outcome", rejection.reason());
            return Err(rejection.into());
        }
        span.record("outcome", "ok");
        command_span.record("outcome", "ok");
        for e in &executed.events {
            metrics::counter!("identity_events_appended_total", "aggregate_type" => A::TYPE, "event_type" => cqrs_es::DomainEvent::event_type(e)).increment(1);
        }
        Ok(executed)
    }

    /// Loads an aggregate of the caller's tenant, or fails with `missing`.
    pub async fn load<A: Aggregate>(&self, id: &str, missing: DomainError) -> ApiResult<Loaded<A>> {
        tracing::Span::current().record("aggregate_id", id);
        self.log.load::<A>(id).await?.ok_or(missing.into())
    }

    pub async fn load_user(
        &self,
        ctx: &RequestContext,
        user_id: UserId,
    ) -> ApiResult<Loaded<User>> {
        let loaded = self
            .load::<User>(&ctx.aggregate_id(user_id), DomainError::UserNotFound)
            .await?;
        if loaded.aggregate.erased {
            return Err(DomainError::UserErased.into());
        }
        Ok(loaded)
    }

    /// Claims a unique value for `owner` inside a unit. Claiming a value one already holds
    /// stages nothing.
    pub async fn claim_in(
        unit: &mut Unit<'_>,
        ctx: &RequestContext,
        kind: ClaimKind,
        value: &str,
        owner: UserId,
    ) -> ApiResult<()> {
        let key = unit.log().id_key(ctx.tenant.as_str()).await?;
        let id = claim_id(&key, &ctx.tenant, kind, value);
        unit.decide::<UniqueClaim>(&id, ClaimCommand::Claim { kind, owner }, &())
            .await?;
        Ok(())
    }

    /// Gives claimed values up inside a unit, each if `owner` holds it (a contact change,
    /// an erasure).
    pub async fn release_in(
        unit: &mut Unit<'_>,
        ctx: &RequestContext,
        values: impl IntoIterator<Item = (ClaimKind, String)>,
        owner: UserId,
    ) -> ApiResult<()> {
        let key = unit.log().id_key(ctx.tenant.as_str()).await?;
        for (kind, value) in values {
            let id = claim_id(&key, &ctx.tenant, kind, &value);
            unit.decide::<UniqueClaim>(&id, ClaimCommand::Release { owner }, &())
                .await?;
        }
        Ok(())
    }

    /// Moves `owner`'s claim of `kind` to `value` inside a unit (after a contact or person
    /// code change): claims it, and gives up `previous`, the value held before, if it differs.
    pub async fn reclaim_in(
        unit: &mut Unit<'_>,
        ctx: &RequestContext,
        (kind, value): (ClaimKind, &str),
        previous: Option<&str>,
        owner: UserId,
    ) -> ApiResult<()> {
        Self::claim_in(unit, ctx, kind, value, owner).await?;
        let replaced = previous.filter(|old| *old != value);
        Self::release_in(
            unit,
            ctx,
            replaced.map(|old| (kind, old.to_string())),
            owner,
        )
        .await
    }

    /// A fresh one-time code and its hash; the hash binds the code to one aggregate.
    pub fn new_code(&self, aggregate_id: &str) -> (String, String, DateTime<Utc>) {
        let code = format!("{:06}", rand::thread_rng().gen_range(0..1_000_000u32));
        let hash = self.hash_code(aggregate_id, &code);
        let expires = Utc::now() + chrono::Duration::seconds(self.settings.code_ttl_secs);
        (code, hash, expires)
    }

    /// Runs a command on a user of the caller's tenant.
    pub async fn execute_user(
        &self,
        ctx: &RequestContext,
        user: UserId,
        command: identity_domain::user::UserCommand,
    ) -> ApiResult<Executed<User>> {
        self.execute::<User>(ctx, &ctx.aggregate_id(user), command, &self.user_services)
            .await
    }

    /// The caller's tenant's key of ids derived from personal values.
    pub async fn id_key(&self, ctx: &RequestContext) -> ApiResult<identity_domain::derive::IdKey> {
        Ok(self.log.id_key(ctx.tenant.as_str()).await?)
    }

    /// The owner of a unique value in the caller's tenant, if any.
    pub async fn owner_of(
        &self,
        ctx: &RequestContext,
        kind: ClaimKind,
        value: &str,
    ) -> ApiResult<Option<UserId>> {
        let id = claim_id(&self.id_key(ctx).await?, &ctx.tenant, kind, value);
        Ok(self
            .log
            .load::<UniqueClaim>(&id)
            .await?
            .and_then(|c| c.aggregate.owner))
    }

    /// Runs a command that starts a one-time code. The code goes to the delivery channel
    /// (staged in the outbox before the command, sent once it took effect) and comes back in
    /// the response only to callers holding `read:codes`; everyone else gets "".
    pub async fn execute_with_code(
        &self,
        ctx: &RequestContext,
        user: UserId,
        code: crate::delivery::Code<'_>,
        command: identity_domain::user::UserCommand,
    ) -> ApiResult<(Executed<User>, String)> {
        let staged = self.delivery.stage(ctx, user, &code).await?;
        let result = self.execute_user(ctx, user, command).await;
        // Only a refusal is final; after any other failure the command may still have taken
        // effect, and the relay decides from the log.
        let refused = matches!(result, Err(ApiError::Domain(_)));
        self.delivery.settle(staged, !refused).await;
        let executed = result?;
        let shown = if ctx.caller.holds(crate::access::Permission::ReadCodes) {
            code.code.to_string()
        } else {
            String::new()
        };
        Ok((executed, shown))
    }

    /// The stored form of a code: SHA-256 over a server secret, the aggregate and the code,
    /// so a leaked event log does not reveal codes by brute force without the secret.
    pub fn hash_code(&self, aggregate_id: &str, code: &str) -> String {
        let mut h = Sha256::new();
        for part in [
            self.settings.code_pepper.as_str(),
            aggregate_id,
            code.trim(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

fn outcome_of(e: &ApiError) -> &'static str {
    e.classify().reason
}
