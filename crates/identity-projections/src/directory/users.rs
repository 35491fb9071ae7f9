//! The directory's user events applied alone: every change to a user's existing row.

use std::collections::BTreeSet;

use identity_domain::user::UserEvent;
use identity_store::StoredEvent;
use sqlx::AnyConnection;

use super::{insert_users, UserRow};
use crate::apply::{chrono_secs, decode, tenant_and_id, Result, Sql};

/// A contact value confirmed or set (`None`: cleared): `set` names the column and its new
/// value; `row` is the version, tenant and user of the row.
async fn contact(
    conn: &mut AnyConnection,
    touch: &impl Fn(&str) -> String,
    row: (i64, &str, &str),
    set: (&str, Option<String>),
    at: String,
) -> Result<()> {
    sqlx::query(&touch(&format!("{} = $4, updated_at = $5, ", set.0)))
        .bind(row.0)
        .bind(row.1)
        .bind(row.2)
        .bind(set.1)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A user event other than a registration: changes the user's existing row and marks its
/// search text for recomputation.
pub(super) async fn directory_user(
    conn: &mut AnyConnection,
    sql: &Sql<'_>,
    e: &StoredEvent,
    refresh: &mut BTreeSet<(String, String)>,
) -> Result<()> {
    let (tenant, user) = tenant_and_id(e)?;
    let event: UserEvent = decode(e)?;
    let version = e.sequence as i64;
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono_secs(), true);
    let touch = |sets: &str| {
        sql.text(&format!(
            "UPDATE {{rm_users}} SET {sets}version = $1 WHERE tenant = $2 AND user_id = $3"
        ))
    };
    match event {
        UserEvent::UserRegistered { .. } => {
            // Usually folded (DirectoryFold); one applied alone is written the same way.
            if let Some(row) = UserRow::of(e, tenant.clone(), user.clone())? {
                insert_users(conn, sql, &[row]).await?;
            }
            refresh.insert((tenant, user));
        }
        UserEvent::UserProfileUpdated {
            first_name,
            last_name,
            locale,
            public_profile,
            updated_at,
            ..
        } => {
            sqlx::query(&touch(
                "first_name = COALESCE($4, first_name), last_name = COALESCE($5, last_name), locale = COALESCE($6, locale), public_profile = COALESCE($7, public_profile), updated_at = $8, ",
            ))
            .bind(version)
            .bind(&tenant)
            .bind(&user)
            .bind(first_name.map(|v| v.to_string()))
            .bind(last_name.map(|v| v.to_string()))
            .bind(locale.map(|v| v.to_string()))
            .bind(public_profile.map(|p| p.to_json_string()))
            .bind(fmt(updated_at))
            .execute(&mut *conn)
            .await?;
            refresh.insert((tenant.clone(), user.clone()));
        }
        UserEvent::UserDeactivated { at } | UserEvent::UserReactivated { at } => {
            let active = i64::from(e.event_type == "UserReactivated");
            sqlx::query(&touch("active = $4, updated_at = $5, "))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(active)
                .bind(fmt(at))
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::EmailConfirmed { email, at, .. } => {
            let row = (version, tenant.as_str(), user.as_str());
            contact(
                conn,
                &touch,
                row,
                ("email", Some(email.to_string())),
                fmt(at),
            )
            .await?;
            refresh.insert((tenant, user));
        }
        UserEvent::PhoneConfirmed { phone, at, .. } => {
            let row = (version, tenant.as_str(), user.as_str());
            contact(
                conn,
                &touch,
                row,
                ("phone", Some(phone.to_string())),
                fmt(at),
            )
            .await?;
            refresh.insert((tenant, user));
        }
        UserEvent::RolesChanged { roles } => {
            let roles: Vec<String> = roles.iter().map(ToString::to_string).collect();
            sqlx::query(&touch("roles = $4, "))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(serde_json::to_string(&roles).unwrap_or_else(|_| "[]".into()))
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::UserErased { .. } => {
            // The person is gone from the directory: their row, search text, wallet
            // addresses and person code (docs/adr/0006).
            for table in ["rm_users", "rm_user_wallets", "rm_person_codes"] {
                sqlx::query(&sql.text(&format!(
                    "DELETE FROM {{{table}}} WHERE tenant = $1 AND user_id = $2"
                )))
                .bind(&tenant)
                .bind(&user)
                .execute(&mut *conn)
                .await?;
            }
            refresh.remove(&(tenant, user));
        }
        UserEvent::EmailSet { email, at, .. } => {
            let row = (version, tenant.as_str(), user.as_str());
            let email = email.map(|v| v.to_string());
            contact(conn, &touch, row, ("email", email), fmt(at)).await?;
            refresh.insert((tenant, user));
        }
        UserEvent::PhoneSet { phone, at, .. } => {
            let row = (version, tenant.as_str(), user.as_str());
            let phone = phone.map(|v| v.to_string());
            contact(conn, &touch, row, ("phone", phone), fmt(at)).await?;
            refresh.insert((tenant, user));
        }
        UserEvent::ExternalIdSet {
            external_id, at, ..
        } => {
            let row = (version, tenant.as_str(), user.as_str());
            let external_id = external_id.map(|v| v.to_string());
            contact(conn, &touch, row, ("external_id", external_id), fmt(at)).await?;
            refresh.insert((tenant, user));
        }
        UserEvent::ProfileFieldsCleared { fields, at } => {
            use identity_domain::user::ProfileField as F;
            // Custom data is not in the directory.
            let sets: String = fields
                .iter()
                .filter_map(|f| match f {
                    F::FirstName => Some("first_name = NULL, "),
                    F::LastName => Some("last_name = NULL, "),
                    F::Locale => Some("locale = NULL, "),
                    F::PublicProfile => Some("public_profile = '{}', "),
                    F::CustomData => None,
                })
                .collect();
            sqlx::query(&touch(&format!("{sets}updated_at = $4, ")))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(fmt(at))
                .execute(&mut *conn)
                .await?;
            refresh.insert((tenant, user));
        }
        UserEvent::ProfileDetailsSet { details, at } => {
            let details = serde_json::to_string(&details).unwrap_or_else(|_| "{}".into());
            sqlx::query(&touch("details = $4, updated_at = $5, "))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(details)
                .bind(fmt(at))
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::UserMerged { into, at } => {
            sqlx::query(&touch("merged_into = $4, updated_at = $5, "))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .bind(into.to_string())
                .bind(fmt(at))
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::EmailChangeRequested { .. }
        | UserEvent::EmailConfirmationFailed { .. }
        | UserEvent::PhoneChangeRequested { .. }
        | UserEvent::PhoneConfirmationFailed { .. }
        | UserEvent::PasswordSet { .. }
        | UserEvent::PasswordChanged { .. }
        | UserEvent::LegacyCredentialImported { .. }
        | UserEvent::LegacyCredentialUpgraded { .. }
        | UserEvent::PasswordCheckFailed { .. }
        | UserEvent::PasswordFailuresCleared { .. }
        | UserEvent::SessionStarted { .. }
        | UserEvent::SessionRefreshed { .. }
        | UserEvent::SessionsEnded { .. }
        | UserEvent::EmailChangeStarted { .. }
        | UserEvent::PhoneChangeStarted { .. }
        | UserEvent::PasswordResetStarted { .. }
        | UserEvent::PasswordResetFailed { .. }
        | UserEvent::PasswordReset { .. } => {
            sqlx::query(&touch(""))
                .bind(version)
                .bind(&tenant)
                .bind(&user)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
