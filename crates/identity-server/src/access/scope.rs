//! Field scopes: which personal fields a caller may read. One table ([`PERSONAL`]) says which
//! scope covers each personal field of every message that describes a person; responses are
//! cut to the caller's scopes and name what they withheld, and a read mask that asks for a
//! field out of scope is refused, naming it. A test walks every response message of the API
//! and fails on a field of a person message that the table does not classify.
//!
//! Tokens without a `scopes` claim reach every field their permissions reach (operators and
//! services as before; a signed-in person sees all of their own data); a token that lists
//! scopes gets those only.

pub use identity_access::scope::{Scope, Scopes};

/// Every personal field of the person messages, and the scope that covers it.
pub const PERSONAL: &[(&str, &str, Scope)] = &[
    ("User", "email", Scope::Email),
    ("User", "email_confirmed", Scope::Email),
    ("User", "identifier_email", Scope::Email),
    ("User", "phone", Scope::Phone),
    ("User", "phone_confirmed", Scope::Phone),
    ("User", "external_id", Scope::ExternalId),
    ("User", "first_name", Scope::Name),
    ("User", "last_name", Scope::Name),
    ("User", "locale", Scope::Profile),
    ("User", "custom_data", Scope::Profile),
    ("User", "details", Scope::Profile),
    ("User", "email_hash", Scope::Email),
    ("User", "roles", Scope::Roles),
    ("DirectoryUser", "email", Scope::Email),
    ("DirectoryUser", "identifier_email", Scope::Email),
    ("DirectoryUser", "phone", Scope::Phone),
    ("DirectoryUser", "external_id", Scope::ExternalId),
    ("DirectoryUser", "first_name", Scope::Name),
    ("DirectoryUser", "last_name", Scope::Name),
    ("DirectoryUser", "locale", Scope::Profile),
    ("DirectoryUser", "roles", Scope::Roles),
    ("DirectoryUser", "wallet_addresses", Scope::WalletList),
    ("DirectoryUser", "wallets", Scope::WalletList),
    ("DirectoryUser", "details", Scope::Profile),
    ("GetUserWithBalancesResponse", "wallets", Scope::WalletList),
    ("GetMyBalancesResponse", "wallets", Scope::WalletList),
    ("Identification", "identity", Scope::Identity),
    ("Identification", "documents", Scope::Documents),
    ("Identification", "pep", Scope::Pep),
    ("Identification", "level", Scope::IdentificationLevel),
    (
        "Identification",
        "calculated_level",
        Scope::IdentificationLevel,
    ),
    (
        "Identification",
        "level_changes",
        Scope::IdentificationLevel,
    ),
    ("Identification", "pep_records", Scope::Pep),
];

/// Keys of stored event payloads and aggregate states (what the audit trail shows) that hold
/// personal data, wherever they appear in the JSON, and the scope that covers each.
pub const STORED: &[(&str, Scope)] = &[
    ("email", Scope::Email),
    ("email_confirmed", Scope::Email),
    ("identifier_email", Scope::Email),
    ("pending_email", Scope::Email),
    ("phone", Scope::Phone),
    ("phone_confirmed", Scope::Phone),
    ("pending_phone", Scope::Phone),
    ("external_id", Scope::ExternalId),
    ("first_name", Scope::Name),
    ("last_name", Scope::Name),
    ("display_name", Scope::Name),
    ("locale", Scope::Profile),
    ("custom_data", Scope::Profile),
    ("details", Scope::Profile),
    ("roles", Scope::Roles),
    ("identity", Scope::Identity),
    ("documents", Scope::Documents),
    ("document", Scope::Documents),
    ("pep", Scope::Pep),
    ("level", Scope::IdentificationLevel),
    ("level_changes", Scope::IdentificationLevel),
    ("pep_records", Scope::Pep),
    ("address", Scope::WalletList),
];

