//! Parsing UserService requests into domain values, and the lookup keys of queries.

use super::*;

pub(super) fn user_id(v: &mut Violations, field: &str, raw: &str) -> Option<UserId> {
    required(v, field, raw, UserId::parse)
}

pub(super) fn parse_user_id(name: &str, raw: &str) -> ApiResult<UserId> {
    parse_fields! {
        id = field(name, raw, UserId::parse),
    }
    Ok(id)
}

/// Refuses a caller without `permission` (for a key that needs more than the RPC's own).
pub(super) fn require(ctx: &RequestContext, permission: Permission) -> ApiResult<()> {
    if ctx.caller.holds(permission) {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(permission))
    }
}

/// A user cut to the caller's scopes, and the names of what was withheld. The email's keyed
/// hash (for a support tool) is computed here, with the tenant's id key.
pub(crate) async fn scoped_user(
    core: &Core,
    ctx: &RequestContext,
    user: &User,
    version: usize,
) -> ApiResult<(pb::User, Vec<String>)> {
    let mut out = user_to_pb(user, version);
    if let Some(email) = &user.email {
        let key = core.id_key(ctx).await?;
        out.email_hash = identity_domain::derive::email_hash(&key, email);
    }
    let mut withheld = Vec::new();
    scope::cut_user(&mut out, ctx.caller.scopes, &mut withheld);
    Ok((out, withheld))
}

/// A new password, held to the policy.
pub(super) fn password_field(name: &str, raw: &str) -> Result<Secret, Refused> {
    Secret::new_password(raw).map_err(|why| Refused {
        field: name.to_string(),
        why: why.to_string(),
    })
}

/// The parsed fields of a `UserInput`, prefixed for bulk items (`users[3].email`).
pub(super) fn parse_input(
    input: pb::UserInput,
    prefix: &str,
    user_id: UserId,
    ctx: &RequestContext,
    id_key: identity_domain::derive::IdKey,
) -> ApiResult<RegisterUser> {
    let mut v = Violations::new();
    let f = |name: &str| format!("{prefix}{name}");
    let email = optional(&mut v, &f("email"), &input.email, Email::parse);
    let phone = optional(&mut v, &f("phone"), &input.phone, Phone::parse);
    let external_id = optional(
        &mut v,
        &f("external_id"),
        &input.external_id,
        ExternalId::parse,
    );
    let first_name = optional(&mut v, &f("first_name"), &input.first_name, Name::parse);
    let last_name = optional(&mut v, &f("last_name"), &input.last_name, Name::parse);
    let locale = optional(&mut v, &f("locale"), &input.locale, Locale::parse);
    let custom_data = json_object(&mut v, &f("custom_data"), input.custom_data);
    let public_profile = json_object(&mut v, &f("public_profile"), input.public_profile);
    let today = Utc::now().date_naive();
    let details = input
        .details
        .map(|d| super::details::parse_details(&mut v, &f("details."), d, today))
        .unwrap_or_default();
    if v.is_empty() && email.is_none() && phone.is_none() && external_id.is_none() {
        v.push(
            f("email"),
            "at least one of email, phone or external_id is required",
        );
    }
    v.finish()?;
    Ok(RegisterUser {
        user_id,
        tenant: ctx.tenant.clone(),
        id_key,
        email,
        phone,
        external_id,
        first_name,
        last_name,
        locale,
        custom_data: custom_data.unwrap_or_default(),
        public_profile: public_profile.unwrap_or_default(),
        details,
        at: Utc::now(),
    })
}

/// The unique values of a registration, in the order they are claimed.
pub(super) fn claims_of(cmd: &RegisterUser) -> Vec<(ClaimKind, String)> {
    let mut out = Vec::new();
    if let Some(x) = &cmd.external_id {
        out.push((ClaimKind::ExternalId, x.to_string()));
    }
    if let Some(e) = &cmd.email {
        out.push((ClaimKind::Email, e.to_string()));
    }
    if let Some(p) = &cmd.phone {
        out.push((ClaimKind::Phone, p.to_string()));
    }
    out
}

/// Parses a lookup value into the normalized form the directory holds.
pub(super) fn user_key(name: &'static str, raw: &str) -> ApiResult<UserKey> {
    let key = match name {
        "user_id" => field(name, raw, UserId::parse).map(|x| UserKey::Id(x.to_string())),
        "email" => field(name, raw, Email::parse).map(|x| UserKey::Email(x.to_string())),
        "phone" => field(name, raw, Phone::parse).map(|x| UserKey::Phone(x.to_string())),
        "external_id" => {
            field(name, raw, ExternalId::parse).map(|x| UserKey::ExternalId(x.to_string()))
        }
        "person_code" => field(name, raw, |s| {
            let (country, code) = s.split_once(':').ok_or_else(|| {
                identity_domain::ValueError::new(
                    "person code must be COUNTRY:CODE, e.g. EE:38601010123",
                )
            })?;
            PersonCode::parse(country, code)
        })
        .map(|x| UserKey::PersonCode(x.key())),
        _ => field(name, raw, |s| {
            let s = s.trim();
            Ok(if s.starts_with("0x") || s.starts_with("0X") {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            })
        })
        .map(UserKey::WalletAddress),
    };
    parse_fields! {
        key = key,
    }
    Ok(key)
}

/// How one item of a bulk call failed (the others go on); the failure is reported as a
/// whole call's would be.
pub(super) fn item_error(e: &ApiError) -> pb::ItemError {
    let c = e.classify();
    crate::error::report(e, &c);
    pb::ItemError {
        code: code_name(c.code).to_string(),
        reason: c.reason.to_string(),
        message: e.public_message(&c),
        field_violations: c
            .violations
            .into_iter()
            .map(|(field, description)| pb::FieldViolation { field, description })
            .collect(),
    }
}

pub(super) fn missing_key(field: &str) -> ApiError {
    DomainError::invalid(field, "one lookup key is required").into()
}
