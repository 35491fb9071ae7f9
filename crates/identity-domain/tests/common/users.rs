//! Fixtures of the User aggregate's tests: a registration and what it records.

use cqrs_es::test::TestFramework;
use identity_domain::derive::{keyed_identifier_email, IdKey, IdentifierSource};
use identity_domain::user::*;
use identity_domain::values::*;

use super::*;

pub type UserTest = TestFramework<User>;

pub fn register_cmd() -> RegisterUser {
    RegisterUser {
        user_id: user_id(1),
        tenant: tenant(),
        id_key: IdKey::from_bytes([3; 32]),
        email: Some(email("ada@example.com")),
        phone: None,
        external_id: Some(ExternalId::parse("crm-1").expect("id")),
        first_name: Some(name("Ada")),
        last_name: Some(name("Lovelace")),
        locale: Some(Locale::parse("en").expect("locale")),
        custom_data: JsonObject::parse(r#"{"tier":"gold"}"#).expect("json"),
        public_profile: JsonObject::default(),
        details: ProfileDetails::default(),
        at: t(0),
    }
}

pub fn registered() -> UserEvent {
    let c = register_cmd();
    UserEvent::UserRegistered {
        user_id: c.user_id,
        identifier_email: keyed_identifier_email(
            &c.id_key,
            &c.tenant,
            IdentifierSource::Email(c.email.as_ref().expect("email")),
        ),
        tenant: c.tenant,
        email: c.email,
        phone: c.phone,
        external_id: c.external_id,
        first_name: c.first_name,
        last_name: c.last_name,
        locale: c.locale,
        custom_data: c.custom_data,
        public_profile: c.public_profile,
        registered_at: c.at,
    }
}

pub fn given_registered() -> cqrs_es::test::AggregateTestExecutor<User> {
    UserTest::with(services()).given(vec![registered()])
}

pub fn email_requested(code: &str) -> UserEvent {
    UserEvent::EmailChangeRequested {
        email: email("new@example.com"),
        code_hash: code.to_string(),
        expires_at: t(600),
    }
}