/// Removes the personal keys `scopes` do not cover from a stored payload or state, at any
/// depth; returns the removed keys (sorted, once each).
pub fn cut_stored(value: &mut serde_json::Value, scopes: Scopes) -> Vec<String> {
    fn walk(
        v: &mut serde_json::Value,
        scopes: Scopes,
        cut: &mut std::collections::BTreeSet<String>,
    ) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|k, _| {
                    let keep = STORED
                        .iter()
                        .find(|(key, _)| key == k)
                        .is_none_or(|(_, scope)| scopes.contains(*scope));
                    if !keep {
                        cut.insert(k.clone());
                    }
                    keep
                });
                map.values_mut().for_each(|child| walk(child, scopes, cut));
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, scopes, cut)),
            _ => {}
        }
    }
    if scopes == Scopes::all() {
        return Vec::new();
    }
    let mut cut = std::collections::BTreeSet::new();
    walk(value, scopes, &mut cut);
    cut.into_iter().collect()
}

/// The other fields of the person messages: ids, flags, times, versions, what is public by
/// the user's own choice, and the envelopes that carry person messages.
pub const NOT_PERSONAL: &[(&str, &str)] = &[
    ("User", "user_id"),
    ("User", "public_profile"),
    ("User", "active"),
    ("User", "has_password"),
    ("User", "merged_into"),
    ("User", "created_at"),
    ("User", "updated_at"),
    ("User", "version"),
    ("DirectoryUser", "user_id"),
    ("DirectoryUser", "active"),
    ("DirectoryUser", "merged_into"),
    ("DirectoryUser", "created_at"),
    ("DirectoryUser", "updated_at"),
    ("DirectoryUser", "version"),
    ("GetUserWithBalancesResponse", "user"),
    ("GetUserWithBalancesResponse", "totals"),
    ("GetUserWithBalancesResponse", "withheld_fields"),
    ("GetMyBalancesResponse", "withheld_fields"),
    ("Identification", "user_id"),
    ("Identification", "updated_at"),
    ("Identification", "version"),
];

/// The messages that describe a person: every field of theirs is classified above.
pub const PERSON_MESSAGES: &[&str] = &[
    "User",
    "DirectoryUser",
    "GetUserWithBalancesResponse",
    "GetMyBalancesResponse",
    "Identification",
];

/// Field names that are personal wherever they appear: a response message outside
/// [`PERSON_MESSAGES`] that carries one fails the walk (it would escape the scopes).
pub const PERSONAL_NAMES: &[&str] = &[
    "email",
    "phone",
    "first_name",
    "last_name",
    "surname",
    "person_code",
    "date_of_birth",
    "identity",
    "documents",
    "custom_data",
    "external_id",
    "wallet_addresses",
    "pep",
];

/// Personal-looking fields outside the scopes, each for a stated reason: the value a caller
/// just confirmed, echoed back (ConfirmEmail), and the staff accounts of AdminService (the
/// operators' own logins, behind `read:admins`, not the people this service holds).
pub const ECHOES: &[(&str, &str)] = &[
    ("ConfirmEmailResponse", "email"),
    ("ConfirmPhoneResponse", "phone"),
    ("Admin", "email"),
];

fn scope_of(message: &str, field: &str) -> Option<Scope> {
    PERSONAL
        .iter()
        .find(|(m, f, _)| *m == message && *f == field)
        .map(|(_, _, s)| *s)
}

/// Whether `scopes` reach `field` of `message` (fields that are not personal always do).
pub fn allows(scopes: Scopes, message: &str, field: &str) -> bool {
    scope_of(message, field).is_none_or(|s| scopes.contains(s))
}

/// Clears what `scopes` do not reach; the cleared fields' names, for `withheld_fields`.
#[derive(Debug)]
pub struct Cut<'a> {
    message: &'static str,
    scopes: Scopes,
    withheld: &'a mut Vec<String>,
}

impl<'a> Cut<'a> {
    pub fn new(message: &'static str, scopes: Scopes, withheld: &'a mut Vec<String>) -> Self {
        Self {
            message,
            scopes,
            withheld,
        }
    }

    /// Clears `value` unless the scopes reach `field`.
    pub fn field<T: Default>(&mut self, field: &'static str, value: &mut T) {
        if !allows(self.scopes, self.message, field) {
            *value = T::default();
            if !self.withheld.iter().any(|w| w == field) {
                self.withheld.push(field.to_string());
            }
        }
    }
}

