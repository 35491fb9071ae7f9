//! Integration tests of status tiers and identification levels, on both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(
    status_tiers_are_managed,
    identification_levels_follow_the_rules,
);

mod scenarios {
    use super::*;

    pub(super) async fn status_tiers_are_managed(store: Store) {
        let app = spawn_app(store).await;
        let mut t = app.tiers();
        let created = ok!(t.create_status_tier(req(
            "acme",
            pb::CreateStatusTierRequest {
                name: "Gold".into(),
                description: "For regulars".into(),
                min_balance: "1000".into(),
                discount_percentage: "12.5".into(),
                image_url: "https://cdn.example.com/gold.png".into(),
                eligible_tokens: vec!["pts".into()],
            },
        )))
        .tier
        .expect("tier");
        assert_eq!(created.discount_percentage, "12.5");
        assert_eq!(created.eligible_tokens, vec!["PTS"]);
        fails!(
            t.create_status_tier(req(
                "acme",
                pb::CreateStatusTierRequest {
                    name: "Bad".into(),
                    min_balance: "10".into(),
                    discount_percentage: "101".into(),
                    ..Default::default()
                },
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        let updated = ok!(t.update_status_tier(req(
            "acme",
            pb::UpdateStatusTierRequest {
                tier_id: created.tier_id.clone(),
                min_balance: Some("2000".into()),
                ..Default::default()
            },
        )))
        .tier
        .expect("tier");
        assert_eq!(updated.min_balance, "2000");
        assert_eq!(updated.name, "Gold");
        let tokens = ok!(t.add_eligible_token(req(
            "acme",
            pb::AddEligibleTokenRequest {
                tier_id: created.tier_id.clone(),
                token: "USDC".into(),
            },
        )));
        assert_eq!(tokens.eligible_tokens, vec!["PTS", "USDC"]);
        let tokens = ok!(t.remove_eligible_token(req(
            "acme",
            pb::RemoveEligibleTokenRequest {
                tier_id: created.tier_id.clone(),
                token: "PTS".into(),
            },
        )));
        assert_eq!(tokens.eligible_tokens, vec!["USDC"]);
        t.retire_status_tier(req(
            "acme",
            pb::RetireStatusTierRequest {
                tier_id: created.tier_id.clone(),
            },
        ))
        .await
        .expect("retires");
        fails!(
            t.add_eligible_token(req(
                "acme",
                pb::AddEligibleTokenRequest {
                    tier_id: created.tier_id.clone(),
                    token: "EUR".into(),
                },
            )),
            Code::FailedPrecondition,
            "TIER_RETIRED",
        );
        let got = ok!(t.get_status_tier(req(
            "acme",
            pb::GetStatusTierRequest {
                tier_id: created.tier_id,
            },
        )))
        .tier
        .expect("tier");
        assert!(got.retired);
    }

    pub(super) async fn identification_levels_follow_the_rules(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "kyc@example.com").await;
        let other = app.register("acme", "kyc2@example.com").await;
        let mut k = app.identification();
        let level = |l: pb::IdentificationLevel, reason: &str, user: &str| {
            pb::ChangeIdentificationLevelRequest {
                user_id: user.into(),
                level: l as i32,
                reason: reason.into(),
            }
        };
        fails!(
            k.change_identification_level(req(
                "acme",
                level(pb::IdentificationLevel::Identified, "", &user),
            )),
            Code::FailedPrecondition,
            "IDENTITY_REQUIRED",
        );
        let identity = pb::Identity {
            first_name: "Ada".into(),
            surname: "Lovelace".into(),
            nationality: "EE".into(),
            person_code: "38601010123".into(),
            person_code_country: String::new(),
            date_of_birth: "1986-01-01".into(),
        };
        k.submit_identity(req(
            "acme",
            pb::SubmitIdentityRequest {
                user_id: user.clone(),
                identity: Some(identity.clone()),
            },
        ))
        .await
        .expect("submits");
        fails!(
            k.submit_identity(req(
                "acme",
                pb::SubmitIdentityRequest {
                    user_id: other,
                    identity: Some(identity),
                },
            )),
            Code::AlreadyExists,
            "PERSON_CODE_ALREADY_ASSIGNED",
        );
        fails!(
            k.change_identification_level(req(
                "acme",
                level(pb::IdentificationLevel::Identified, "", &user),
            )),
            Code::FailedPrecondition,
            "DOCUMENT_REQUIRED",
        );
        k.attach_document(req(
            "acme",
            pb::AttachDocumentRequest {
                user_id: user.clone(),
                kind: pb::DocumentKind::Passport as i32,
                number: "K1234567".into(),
                issue_date: "2020-01-01".into(),
                expiry_date: "2099-01-01".into(),
                file: None,
            },
        ))
        .await
        .expect("attaches");
        let changed = ok!(k.change_identification_level(req(
            "acme",
            level(
                pb::IdentificationLevel::Identified,
                "passport checked",
                &user,
            ),
        )));
        assert_eq!(changed.level, pb::IdentificationLevel::Identified as i32);
        let refused = fails!(
            k.change_identification_level(req(
                "acme",
                level(pb::IdentificationLevel::BasicIdentified, "", &user),
            )),
            Code::InvalidArgument,
            "REASON_REQUIRED",
        );
        let violations = tonic_types::StatusExt::get_error_details(&refused)
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert!(
            violations.iter().any(|v| v.field == "reason"),
            "{violations:?}"
        );
        k.set_pep_status(req(
            "acme",
            pb::SetPepStatusRequest {
                user_id: user.clone(),
                pep: true,
                reason: "minister".into(),
                records: vec![],
            },
        ))
        .await
        .expect("sets pep");
        let got =
            ok!(k.get_identification(req("acme", pb::GetIdentificationRequest { user_id: user })))
                .identification
                .expect("identification");
        assert!(got.pep);
        assert_eq!(got.documents.len(), 1);
        assert_eq!(got.identity.expect("identity").person_code_country, "EE");
    }
}
