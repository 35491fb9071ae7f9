//! The directory's side of a wallet changing owner (a merge of users: docs/adr/0007).

use std::collections::BTreeSet;

use identity_domain::wallet::WalletEvent;
use identity_store::StoredEvent;
use sqlx::AnyConnection;

use crate::apply::{decode, tenant_and_id, Result, Sql};

/// A user's wallet given to another user (a merge): the directory lists it under the new
/// owner (and no longer at all when the new owner is not a user); both users' search texts
/// change.
pub(super) async fn wallet_owner_changed(
    conn: &mut AnyConnection,
    sql: &Sql<'_>,
    e: &StoredEvent,
    refresh: &mut BTreeSet<(String, String)>,
) -> Result<()> {
    let (tenant, wallet) = tenant_and_id(e)?;
    let WalletEvent::WalletOwnerChanged {
        owner, previous, ..
    } = decode(e)?
    else {
        return Ok(());
    };
    if let Some(new) = owner.user_id() {
        sqlx::query(&sql.text(
            "UPDATE {rm_user_wallets} SET user_id = $3 WHERE tenant = $1 AND wallet_id = $2",
        ))
        .bind(&tenant)
        .bind(&wallet)
        .bind(new)
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query(
            &sql.text("DELETE FROM {rm_user_wallets} WHERE tenant = $1 AND wallet_id = $2"),
        )
        .bind(&tenant)
        .bind(&wallet)
        .execute(&mut *conn)
        .await?;
    }
    for user in [owner.user_id(), previous.user_id()].into_iter().flatten() {
        refresh.insert((tenant.clone(), user.to_string()));
    }
    Ok(())
}