/// Cuts a user to `scopes`.
pub fn cut_user(u: &mut identity_proto::v1::User, scopes: Scopes, withheld: &mut Vec<String>) {
    let mut c = Cut::new("User", scopes, withheld);
    c.field("email", &mut u.email);
    c.field("email_confirmed", &mut u.email_confirmed);
    c.field("identifier_email", &mut u.identifier_email);
    c.field("phone", &mut u.phone);
    c.field("phone_confirmed", &mut u.phone_confirmed);
    c.field("external_id", &mut u.external_id);
    c.field("first_name", &mut u.first_name);
    c.field("last_name", &mut u.last_name);
    c.field("locale", &mut u.locale);
    c.field("custom_data", &mut u.custom_data);
    c.field("details", &mut u.details);
    c.field("email_hash", &mut u.email_hash);
    c.field("roles", &mut u.roles);
}

/// Cuts a directory user to `scopes`.
pub fn cut_directory_user(
    u: &mut identity_proto::v1::DirectoryUser,
    scopes: Scopes,
    withheld: &mut Vec<String>,
) {
    let mut c = Cut::new("DirectoryUser", scopes, withheld);
    c.field("email", &mut u.email);
    c.field("identifier_email", &mut u.identifier_email);
    c.field("phone", &mut u.phone);
    c.field("external_id", &mut u.external_id);
    c.field("first_name", &mut u.first_name);
    c.field("last_name", &mut u.last_name);
    c.field("locale", &mut u.locale);
    c.field("roles", &mut u.roles);
    c.field("wallet_addresses", &mut u.wallet_addresses);
    c.field("wallets", &mut u.wallets);
    c.field("details", &mut u.details);
}

/// Cuts an identification to `scopes`.
pub fn cut_identification(
    i: &mut identity_proto::v1::Identification,
    scopes: Scopes,
    withheld: &mut Vec<String>,
) {
    let mut c = Cut::new("Identification", scopes, withheld);
    c.field("identity", &mut i.identity);
    c.field("documents", &mut i.documents);
    c.field("pep", &mut i.pep);
    c.field("level", &mut i.level);
    c.field("calculated_level", &mut i.calculated_level);
    c.field("level_changes", &mut i.level_changes);
    c.field("pep_records", &mut i.pep_records);
}

