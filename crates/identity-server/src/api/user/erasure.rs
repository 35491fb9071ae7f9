//! EraseUser (docs/adr/0006-personal-data-keys-and-erasure.md): the erasure and the release
//! of the person's unique values commit in one unit; then the person's data key is
//! destroyed, which erases every personal field of their events at once. A crash between
//! the two is finished at the next start (`EventLog::destroy_erased_keys`).

use identity_domain::identification::Identification;
use identity_domain::values::Text;

use super::*;

impl UserApi {
    pub(super) async fn erase(
        &self,
        ctx: &RequestContext,
        user: UserId,
        basis: Text,
    ) -> ApiResult<Executed<User>> {
        let id = ctx.aggregate_id(user);
        let erased_by = ctx.caller.principal.actor();
        let services = &self.core.user_services;
        let executed = self
            .core
            .transact::<User, _>(ctx.event_metadata(), &id, |mut unit| {
                let (id, basis, erased_by) = (&id, basis.clone(), erased_by.clone());
                Box::pin(async move {
                    let person = unit.state::<User>(id).await.map_err(ApiError::from)?;
                    let kyc = unit
                        .state::<Identification>(id)
                        .await
                        .map_err(ApiError::from)?;
                    let held = identity_domain::claim::values_held(&person, &kyc);
                    let erase = UserCommand::Erase {
                        basis,
                        erased_by,
                        at: Utc::now(),
                    };
                    let decided = unit.decide::<User>(id, erase, services).await?;
                    Core::release_in(&mut unit, ctx, held, user).await?;
                    Ok((unit, decided))
                })
            })
            .await?;
        self.core
            .log
            .destroy_key(&id)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(user_id = %user, "user erased");
        Ok(executed)
    }
}
