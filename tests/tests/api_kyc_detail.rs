//! Identification in depth (issue 17): an identity without a date of birth, document file
//! references, the level the evidence supports beside the assigned one, the reasons of level
//! changes and the PEP records behind a PEP status in GetIdentification. On both stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(identification_shows_files_calculated_level_and_reasons,);

const DIGEST: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";

mod scenarios {
    use super::*;

    pub(super) async fn identification_shows_files_calculated_level_and_reasons(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "kyc@example.com").await;
        let mut k = app.identification();
        let get = |k: &mut identity_proto::v1::identification_service_client::IdentificationServiceClient<_>| {
            let request = req("acme", pb::GetIdentificationRequest { user_id: user.clone() });
            let mut k = k.clone();
            async move {
                k.get_identification(request)
                    .await
                    .expect("identification")
                    .into_inner()
                    .identification
                    .expect("identification")
            }
        };

        // An identity without a date of birth is taken.
        ok!(k.submit_identity(req(
            "acme",
            pb::SubmitIdentityRequest {
                user_id: user.clone(),
                identity: Some(pb::Identity {
                    first_name: "Kai".into(),
                    surname: "Tamm".into(),
                    nationality: "EE".into(),
                    person_code: "38601010123".into(),
                    person_code_country: String::new(),
                    date_of_birth: String::new(),
                }),
            },
        )));
        let now = get(&mut k).await;
        assert_eq!(now.identity.expect("identity").date_of_birth, "");
        assert_eq!(now.level, pb::IdentificationLevel::Unidentified as i32);
        assert_eq!(
            now.calculated_level,
            pb::IdentificationLevel::BasicIdentified as i32
        );

        // A document's file is described, each part checked.
        let attach = |file: pb::DocumentFile| pb::AttachDocumentRequest {
            user_id: user.clone(),
            kind: pb::DocumentKind::IdentityCard as i32,
            number: "AB1234567".into(),
            issue_date: "2021-03-01".into(),
            expiry_date: String::new(),
            file: Some(file),
        };
        let file = pb::DocumentFile {
            digest: DIGEST.into(),
            size: 48213,
            media_type: "Application/PDF".into(),
            title: "ID card, both sides".into(),
            extension: ".PDF".into(),
        };
        let refused = fails!(
            k.attach_document(req(
                "acme",
                attach(pb::DocumentFile {
                    digest: "xyz".into(),
                    ..file.clone()
                })
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(refused.message().contains("file.digest"), "{refused:?}");
        ok!(k.attach_document(req("acme", attach(file))));
        let now = get(&mut k).await;
        let kept = now.documents[0].file.clone().expect("file");
        assert_eq!(
            (
                kept.digest.as_str(),
                kept.size,
                kept.media_type.as_str(),
                kept.extension.as_str()
            ),
            (
                DIGEST.to_ascii_lowercase().as_str(),
                48213,
                "application/pdf",
                "pdf"
            )
        );
        assert_eq!(kept.title, "ID card, both sides");
        assert_eq!(
            now.calculated_level,
            pb::IdentificationLevel::Identified as i32
        );

        // Level changes come back with their reasons.
        let change =
            |level: pb::IdentificationLevel, reason: &str| pb::ChangeIdentificationLevelRequest {
                user_id: user.clone(),
                level: level as i32,
                reason: reason.into(),
            };
        ok!(k.change_identification_level(req(
            "acme",
            change(pb::IdentificationLevel::Identified, "")
        )));
        ok!(k.change_identification_level(req(
            "acme",
            change(
                pb::IdentificationLevel::BasicIdentified,
                "document withdrawn"
            )
        )));
        let now = get(&mut k).await;
        let reasons: Vec<(i32, &str)> = now
            .level_changes
            .iter()
            .map(|c| (c.to, c.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (pb::IdentificationLevel::Identified as i32, ""),
                (
                    pb::IdentificationLevel::BasicIdentified as i32,
                    "document withdrawn"
                ),
            ]
        );
        assert!(now
            .level_changes
            .iter()
            .all(|c| !c.by.is_empty() && c.at.is_some()));
        assert_eq!(now.level, pb::IdentificationLevel::BasicIdentified as i32);

        // A PEP status with the positions behind it.
        let record = pb::PepRecord {
            position: "Member of parliament".into(),
            country: "ee".into(),
            since: "2019-04-04".into(),
            until: String::new(),
            relation: pb::PepRelation::FamilyMember as i32,
        };
        let pep = |records: Vec<pb::PepRecord>| pb::SetPepStatusRequest {
            user_id: user.clone(),
            pep: true,
            reason: "declared".into(),
            records,
        };
        let refused = fails!(
            k.set_pep_status(req(
                "acme",
                pep(vec![pb::PepRecord {
                    relation: 0,
                    ..record.clone()
                }])
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(
            refused.message().contains("records[0].relation"),
            "{refused:?}"
        );
        ok!(k.set_pep_status(req("acme", pep(vec![record.clone()]))));
        let now = get(&mut k).await;
        assert!(now.pep);
        assert_eq!(
            now.pep_records,
            vec![pb::PepRecord {
                country: "EE".into(),
                ..record
            }]
        );
    }
}
