//! MergeUsers (docs/adr/0007-merging-users.md): in one unit, the duplicate is marked merged
//! into the survivor, the survivor takes the contact values it lacks and the duplicate's
//! roles, and every claim of the duplicate (email, phone, external id, person code) moves to
//! the survivor, so a lookup by any of those values finds the survivor and nobody can take
//! one in between.

use identity_domain::claim::values_held;
use identity_domain::identification::Identification;
use identity_domain::user::{SetContacts, Upsert};

use super::*;

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
