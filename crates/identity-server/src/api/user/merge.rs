//! MergeUsers (docs/adr/0007-merging-users.md): in one unit, the duplicate is marked merged
//! into the survivor, the survivor takes the contact values it lacks and the duplicate's
//! roles, and every claim of the duplicate (email, phone, external id, person code) moves to
//! the survivor, so a lookup by any of those values finds the survivor and nobody can take
//! one in between; the duplicate's wallets change owner, keeping their ids, addresses and
//! balances; a survivor without an identity receives the duplicate's identification.

use identity_domain::claim::values_held;
use identity_domain::identification::{Identification, IdentificationCommand, Subject};
use identity_domain::user::{SetContacts, Upsert};
use identity_domain::values::WalletId;
use identity_domain::wallet::{Owner, OwnerType, Wallet, WalletCommand};

use super::*;

/// The command that gives a wallet to the survivor.
fn give(survivor: UserId) -> WalletCommand {
    WalletCommand::ChangeOwner {
        owner: Owner {
            owner_type: OwnerType::User,
            owner_id: survivor.to_string(),
        },
        at: Utc::now(),
    }
}

/// A value the survivor lacks, taken from the duplicate.
fn lacking<T: Clone>(kept: &Option<T>, duplicate: &Option<T>) -> Option<Option<T>> {
    (kept.is_none() && duplicate.is_some()).then(|| duplicate.clone())
}

impl UserApi {
    pub(super) async fn merge(
        &self,
        ctx: &RequestContext,
        duplicate: UserId,
        survivor: UserId,
        wait: std::time::Duration,
    ) -> ApiResult<Executed<User>> {
        let wallets = self.wallets_of(ctx, duplicate, wait).await?;
        let executed = self.merge_unit(ctx, duplicate, survivor, &wallets).await?;
        // A wallet opened for the duplicate while the merge was being decided (its owner
        // check came before the merge committed) moves too; after the merge no wallet can be
        // opened for the duplicate.
        let late = self.wallets_of(ctx, duplicate, wait).await?;
        if !late.is_empty() {
            self.give_wallets(ctx, survivor, &late).await?;
        }
        Ok(executed)
    }

    /// The wallets of a user, from the balances read model caught up to the log's head.
    async fn wallets_of(
        &self,
        ctx: &RequestContext,
        user: UserId,
        wait: std::time::Duration,
    ) -> ApiResult<Vec<WalletId>> {
        let head = self
            .core
            .log
            .head_position()
            .await
            .map_err(ApiError::from)?;
        self.core.catch_up(Projection::Balances, head, wait).await?;
        let views = self
            .core
            .projections
            .wallets_of(
                ctx.tenant.as_str(),
                OwnerType::User.as_str(),
                &user.to_string(),
            )
            .await
            .map_err(ApiError::from)?;
        views
            .iter()
            .map(|w| WalletId::parse(&w.wallet_id).map_err(|e| ApiError::from(e.at("wallet_id"))))
            .collect()
    }

    /// Gives wallets to the survivor, in one unit.
    async fn give_wallets(
        &self,
        ctx: &RequestContext,
        survivor: UserId,
        wallets: &[WalletId],
    ) -> ApiResult<()> {
        let Some(first) = wallets.first() else {
            return Ok(());
        };
        self.core
            .transact::<Wallet, _>(
                ctx.event_metadata(),
                &ctx.aggregate_id(*first),
                |mut unit| {
                    Box::pin(async move {
                        let mut last = None;
                        for w in wallets {
                            last = Some(
                                unit.decide::<Wallet>(&ctx.aggregate_id(*w), give(survivor), &())
                                    .await?,
                            );
                        }
                        let decided =
                            last.ok_or_else(|| ApiError::from(DomainError::WalletNotFound))?;
                        Ok((unit, decided))
                    })
                },
            )
            .await?;
        Ok(())
    }

    async fn merge_unit(
        &self,
        ctx: &RequestContext,
        duplicate: UserId,
        survivor: UserId,
        wallets: &[WalletId],
    ) -> ApiResult<Executed<User>> {
        let (from, into) = (ctx.aggregate_id(duplicate), ctx.aggregate_id(survivor));
        let services = &self.core.user_services;
        self.core
            .transact::<User, _>(ctx.event_metadata(), &from, |mut unit| {
                let (from, into) = (&from, &into);
                Box::pin(async move {
                    let at = Utc::now();
                    let kept = unit.state::<User>(into).await.map_err(ApiError::from)?;
                    if kept.id.is_none() {
                        return Err(DomainError::UserNotFound.into());
                    }
                    if kept.erased {
                        return Err(DomainError::UserErased.into());
                    }
                    if let Some(further) = kept.merged_into {
                        return Err(DomainError::UserMerged {
                            into: further.to_string(),
                        }
                        .into());
                    }
                    let decided = unit
                        .decide::<User>(from, UserCommand::MergeInto { survivor, at }, services)
                        .await?;
                    let gone = unit.state::<User>(from).await.map_err(ApiError::from)?;
                    let kyc = unit
                        .state::<Identification>(from)
                        .await
                        .map_err(ApiError::from)?;
                    let contacts = SetContacts {
                        email: lacking(&kept.email, &gone.email),
                        phone: lacking(&kept.phone, &gone.phone),
                        external_id: lacking(&kept.external_id, &gone.external_id),
                    };
                    let takes = Upsert {
                        profile: UpdateProfile::default(),
                        clear: BTreeSet::new(),
                        contacts,
                        active: None,
                        at,
                    };
                    unit.decide::<User>(into, UserCommand::Upsert(Box::new(takes)), services)
                        .await?;
                    if !gone.roles.is_empty() {
                        let roles = UserCommand::SetRoles {
                            roles: gone.roles.clone(),
                            mode: RolesMode::Add,
                        };
                        unit.decide::<User>(into, roles, services).await?;
                    }
                    for w in wallets {
                        unit.decide::<Wallet>(&ctx.aggregate_id(*w), give(survivor), &())
                            .await?;
                    }
                    // A survivor without an identity receives the duplicate's.
                    let reason = identity_domain::values::Text::parse(&format!(
                        "merged from user {duplicate}"
                    ))
                    .map_err(|e| ApiError::from(e.at("source_user_id")))?;
                    let receive = IdentificationCommand::Receive {
                        subject: Subject {
                            tenant: ctx.tenant.clone(),
                            user_id: survivor,
                        },
                        from: Box::new((*kyc).clone()),
                        reason,
                        by: ctx.caller.principal.actor(),
                        at,
                    };
                    unit.decide::<Identification>(into, receive, &()).await?;
                    for (kind, value) in values_held(&gone, &kyc) {
                        Core::release_in(&mut unit, ctx, [(kind, value.clone())], duplicate)
                            .await?;
                        Core::claim_in(&mut unit, ctx, kind, &value, survivor).await?;
                    }
                    Ok((unit, decided))
                })
            })
            .await
    }
}
