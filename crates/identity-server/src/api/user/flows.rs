//! The use cases behind UserService's writes: registration with its claims, upsert, and
//! contact changes confirmed by code.

use super::*;

impl UserApi {
    /// Claims every unique value and registers, in one unit: the claims and the
    /// registration commit together or not at all, whatever the caller does meanwhile. A
    /// user registered inactive (`active: Some(false)`) is deactivated in the same unit.
    pub(super) async fn register(
        &self,
        ctx: &RequestContext,
        cmd: RegisterUser,
        active: Option<bool>,
    ) -> ApiResult<Executed<User>> {
        let owner = cmd.user_id;
        let claims = claims_of(&cmd);
        let id = ctx.aggregate_id(owner);
        let services = &self.core.user_services;
        self.core
            .transact::<User, _>(ctx.event_metadata(), &id, |mut unit| {
                let (claims, cmd, id) = (&claims, cmd.clone(), &id);
                Box::pin(async move {
                    for (kind, value) in claims {
                        Core::claim_in(&mut unit, ctx, *kind, value, owner).await?;
                    }
                    let mut decided = unit
                        .decide::<User>(id, UserCommand::Register(Box::new(cmd)), services)
                        .await?;
                    if active == Some(false) {
                        let at = Utc::now();
                        decided = unit
                            .decide::<User>(id, UserCommand::Deactivate { at }, services)
                            .await?;
                    }
                    Ok((unit, decided))
                })
            })
            .await
    }

    /// Runs a command made at this moment on the user a request names; gives its position.
    pub(super) async fn on_user<T>(
        &self,
        request: &Request<T>,
        user_id: &str,
        command: impl FnOnce(DateTime<Utc>) -> UserCommand,
    ) -> ApiResult<u64> {
        let ctx = RequestContext::from_request(request)?;
        let user = parse_user_id("user_id", user_id)?;
        let executed = self.run(&ctx, user, command(Utc::now())).await?;
        Ok(executed.position)
    }

    pub(super) async fn run(
        &self,
        ctx: &RequestContext,
        user: UserId,
        command: UserCommand,
    ) -> ApiResult<Executed<User>> {
        self.core.execute_user(ctx, user, command).await
    }

    /// Confirms a pending email or phone change in one unit: the confirmation, the claim
    /// of the new value (so two users can never confirm the same one) and the release of
    /// the old one commit together. A wrong code commits only its recorded attempt.
    pub(super) async fn confirm_contact(
        &self,
        ctx: &RequestContext,
        user: UserId,
        kind: ClaimKind,
        code: &str,
    ) -> ApiResult<(String, u64)> {
        let aggregate_id = ctx.aggregate_id(user);
        let code_hash = self.core.hash_code(&aggregate_id, code);
        let services = &self.core.user_services;
        let executed = self
            .core
            .transact::<User, _>(ctx.event_metadata(), &aggregate_id, |mut unit| {
                let (id, code_hash) = (&aggregate_id, code_hash.clone());
                Box::pin(async move {
                    let at = Utc::now();
                    let command = match kind {
                        ClaimKind::Phone => UserCommand::ConfirmPhone { code_hash, at },
                        ClaimKind::Email | ClaimKind::ExternalId | ClaimKind::PersonCode => {
                            UserCommand::ConfirmEmail { code_hash, at }
                        }
                    };
                    let decided = unit.decide::<User>(id, command, services).await?;
                    for e in &decided.events {
                        let (new, previous) = match e {
                            UserEvent::EmailConfirmed {
                                email, previous, ..
                            } => (
                                email.to_string(),
                                previous.as_ref().map(ToString::to_string),
                            ),
                            UserEvent::PhoneConfirmed {
                                phone, previous, ..
                            } => (
                                phone.to_string(),
                                previous.as_ref().map(ToString::to_string),
                            ),
                            _ => continue,
                        };
                        let previous = previous.as_deref();
                        Core::reclaim_in(&mut unit, ctx, (kind, &new), previous, user).await?;
                    }
                    Ok((unit, decided))
                })
            })
            .await?;
        let value = match kind {
            ClaimKind::Phone => executed.aggregate.phone.as_ref().map(ToString::to_string),
            ClaimKind::Email | ClaimKind::ExternalId | ClaimKind::PersonCode => {
                executed.aggregate.email.as_ref().map(ToString::to_string)
            }
        };
        Ok((value.unwrap_or_default(), executed.position))
    }

    /// Starts a contact change after checking (early, not finally) that nobody else holds
    /// the value; the final decision is the claim made at confirmation.
    pub(super) async fn request_contact(
        &self,
        ctx: &RequestContext,
        user: UserId,
        kind: ClaimKind,
        value: &str,
        command: impl FnOnce(String, chrono::DateTime<Utc>, chrono::DateTime<Utc>) -> UserCommand,
    ) -> ApiResult<(String, chrono::DateTime<Utc>, u64)> {
        self.core.limits.code_request(&ctx.caller_key())?;
        if let Some(owner) = self.core.owner_of(ctx, kind, value).await? {
            if owner != user {
                return Err(ApiError::from(DomainError::AlreadyAssigned(kind)));
            }
        }
        let (code, hash, expires) = self.core.new_code(&ctx.aggregate_id(user));
        let purpose = match kind {
            ClaimKind::Phone => Purpose::PhoneChange,
            ClaimKind::Email | ClaimKind::ExternalId | ClaimKind::PersonCode => {
                Purpose::EmailChange
            }
        };
        let message = Code {
            purpose,
            channel: kind.as_str(),
            destination: value,
            code: &code,
            code_hash: &hash,
            expires_at: expires,
        };
        let (executed, shown) = self
            .core
            .execute_with_code(
                ctx,
                user,
                message,
                command(hash.clone(), expires, Utc::now()),
            )
            .await?;
        Ok((shown, expires, executed.position))
    }
}
