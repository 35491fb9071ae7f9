//! Profile details (issue 17): postal address, date of birth, gender, natural or legal person,
//! default currency, nickname, picture and linked accounts, each checked; set at registration,
//! replaced or cleared through UpdateUserProfile, stored sealed. GetUser gives the email's
//! keyed hash for a support tool. On both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(profile_details_are_checked_kept_sealed_and_replaced_whole,);

fn details() -> pb::ProfileDetails {
    pb::ProfileDetails {
        address: Some(pb::Address {
            country: "ee".into(),
            city: "Tallinn".into(),
            street: "Kesklinna-tänav 7".into(),
            post_index: "10117".into(),
        }),
        date_of_birth: "1986-01-31".into(),
        gender: pb::Gender::Female as i32,
        person_type: pb::PersonType::Natural as i32,
        default_currency: "eur".into(),
        nickname: "Zephyrine".into(),
        picture_url: "https://example.com/z.png".into(),
        instagram_account_id: "17841400".into(),
        google_account_name: "zephyrine@gmail.com".into(),
        account_address: "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed".into(),
    }
}

mod scenarios {
    use super::*;

    pub(super) async fn profile_details_are_checked_kept_sealed_and_replaced_whole(store: Store) {
        let app = spawn_app(store).await;
        let mut u = app.users();

        // Every wrong field is named at once.
        let mut wrong = details();
        wrong.address.as_mut().expect("address").country = "Estonia".into();
        wrong.date_of_birth = "2999-01-01".into();
        wrong.default_currency = "EURO".into();
        wrong.gender = 99;
        let refused = fails!(
            u.register_user(registering(
                "acme",
                pb::UserInput {
                    email: "zephyrine@example.com".into(),
                    details: Some(wrong),
                    ..Default::default()
                },
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        for field in [
            "user.details.address.country",
            "user.details.date_of_birth",
            "user.details.default_currency",
            "user.details.gender",
        ] {
            assert!(refused.message().contains(field), "{field}: {refused:?}");
        }

        let user = registered_id(
            u.register_user(registering(
                "acme",
                pb::UserInput {
                    email: "zephyrine@example.com".into(),
                    details: Some(details()),
                    ..Default::default()
                },
            ))
            .await
            .expect("registers"),
        );
        let got = ok!(u.get_user(req("acme", ask::get_user(&user))))
            .user
            .expect("user");
        let kept = got.details.expect("details");
        let mut expected = details();
        expected.address.as_mut().expect("address").country = "EE".into();
        expected.default_currency = "EUR".into();
        expected.account_address = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into();
        assert_eq!(kept, expected);
        // The email's keyed hash: hex, the same each time, none without the key.
        assert_eq!(got.email_hash.len(), 64);
        let again = ok!(u.get_user(req("acme", ask::get_user(&user))))
            .user
            .expect("user");
        assert_eq!(again.email_hash, got.email_hash);
        // Stored sealed, like every personal field.
        let clear = app
            .db
            .count("SELECT COUNT(*) FROM events WHERE CAST(payload AS TEXT) LIKE '%Zephyrine%'")
            .await;
        assert_eq!(clear, 0);

        // The directory holds them too.
        let listed = ok!(u.lookup_user(req(
            "acme",
            pb::LookupUserRequest {
                key: Some(pb::lookup_user_request::Key::Email(
                    "zephyrine@example.com".into()
                )),
                min_position: app.head_position().await,
                read_mask: None,
            },
        )))
        .user
        .expect("user");
        assert_eq!(listed.details.as_ref(), Some(&expected));

        // Replaced whole: only the nickname is left.
        let update = |details: Option<pb::ProfileDetails>| pb::UpdateUserProfileRequest {
            user_id: user.clone(),
            profile: Some(pb::UserInput {
                details,
                ..Default::default()
            }),
            update_mask: Some(identity_proto::prost_types::FieldMask {
                paths: vec!["details".into()],
            }),
        };
        let nickname_only = pb::ProfileDetails {
            nickname: "Zee".into(),
            ..Default::default()
        };
        let updated = ok!(u.update_user_profile(req("acme", update(Some(nickname_only.clone())))))
            .user
            .expect("user");
        assert_eq!(updated.details, Some(nickname_only));
        // Listed without details: cleared.
        let cleared = ok!(u.update_user_profile(req("acme", update(None))))
            .user
            .expect("user");
        assert_eq!(cleared.details, None);
    }
}
