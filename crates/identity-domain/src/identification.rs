//! The Identification (KYC) aggregate of one user: identity, documents, PEP flag and level.
//! Its id is the user's aggregate id; it starts implicitly at `unidentified`.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::values::{
    CountryCode, DocumentId, IdentificationLevel, Name, PersonCode, TenantId, Text, UserId,
};
use crate::RecordsRejection;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub first_name: Name,
    pub surname: Name,
    pub nationality: CountryCode,
    pub person_code: PersonCode,
    /// Not every identity has one (the upstream's does not require it).
    pub date_of_birth: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Passport,
    IdentityCard,
    DrivingLicence,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub document_id: DocumentId,
    pub kind: DocumentKind,
    pub number: String,
    pub issue_date: NaiveDate,
    pub expiry_date: Option<NaiveDate>,
    /// The scanned file, kept elsewhere: what identifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<DocumentFile>,
}

/// A reference to a document's file kept outside the service: its SHA-256 digest (hex), size
/// in bytes, media type, and the title and extension it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentFile {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub title: Option<Text>,
    pub extension: Option<String>,
}

/// How a politically exposed person is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PepRelation {
    /// The person holds the position.
    Holder,
    FamilyMember,
    CloseAssociate,
}

/// One politically exposed position behind a PEP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PepRecord {
    pub position: Text,
    pub country: CountryCode,
    pub since: Option<NaiveDate>,
    pub until: Option<NaiveDate>,
    pub relation: PepRelation,
}

/// One change of the assigned level, as GetIdentification lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelChange {
    pub from: IdentificationLevel,
    pub to: IdentificationLevel,
    pub reason: Option<Text>,
    pub by: String,
    pub at: DateTime<Utc>,
}

impl Document {
    /// A document with no expiry date never expires.
    pub fn valid_on(&self, day: NaiveDate) -> bool {
        self.expiry_date.is_none_or(|e| e >= day)
    }
}

