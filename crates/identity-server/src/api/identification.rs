//! `identity.v1.IdentificationService`.

use chrono::Utc;
use identity_domain::identification::{
    Document, DocumentFile, Identification, IdentificationCommand, Identity, PepRecord,
    PepRelation, Subject,
};
use identity_domain::values::{CountryCode, DocumentId, Name, PersonCode, Text, UserId};
use identity_domain::ClaimKind;
use identity_proto::v1 as pb;
use identity_proto::v1::identification_service_server::IdentificationService;
use identity_store::Executed;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::context::RequestContext;
use crate::convert::{checked, field, optional_field, parse_fields, Refused};
use crate::convert::{
    document_kind_from_pb, identification_to_pb, level_from_pb, level_to_pb, parse_date,
};
use crate::core::Core;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Clone)]
pub struct IdentificationApi {
    core: Core,
}

impl IdentificationApi {
    pub fn new(core: Core) -> Self {
        Self { core }
    }

    /// Submits an identity in one unit: the submission, the claim of its person code and the
    /// release of the previous one commit together or not at all.
    async fn submit(
        &self,
        ctx: &RequestContext,
        user: UserId,
        identity: Identity,
    ) -> ApiResult<Executed<Identification>> {
        let key = identity.person_code.key();
        self.core.load_user(ctx, user).await?;
        let id = ctx.aggregate_id(user);
        let result = self
            .core
            .transact::<Identification, _>(ctx.event_metadata(), &id, |mut unit| {
                let (id, key, identity) = (&id, &key, identity.clone());
                Box::pin(async move {
                    let previous = unit
                        .state::<Identification>(id)
                        .await
                        .map_err(ApiError::from)?
                        .identity
                        .as_ref()
                        .map(|i| i.person_code.key());
                    let now = Utc::now();
                    let decided = unit
                        .decide::<Identification>(
                            id,
                            IdentificationCommand::SubmitIdentity {
                                subject: Subject {
                                    tenant: ctx.tenant.clone(),
                                    user_id: user,
                                },
                                identity: Box::new(identity),
                                today: now.date_naive(),
                                at: now,
                            },
                            &(),
                        )
                        .await?;
                    let code = (ClaimKind::PersonCode, key.as_str());
                    Core::reclaim_in(&mut unit, ctx, code, previous.as_deref(), user).await?;
                    Ok((unit, decided))
                })
            })
            .await;
        result
    }

    /// Runs a command on a user's identification; the user must exist in the tenant.
    async fn run(
        &self,
        ctx: &RequestContext,
        user: UserId,
        make: impl FnOnce(Subject) -> IdentificationCommand,
    ) -> ApiResult<Executed<Identification>> {
        self.core.load_user(ctx, user).await?;
        let subject = Subject {
            tenant: ctx.tenant.clone(),
            user_id: user,
        };
        self.core
            .execute::<Identification>(ctx, &ctx.aggregate_id(user), make(subject), &())
            .await
    }
}

/// SubmitIdentity's user and identity, parsed (every field violation at once).
struct Submission(UserId, Identity);

impl TryFrom<&pb::SubmitIdentityRequest> for Submission {
    type Error = ApiError;

    fn try_from(req: &pb::SubmitIdentityRequest) -> ApiResult<Self> {
        let i = req.identity.clone().unwrap_or_default();
        let country = if i.person_code_country.trim().is_empty() {
            i.nationality.clone()
        } else {
            i.person_code_country.clone()
        };
        parse_fields! {
            user = field("user_id", &req.user_id, UserId::parse),
            first_name = field("identity.first_name", &i.first_name, Name::parse),
            surname = field("identity.surname", &i.surname, Name::parse),
            nationality = field("identity.nationality", &i.nationality, CountryCode::parse),
            person_code = field("identity.person_code", &i.person_code, |code| {
                PersonCode::parse(&country, code)
            }),
            date_of_birth = optional_field("identity.date_of_birth", &i.date_of_birth, parse_date),
        }
        Ok(Self(
            user,
            Identity {
                first_name,
                surname,
                nationality,
                person_code,
                date_of_birth,
            },
        ))
    }
}

