//! `identity.v1.IdentificationService`.

use chrono::Utc;
use identity_domain::identification::{
    Document, Identification, IdentificationCommand, Identity, Subject,
};
use identity_domain::values::{CountryCode, DocumentId, Name, PersonCode, Text, UserId};
use identity_domain::{ClaimKind, Violations};
use identity_proto::v1 as pb;
use identity_proto::v1::identification_service_server::IdentificationService;
use identity_store::Executed;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::context::RequestContext;
use crate::convert::{
    document_kind_from_pb, identification_to_pb, level_from_pb, level_to_pb, optional, parse_date,
    required,
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

fn parse_user(v: &mut Violations, raw: &str) -> Option<UserId> {
    required(v, "user_id", raw, UserId::parse)
}

fn unparsed() -> ApiError {
    ApiError::Internal("unparsed".into())
}

type Rpc<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl IdentificationService for IdentificationApi {
    #[tracing::instrument(
        name = "SubmitIdentity",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn submit_identity(
        &self,
        request: Request<pb::SubmitIdentityRequest>,
    ) -> Rpc<pb::SubmitIdentityResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = parse_user(&mut v, &req.user_id);
        let i = req.identity.unwrap_or_default();
        let first_name = required(&mut v, "identity.first_name", &i.first_name, Name::parse);
        let surname = required(&mut v, "identity.surname", &i.surname, Name::parse);
        let nationality = required(
            &mut v,
            "identity.nationality",
            &i.nationality,
            CountryCode::parse,
        );
        let country = if i.person_code_country.trim().is_empty() {
            i.nationality.clone()
        } else {
            i.person_code_country.clone()
        };
        let person_code = required(&mut v, "identity.person_code", &i.person_code, |code| {
            PersonCode::parse(&country, code)
        });
        let date_of_birth = required(
            &mut v,
            "identity.date_of_birth",
            &i.date_of_birth,
            parse_date,
        );
        v.finish().map_err(ApiError::from)?;
        let user = user.ok_or_else(unparsed)?;
        let identity = Identity {
            first_name: first_name.ok_or_else(unparsed)?,
            surname: surname.ok_or_else(unparsed)?,
            nationality: nationality.ok_or_else(unparsed)?,
            person_code: person_code.ok_or_else(unparsed)?,
            date_of_birth: date_of_birth.ok_or_else(unparsed)?,
        };
        let key = identity.person_code.key();
        self.core.load_user(&ctx, user).await?;
        // The submission, the claim of its person code and the release of the previous
        // one commit together.
        let id = ctx.aggregate_id(user);
        let result = self
            .core
            .transact::<Identification, _>(&ctx, &id, |mut unit| {
                let (ctx, id, key, identity) = (&ctx, &id, &key, identity.clone());
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
                    Core::claim_in(&mut unit, ctx, ClaimKind::PersonCode, key, user).await?;
                    if let Some(old) = previous.filter(|old| old != key) {
                        Core::release_in(&mut unit, ctx, ClaimKind::PersonCode, &old, user).await?;
                    }
                    Ok((unit, decided))
                })
            })
            .await;
        let executed = result?;
        Ok(Response::new(pb::SubmitIdentityResponse {
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "AttachDocument",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn attach_document(
        &self,
        request: Request<pb::AttachDocumentRequest>,
    ) -> Rpc<pb::AttachDocumentResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = parse_user(&mut v, &req.user_id);
        let kind = v.check("kind", document_kind_from_pb(req.kind));
        let number = required(&mut v, "number", &req.number, |s| {
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
        });
        let issue_date = required(&mut v, "issue_date", &req.issue_date, parse_date);
        let expiry_date = optional(&mut v, "expiry_date", &req.expiry_date, parse_date);
        v.finish().map_err(ApiError::from)?;
        let document_id = DocumentId(Uuid::new_v4());
        let document = Document {
            document_id,
            kind: kind.ok_or_else(unparsed)?,
            number: number.ok_or_else(unparsed)?,
            issue_date: issue_date.ok_or_else(unparsed)?,
            expiry_date,
        };
        let now = Utc::now();
        let executed = self
            .run(&ctx, user.ok_or_else(unparsed)?, |subject| {
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

    #[tracing::instrument(
        name = "SetPepStatus",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn set_pep_status(
        &self,
        request: Request<pb::SetPepStatusRequest>,
    ) -> Rpc<pb::SetPepStatusResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = parse_user(&mut v, &req.user_id);
        let reason = optional(&mut v, "reason", &req.reason, Text::parse);
        v.finish().map_err(ApiError::from)?;
        let by = ctx.caller.principal.actor();
        let executed = self
            .run(&ctx, user.ok_or_else(unparsed)?, |subject| {
                IdentificationCommand::SetPepStatus {
                    subject,
                    pep: req.pep,
                    reason,
                    by,
                    at: Utc::now(),
                }
            })
            .await?;
        Ok(Response::new(pb::SetPepStatusResponse {
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "ChangeIdentificationLevel",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn change_identification_level(
        &self,
        request: Request<pb::ChangeIdentificationLevelRequest>,
    ) -> Rpc<pb::ChangeIdentificationLevelResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        let user = parse_user(&mut v, &req.user_id);
        let level = v.check("level", level_from_pb(req.level));
        let reason = optional(&mut v, "reason", &req.reason, Text::parse);
        v.finish().map_err(ApiError::from)?;
        let by = ctx.caller.principal.actor();
        let now = Utc::now();
        let level = level.ok_or_else(unparsed)?;
        let executed = self
            .run(&ctx, user.ok_or_else(unparsed)?, |subject| {
                IdentificationCommand::ChangeLevel {
                    subject,
                    level,
                    reason,
                    by,
                    today: now.date_naive(),
                    at: now,
                }
            })
            .await?;
        Ok(Response::new(pb::ChangeIdentificationLevelResponse {
            level: level_to_pb(executed.aggregate.level) as i32,
            position: executed.position,
        }))
    }

    #[tracing::instrument(
        name = "GetIdentification",
        skip_all,
        fields(tenant, request_id, aggregate_id, outcome)
    )]
    async fn get_identification(
        &self,
        request: Request<pb::GetIdentificationRequest>,
    ) -> Rpc<pb::GetIdentificationResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let mut v = Violations::new();
        let user = parse_user(&mut v, &request.get_ref().user_id);
        v.finish().map_err(ApiError::from)?;
        let user = user.ok_or_else(unparsed)?;
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