/// Whose identification a command is about; the first command of a user starts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub tenant: TenantId,
    pub user_id: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentificationCommand {
    SubmitIdentity {
        subject: Subject,
        identity: Box<Identity>,
        today: NaiveDate,
        at: DateTime<Utc>,
    },
    AttachDocument {
        subject: Subject,
        document: Box<Document>,
        today: NaiveDate,
        at: DateTime<Utc>,
    },
    SetPepStatus {
        subject: Subject,
        pep: bool,
        /// The positions behind the status (none when `pep` is false); replaced whole.
        records: Vec<PepRecord>,
        reason: Option<Text>,
        by: String,
        at: DateTime<Utc>,
    },
    ChangeLevel {
        subject: Subject,
        level: IdentificationLevel,
        reason: Option<Text>,
        by: String,
        today: NaiveDate,
        at: DateTime<Utc>,
    },
    /// A merge (docs/adr/0007): a person without a submitted identity receives the merged
    /// duplicate's identity, documents, PEP status and level, recorded as the events that
    /// would have given them; one with an identity keeps their own, and nothing is recorded.
    Receive {
        subject: Subject,
        from: Box<Identification>,
        reason: Text,
        by: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdentificationEvent {
    IdentificationStarted {
        tenant: TenantId,
        user_id: UserId,
    },
    IdentitySubmitted {
        identity: Identity,
        at: DateTime<Utc>,
    },
    DocumentAttached {
        document: Document,
        at: DateTime<Utc>,
    },
    PepStatusSet {
        pep: bool,
        reason: Option<Text>,
        by: String,
        at: DateTime<Utc>,
    },
    IdentificationLevelChanged {
        from: IdentificationLevel,
        to: IdentificationLevel,
        reason: Option<Text>,
        by: String,
        at: DateTime<Utc>,
    },
    /// The positions behind a PEP status, replaced whole.
    PepRecordsSet {
        pep_records: Vec<PepRecord>,
        reason: Option<Text>,
        by: String,
        at: DateTime<Utc>,
    },
}

domain_event!(
    IdentificationEvent,
    "1.0",
    [
        IdentificationStarted,
        IdentitySubmitted,
        DocumentAttached,
        PepStatusSet,
        IdentificationLevelChanged,
        PepRecordsSet,
    ]
);

impl RecordsRejection for IdentificationEvent {}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identification {
    pub user_id: Option<UserId>,
    pub tenant: Option<TenantId>,
    pub identity: Option<Identity>,
    pub documents: BTreeMap<DocumentId, Document>,
    pub pep: bool,
    /// The positions behind the PEP status.
    #[serde(default)]
    pub pep_records: Vec<PepRecord>,
    pub level: IdentificationLevel,
    pub updated_at: Option<DateTime<Utc>>,
    /// Every change of the assigned level, oldest first, with its reason.
    #[serde(default)]
    pub level_changes: Vec<LevelChange>,
}

impl Identification {
    /// The highest level the evidence supports on `today`, beside the assigned one: an
    /// identity and a document valid today support `identified`, an identity alone
    /// `basic_identified`; `fully_identified` is only ever assigned by an officer.
    pub fn calculated_level(&self, today: NaiveDate) -> IdentificationLevel {
        match (
            &self.identity,
            self.documents.values().any(|d| d.valid_on(today)),
        ) {
            (None, _) => IdentificationLevel::Unidentified,
            (Some(_), false) => IdentificationLevel::BasicIdentified,
            (Some(_), true) => IdentificationLevel::Identified,
        }
    }
}

impl Identification {
    fn decide(
        &self,
        command: IdentificationCommand,
    ) -> Result<Vec<IdentificationEvent>, DomainError> {
        use IdentificationCommand as C;
        use IdentificationEvent as E;
        let subject = match &command {
            C::SubmitIdentity { subject, .. }
            | C::AttachDocument { subject, .. }
            | C::SetPepStatus { subject, .. }
            | C::ChangeLevel { subject, .. }
            | C::Receive { subject, .. } => subject.clone(),
        };
        let mut events = Vec::new();
        if self.user_id.is_none() {
            events.push(E::IdentificationStarted {
                tenant: subject.tenant,
                user_id: subject.user_id,
            });
        }
        match command {
            C::SubmitIdentity {
                identity,
                today,
                at,
                ..
            } => {
                if identity.date_of_birth.is_some_and(|d| d > today) {
                    return Err(DomainError::invalid(
                        "date_of_birth",
                        "date of birth must not be in the future",
                    ));
                }
                if self.identity.as_ref() != Some(&identity) {
                    events.push(E::IdentitySubmitted {
                        identity: *identity,
                        at,
                    });
                }
            }
            C::AttachDocument {
                document,
                today,
                at,
                ..
            } => {
                if document.issue_date > today {
                    return Err(DomainError::invalid(
                        "issue_date",
                        "issue date must not be in the future",
                    ));
                }
                if document
                    .expiry_date
                    .is_some_and(|e| e < document.issue_date)
                {
                    return Err(DomainError::invalid(
                        "expiry_date",
                        "expiry date must not be before the issue date",
                    ));
                }
                if self.documents.contains_key(&document.document_id) {
                    return Err(DomainError::DocumentAlreadyAttached);
                }
                events.push(E::DocumentAttached {
                    document: *document,
                    at,
                });
            }
            C::SetPepStatus {
                pep,
                records,
                reason,
                by,
                at,
                ..
            } => {
                if !pep && !records.is_empty() {
                    return Err(DomainError::invalid(
                        "records",
                        "PEP records need pep to be true",
                    ));
                }
                if let Some(r) = records
                    .iter()
                    .find(|r| r.until.is_some_and(|u| r.since.is_some_and(|s| u < s)))
                {
                    return Err(DomainError::invalid(
                        "records",
                        format!("{}: until is before since", r.position.as_str()),
                    ));
                }
                if pep != self.pep {
                    events.push(E::PepStatusSet {
                        pep,
                        reason: reason.clone(),
                        by: by.clone(),
                        at,
                    });
                }
                if records != self.pep_records {
                    events.push(E::PepRecordsSet {
                        pep_records: records,
                        reason,
                        by,
                        at,
                    });
                }
            }
            C::ChangeLevel {
                level,
                reason,
                by,
                today,
                at,
                ..
            } => {
                if level == self.level {
                    events.clear();
                    return Ok(events);
                }
                if level < self.level && reason.is_none() {
                    return Err(DomainError::ReasonRequired);
                }
                if level >= IdentificationLevel::Identified {
                    if self.identity.is_none() {
                        return Err(DomainError::IdentityRequired(level.as_str()));
                    }
                    if !self.documents.values().any(|d| d.valid_on(today)) {
                        return Err(DomainError::DocumentRequired(level.as_str()));
                    }
                }
                events.push(E::IdentificationLevelChanged {
                    from: self.level,
                    to: level,
                    reason,
                    by,
                    at,
                });
            }
            C::Receive {
                from,
                reason,
                by,
                at,
                ..
            } => {
                let Some(identity) = from.identity.clone().filter(|_| self.identity.is_none())
                else {
                    events.clear();
                    return Ok(events);
                };
                events.push(E::IdentitySubmitted { identity, at });
                for document in from.documents.values() {
                    if !self.documents.contains_key(&document.document_id) {
                        events.push(E::DocumentAttached {
                            document: document.clone(),
                            at,
                        });
                    }
                }
                if from.pep && !self.pep {
                    events.push(E::PepStatusSet {
                        pep: true,
                        reason: Some(reason.clone()),
                        by: by.clone(),
                        at,
                    });
                }
                if !from.pep_records.is_empty() && self.pep_records.is_empty() {
                    events.push(E::PepRecordsSet {
                        pep_records: from.pep_records.clone(),
                        reason: Some(reason.clone()),
                        by: by.clone(),
                        at,
                    });
                }
                if from.level > self.level {
                    events.push(E::IdentificationLevelChanged {
                        from: self.level,
                        to: from.level,
                        reason: Some(reason),
                        by,
                        at,
                    });
                }
            }
        }
        // Starting alone is no change: a command that decided nothing appends nothing.
        if events.len() == 1 && self.user_id.is_none() {
            events.clear();
        }
        Ok(events)
    }
}

decided_aggregate!(Identification, IdentificationCommand, IdentificationEvent);

impl Identification {
    fn evolve(&mut self, event: IdentificationEvent) {
        use IdentificationEvent as E;
        match event {
            E::IdentificationStarted { tenant, user_id } => {
                self.tenant = Some(tenant);
                self.user_id = Some(user_id);
            }
            E::IdentitySubmitted { identity, at } => {
                self.identity = Some(identity);
                self.updated_at = Some(at);
            }
            E::DocumentAttached { document, at } => {
                self.documents.insert(document.document_id, document);
                self.updated_at = Some(at);
            }
            E::PepStatusSet { pep, at, .. } => {
                self.pep = pep;
                self.updated_at = Some(at);
            }
            E::PepRecordsSet {
                pep_records, at, ..
            } => {
                self.pep_records = pep_records;
                self.updated_at = Some(at);
            }
            E::IdentificationLevelChanged {
                from,
                to,
                reason,
                by,
                at,
            } => {
                self.level = to;
                self.updated_at = Some(at);
                self.level_changes.push(LevelChange {
                    from,
                    to,
                    reason,
                    by,
                    at,
                });
            }
        }
    }
}
