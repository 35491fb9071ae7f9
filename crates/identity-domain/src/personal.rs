//! What is personal in an event: the fields the store seals under the data key of the person
//! the aggregate is about (docs/adr/0006-personal-data-keys-and-erasure.md). A field listed
//! here is stored sealed; every other field (ids, amounts, levels, times, roles) stays clear.
//! The person is the aggregate: a user's User and Identification aggregates share one id
//! (`tenant/user`), so they share one data key; an admin's is its own.
//!
//! A new event with personal data adds its fields here, in the same change; the domain's
//! tests check that every listed field exists in a sample of its event.

/// Every event type with personal fields: (aggregate type, event type, fields inside the
/// variant). The domain's schema test checks each against a stored sample of its event.
pub const SEALED: &[(&str, &str, &[&str])] = &[
    (
        "User",
        "UserRegistered",
        &[
            "email",
            "phone",
            "external_id",
            "identifier_email",
            "first_name",
            "last_name",
            "locale",
            "custom_data",
            "public_profile",
        ],
    ),
    (
        "User",
        "UserProfileUpdated",
        &[
            "first_name",
            "last_name",
            "locale",
            "custom_data",
            "public_profile",
        ],
    ),
    ("User", "EmailChangeRequested", &["email", "code_hash"]),
    ("User", "EmailChangeStarted", &["email", "code_hash"]),
    ("User", "EmailConfirmed", &["email", "previous"]),
    ("User", "PhoneChangeRequested", &["phone", "code_hash"]),
    ("User", "PhoneChangeStarted", &["phone", "code_hash"]),
    ("User", "PhoneConfirmed", &["phone", "previous"]),
    ("User", "PasswordResetStarted", &["code_hash"]),
    ("User", "EmailSet", &["email", "previous"]),
    ("User", "ProfileDetailsSet", &["details"]),
    ("User", "PhoneSet", &["phone", "previous"]),
    ("User", "ExternalIdSet", &["external_id", "previous"]),
    ("User", "PasswordSet", &["credential"]),
    ("User", "PasswordChanged", &["credential"]),
    ("User", "LegacyCredentialImported", &["credential"]),
    ("User", "LegacyCredentialUpgraded", &["credential"]),
    ("User", "PasswordReset", &["credential"]),
    ("Identification", "IdentitySubmitted", &["identity"]),
    ("Identification", "DocumentAttached", &["document"]),
    ("Identification", "PepStatusSet", &["reason"]),
    (
        "Identification",
        "PepRecordsSet",
        &["pep_records", "reason"],
    ),
    ("Identification", "IdentificationLevelChanged", &["reason"]),
    ("Admin", "AdminCreated", &["email", "display_name"]),
    ("Admin", "AdminPasswordSet", &["credential"]),
];

/// The personal fields of one event type, empty for an event with none.
pub fn sealed_fields(aggregate_type: &str, event_type: &str) -> &'static [&'static str] {
    SEALED
        .iter()
        .find(|(a, e, _)| *a == aggregate_type && *e == event_type)
        .map_or(&[], |(_, _, fields)| fields)
}

/// Whether an aggregate of this type is the person itself (User, Admin): a new one is a new
/// person, who has no data key yet. (A user's Identification is not: it shares the user's.)
pub fn is_person(aggregate_type: &str) -> bool {
    matches!(aggregate_type, "User" | "Admin")
}

/// Whether events of this aggregate type can hold personal data at all (their aggregate id
/// names the person whose data key seals them).
pub fn is_personal(aggregate_type: &str) -> bool {
    matches!(aggregate_type, "User" | "Identification" | "Admin")
}

/// What a personal field reads as once its person's data key is destroyed (erasure): a
/// value of the field's own type that says "erased", so that histories, states and replays
/// stay readable while the person is gone.
pub fn erased_value(field: &str) -> serde_json::Value {
    use serde_json::json;
    match field {
        "custom_data" | "public_profile" | "details" => json!({}),
        "pep_records" => json!([]),
        "credential" => json!({"scheme": "modern", "phc": ERASED}),
        "identity" => json!({
            "first_name": ERASED,
            "surname": ERASED,
            "nationality": ERASED,
            "person_code": {"country": ERASED, "code": ERASED},
            "date_of_birth": ERASED_DATE,
        }),
        "document" => json!({
            "document_id": uuid::Uuid::nil(),
            "kind": "passport",
            "number": ERASED,
            "issue_date": ERASED_DATE,
            "expiry_date": null,
        }),
        _ => json!(ERASED),
    }
}

/// The text an erased personal field reads as.
pub const ERASED: &str = "erased";
/// The date an erased date reads as.
pub const ERASED_DATE: &str = "0001-01-01";
