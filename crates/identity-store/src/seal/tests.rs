//! The seal's own rules, without a database.

use super::*;
use serde_json::json;

const EMAIL_CONFIRMED: Place<'static> = Place {
    aggregate_type: "User",
    aggregate_id: "acme/u1",
    event_type: "EmailConfirmed",
};

fn open_with(ring: &Keyring, at: Place<'_>, payload: Value) -> Result<Value, StoreError> {
    open_payload(ring.cached(at.aggregate_id).as_ref(), at, payload)
}

fn keyring_with(subject: &str) -> Keyring {
    let ring = Keyring::new(Some(MasterKey::from_bytes([7; 32])));
    let cipher = XChaCha20Poly1305::new(&[9u8; 32].into());
    ring.remember(subject, Known::Live(Arc::new(cipher)));
    ring
}

fn sealed_with(ring: &Keyring, aad: &str, value: &Value) -> Value {
    let Some(Known::Live(cipher)) = ring.cached("acme/u1") else {
        panic!("key");
    };
    let plain = serde_json::to_vec(value).expect("json");
    Value::String(format!(
        "{SEALED}{}",
        seal_bytes(&cipher, aad, &plain).expect("seals")
    ))
}

#[test]
fn a_sealed_field_opens_only_where_it_was_sealed() {
    let ring = keyring_with("acme/u1");
    let aad = EMAIL_CONFIRMED.aad("email");
    let sealed = sealed_with(&ring, &aad, &json!("ada@example.com"));
    let payload = json!({"EmailConfirmed": {"email": sealed, "previous": null, "at": "t"}});
    let opened = open_with(&ring, EMAIL_CONFIRMED, payload.clone()).expect("opens");
    assert_eq!(opened["EmailConfirmed"]["email"], "ada@example.com");
    assert_eq!(opened["EmailConfirmed"]["at"], "t");
    // The same ciphertext in another event's field does not open.
    let moved = json!({"PhoneConfirmed": {"phone": payload["EmailConfirmed"]["email"]}});
    assert!(open_with(
        &ring,
        Place {
            event_type: "PhoneConfirmed",
            ..EMAIL_CONFIRMED
        },
        moved,
    )
    .is_err());
    // A field stored in clear (before sealing) reads as it is.
    let clear = json!({"EmailConfirmed": {"email": "old@example.com"}});
    assert_eq!(
        open_with(&ring, EMAIL_CONFIRMED, clear.clone()).expect("clear"),
        clear
    );
}

#[test]
fn after_erasure_a_sealed_field_reads_as_erased() {
    let ring = keyring_with("acme/u1");
    let aad = EMAIL_CONFIRMED.aad("email");
    let sealed = sealed_with(&ring, &aad, &json!("ada@example.com"));
    ring.remember("acme/u1", Known::Destroyed);
    let payload = json!({"EmailConfirmed": {"email": sealed, "at": "t"}});
    let opened =
        open_with(&ring, EMAIL_CONFIRMED, payload).expect("an erased field is not an error");
    assert_eq!(opened["EmailConfirmed"]["email"], "erased");
    assert_eq!(opened["EmailConfirmed"]["at"], "t");
}

#[test]
fn a_master_key_unwraps_only_its_own_subjects_keys() {
    let master = MasterKey::from_bytes([1; 32]);
    let wrapped = master.wrap("acme/u1", &[5; 32]).expect("wraps");
    assert_eq!(master.unwrap("acme/u1", &wrapped), Some([5; 32]));
    assert_eq!(master.unwrap("acme/u2", &wrapped), None);
    assert_eq!(
        MasterKey::from_bytes([2; 32]).unwrap("acme/u1", &wrapped),
        None
    );
    assert_ne!(
        MasterKey::from_bytes([1; 32]).id(),
        MasterKey::from_bytes([2; 32]).id()
    );
    assert!(!format!("{master:?}").contains("cipher"));
}