/// AttachDocument's user and document, parsed; the document gets a new id.
struct NewDocument(UserId, Document);

impl TryFrom<&pb::AttachDocumentRequest> for NewDocument {
    type Error = ApiError;

    fn try_from(req: &pb::AttachDocumentRequest) -> ApiResult<Self> {
        parse_fields! {
            user = field("user_id", &req.user_id, UserId::parse),
            kind = checked("kind", document_kind_from_pb(req.kind)),
            number = field("number", &req.number, |s| {
            let s = s.trim();
            if s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ' ')
            {
                Ok(s.to_string())
            } else {
                Err(identity_domain::ValueError::new(
                    "number must be at most 64 letters, digits, spaces or dashes",
                ))
            }
            }),
            issue_date = field("issue_date", &req.issue_date, parse_date),
            expiry_date = optional_field("expiry_date", &req.expiry_date, parse_date),
            file = req.file.as_ref().map(document_file).transpose(),
        }
        Ok(Self(
            user,
            Document {
                document_id: DocumentId(Uuid::new_v4()),
                kind,
                number,
                issue_date,
                expiry_date,
                file,
            },
        ))
    }
}

/// One PEP record of a request (`records[i]`), every field checked.
fn pep_record(i: usize, r: &pb::PepRecord) -> Result<PepRecord, Refused> {
    let name = |f: &str| format!("records[{i}].{f}");
    let relation = match pb::PepRelation::try_from(r.relation) {
        Ok(pb::PepRelation::Holder) => PepRelation::Holder,
        Ok(pb::PepRelation::FamilyMember) => PepRelation::FamilyMember,
        Ok(pb::PepRelation::CloseAssociate) => PepRelation::CloseAssociate,
        _ => {
            return Err(Refused {
                field: name("relation"),
                why: "must be HOLDER, FAMILY_MEMBER or CLOSE_ASSOCIATE".into(),
            })
        }
    };
    Ok(PepRecord {
        position: field(&name("position"), &r.position, Text::parse)?,
        country: field(&name("country"), &r.country, CountryCode::parse)?,
        since: optional_field(&name("since"), &r.since, parse_date)?,
        until: optional_field(&name("until"), &r.until, parse_date)?,
        relation,
    })
}