/// A read mask's paths, checked against `scopes`: a path out of scope is refused, named.
pub fn check_mask(
    message: &'static str,
    mask: Option<&prost_types::FieldMask>,
    scopes: Scopes,
) -> Result<(), crate::error::ApiError> {
    for path in mask.map(|m| m.paths.as_slice()).unwrap_or_default() {
        if !allows(scopes, message, path) {
            return Err(crate::error::ApiError::FieldOutOfScope {
                field: path.clone(),
                scope: scope_of(message, path).map_or("", Scope::name),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_payloads_lose_the_personal_keys_out_of_scope_at_any_depth() {
        let mut payload = serde_json::json!({"UserRegistered": {
            "email": "a@example.com", "first_name": "Ada", "phone": "372",
            "custom_data": {"tier": "gold"}, "user_id": "u1",
            "pending": [{"email": "b@example.com"}]
        }});
        let cut = cut_stored(&mut payload, Scopes::of(&[Scope::Name, Scope::Phone]));
        assert_eq!(cut, vec!["custom_data".to_string(), "email".to_string()]);
        assert_eq!(
            payload,
            serde_json::json!({"UserRegistered": {
                "first_name": "Ada", "phone": "372", "user_id": "u1", "pending": [{}]
            }})
        );
        let mut untouched = payload.clone();
        assert!(cut_stored(&mut untouched, Scopes::all()).is_empty());
        assert_eq!(untouched, payload);
    }

    #[test]
    fn every_personal_field_of_a_message_is_a_stored_key_too() {
        for (message, field, scope) in PERSONAL {
            if matches!(*field, "wallet_addresses" | "wallets") {
                continue; // stored as each wallet's `address`
            }
            if matches!(*field, "email_hash" | "calculated_level") {
                continue; // derived when read, never stored
            }
            assert!(
                STORED.iter().any(|(k, s)| k == field && s == scope),
                "{message}.{field} ({}) is not cut from stored payloads",
                scope.name()
            );
        }
    }
    use identity_proto::prost::Message as _;
    use std::collections::{BTreeSet, HashMap};

    fn messages() -> HashMap<String, identity_proto::prost_types::DescriptorProto> {
        let files = identity_proto::prost_types::FileDescriptorSet::decode(
            identity_proto::FILE_DESCRIPTOR_SET,
        )
        .expect("descriptor set");
        let mut out = HashMap::new();
        for file in files.file {
            let package = file.package.clone().unwrap_or_default();
            for m in file.message_type {
                out.insert(format!(".{package}.{}", m.name()), m);
            }
        }
        out
    }

    /// Walks every response message of the API (and every message reachable from one): each
    /// field of a person message is classified, and a personal field name appears nowhere
    /// else, so no personal field escapes the scopes.
    #[test]
    fn every_personal_field_of_every_response_has_a_scope() {
        let files = identity_proto::prost_types::FileDescriptorSet::decode(
            identity_proto::FILE_DESCRIPTOR_SET,
        )
        .expect("descriptor set");
        let all = messages();
        let mut todo: Vec<String> = files
            .file
            .iter()
            .flat_map(|f| f.service.iter())
            .flat_map(|s| s.method.iter())
            .map(|m| m.output_type().to_string())
            .collect();
        let mut seen = BTreeSet::new();
        let mut problems = Vec::new();
        while let Some(name) = todo.pop() {
            if !seen.insert(name.clone()) {
                continue;
            }
            let Some(message) = all.get(&name) else {
                continue; // google.protobuf types
            };
            let short = message.name();
            let person = PERSON_MESSAGES.contains(&short);
            for field in &message.field {
                let f = field.name();
                if person {
                    let classified = PERSONAL.iter().any(|(m, n, _)| *m == short && *n == f)
                        || NOT_PERSONAL.iter().any(|(m, n)| *m == short && *n == f);
                    if !classified {
                        problems.push(format!(
                            "{short}.{f} has no scope and is not marked non-personal"
                        ));
                    }
                } else if PERSONAL_NAMES.contains(&f)
                    && !ECHOES.iter().any(|(m, n)| *m == short && *n == f)
                {
                    problems.push(format!(
                        "{short}.{f} is personal outside the scoped messages"
                    ));
                }
                // A scoped field is withheld whole: what is inside it needs no scope of its own.
                if !field.type_name().is_empty() && scope_of(short, f).is_none() {
                    todo.push(field.type_name().to_string());
                }
            }
        }
        assert!(problems.is_empty(), "{problems:#?}");
        assert!(
            seen.len() > 50,
            "the walk reached only {} messages",
            seen.len()
        );
        for m in PERSON_MESSAGES {
            assert!(
                seen.contains(&format!(".identity.v1.{m}")),
                "{m} is not in any response"
            );
        }
    }

    #[test]
    fn each_cut_withholds_exactly_the_fields_its_scope_covers() {
        for scope in Scope::ALL {
            let others = Scopes::of(
                &Scope::ALL
                    .iter()
                    .copied()
                    .filter(|s| s != scope)
                    .collect::<Vec<_>>(),
            );
            let mut withheld = Vec::new();
            cut_user(&mut Default::default(), others, &mut withheld);
            cut_directory_user(&mut Default::default(), others, &mut withheld);
            cut_identification(&mut Default::default(), others, &mut withheld);
            let expected: BTreeSet<&str> = PERSONAL
                .iter()
                .filter(|(m, _, s)| {
                    s == scope && ["User", "DirectoryUser", "Identification"].contains(m)
                })
                .map(|(_, f, _)| *f)
                .collect();
            let got: BTreeSet<&str> = withheld.iter().map(String::as_str).collect();
            assert_eq!(got, expected, "scope {}", scope.name());
        }
    }

    #[test]
    fn names_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.name()), Some(*s));
        }
        assert_eq!(
            Scopes::parse_names(["email", "nope"]).unwrap_err(),
            "nope".to_string()
        );
    }
}