/// The largest document file a reference may describe.
const MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// A document's file reference, every field checked (the first refused one is reported).
fn document_file(f: &pb::DocumentFile) -> Result<DocumentFile, Refused> {
    let refuse = |field: &str, why: &str| Refused {
        field: format!("file.{field}"),
        why: why.to_string(),
    };
    let digest = f.digest.trim().to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refuse(
            "digest",
            "must be the file's SHA-256, 64 hex digits",
        ));
    }
    if f.size == 0 || f.size > MAX_FILE_BYTES {
        return Err(refuse("size", "must be 1 byte to 100 MB"));
    }
    let media_type = f.media_type.trim().to_ascii_lowercase();
    let well_formed = media_type.split_once('/').is_some_and(|(t, sub)| {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
        };
        token(t) && token(sub)
    });
    if !well_formed || media_type.len() > 127 {
        return Err(refuse(
            "media_type",
            "must be a media type such as application/pdf",
        ));
    }
    let title = optional_field("file.title", &f.title, Text::parse)?;
    let extension = f
        .extension
        .trim()
        .trim_start_matches('.')
        .to_ascii_lowercase();
    if extension.len() > 10 || !extension.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(refuse("extension", "must be at most 10 letters or digits"));
    }
    Ok(DocumentFile {
        digest,
        size: f.size,
        media_type,
        title,
        extension: (!extension.is_empty()).then_some(extension),
    })
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl IdentificationService for IdentificationApi {
    async fn submit_identity(
        &self,
        request: Request<pb::SubmitIdentityRequest>,
    ) -> Rpc<pb::SubmitIdentityResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let Submission(user, identity) = Submission::try_from(request.get_ref())?;
        let executed = self.submit(&ctx, user, identity).await?;
        Ok(Response::new(pb::SubmitIdentityResponse {
            position: executed.position,
        }))
    }

    async fn attach_document(
        &self,
        request: Request<pb::AttachDocumentRequest>,
    ) -> Rpc<pb::AttachDocumentResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let NewDocument(user, document) = NewDocument::try_from(request.get_ref())?;
        let document_id = document.document_id;
        let now = Utc::now();
        let executed = self
            .run(&ctx, user, |subject| {
                IdentificationCommand::AttachDocument {
                    subject,
                    document: Box::new(document),
                    today: now.date_naive(),
                    at: now,
                }
            })
            .await?;
        Ok(Response::new(pb::AttachDocumentResponse {
            document_id: document_id.to_string(),
            position: executed.position,
        }))
    }

    async fn set_pep_status(
        &self,
        request: Request<pb::SetPepStatusRequest>,
    ) -> Rpc<pb::SetPepStatusResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let records: Result<Vec<PepRecord>, Refused> = req
            .records
            .iter()
            .enumerate()
            .map(|(i, r)| pep_record(i, r))
            .collect();
        parse_fields! {
            user = field("user_id", &req.user_id, UserId::parse),
            reason = optional_field("reason", &req.reason, Text::parse),
            records = records,
        }
        let by = ctx.caller.principal.actor();
        let executed = self
            .run(&ctx, user, |subject| IdentificationCommand::SetPepStatus {
                subject,
                pep: req.pep,
                records,
                reason,
                by,
                at: Utc::now(),
            })
            .await?;
        Ok(Response::new(pb::SetPepStatusResponse {
            position: executed.position,
        }))
    }

    async fn change_identification_level(
        &self,
        request: Request<pb::ChangeIdentificationLevelRequest>,
    ) -> Rpc<pb::ChangeIdentificationLevelResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        parse_fields! {
            user = field("user_id", &req.user_id, UserId::parse),
            level = checked("level", level_from_pb(req.level)),
            reason = optional_field("reason", &req.reason, Text::parse),
        }
        let by = ctx.caller.principal.actor();
        let now = Utc::now();
        let executed = self
            .run(&ctx, user, |subject| IdentificationCommand::ChangeLevel {
                subject,
                level,
                reason,
                by,
                today: now.date_naive(),
                at: now,
            })
            .await?;
        Ok(Response::new(pb::ChangeIdentificationLevelResponse {
            level: level_to_pb(executed.aggregate.level) as i32,
            position: executed.position,
        }))
    }

    async fn get_identification(
        &self,
        request: Request<pb::GetIdentificationRequest>,
    ) -> Rpc<pb::GetIdentificationResponse> {
        let ctx = RequestContext::from_request(&request)?;
        parse_fields! {
            user = field("user_id", &request.get_ref().user_id, UserId::parse),
        }
        self.core.load_user(&ctx, user).await?;
        // A user with no identification events is `unidentified`.
        let (state, version) = match self
            .core
            .log
            .load::<Identification>(&ctx.aggregate_id(user))
            .await
            .map_err(ApiError::from)?
        {
            Some(l) => (l.aggregate, l.sequence),
            None => (Identification::default(), 0),
        };
        let mut identification = identification_to_pb(&user.to_string(), &state, version);
        let mut withheld_fields = Vec::new();
        crate::access::scope::cut_identification(
            &mut identification,
            ctx.caller.scopes,
            &mut withheld_fields,
        );
        Ok(Response::new(pb::GetIdentificationResponse {
            identification: Some(identification),
            withheld_fields,
        }))
    }
}
