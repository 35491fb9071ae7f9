//! Values a trusted caller sets outright (UpsertUsers), rather than a person confirming them
//! by code: a user's email, phone and external id, and clearing profile fields. Each
//! contact value is also a claim; the caller moves the claim in the same unit of work.

use super::*;

/// A change of one field: `None` keeps it; `Some(None)` clears it; `Some(Some(v))` sets it.
pub type Change<T> = Option<Option<T>>;

/// The contact values an upsert sets or clears.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetContacts {
    pub email: Change<Email>,
    pub phone: Change<Phone>,
    pub external_id: Change<ExternalId>,
}

/// A profile field that can be cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileField {
    FirstName,
    LastName,
    Locale,
    CustomData,
    PublicProfile,
}

impl User {
    /// The events that set the contact values that differ from the user's: an email or
    /// phone set this way is not confirmed. Clearing all three is refused: registration needs
    /// one of them, and so does reaching the person afterwards.
    pub(super) fn contact_changes(
        &self,
        c: SetContacts,
        at: DateTime<Utc>,
    ) -> Result<Vec<UserEvent>, DomainError> {
        let reachable = held_after(&c.email, self.email.is_some())
            || held_after(&c.phone, self.phone.is_some())
            || held_after(&c.external_id, self.external_id.is_some());
        if !reachable {
            return Err(DomainError::invalid(
                "email",
                "at least one of email, phone or external_id must remain",
            ));
        }
        let mut events = Vec::new();
        if let Some(email) = c.email.filter(|e| *e != self.email) {
            events.push(UserEvent::EmailSet {
                email,
                previous: self.email.clone(),
                at,
            });
        }
        if let Some(phone) = c.phone.filter(|p| *p != self.phone) {
            events.push(UserEvent::PhoneSet {
                phone,
                previous: self.phone.clone(),
                at,
            });
        }
        if let Some(external_id) = c.external_id.filter(|x| *x != self.external_id) {
            events.push(UserEvent::ExternalIdSet {
                external_id,
                previous: self.external_id.clone(),
                at,
            });
        }
        Ok(events)
    }

    /// The events of an upsert on this user: reactivation first (so that the rest changes
    /// an active user), contacts, profile, cleared fields, and deactivation last.
    pub(super) fn upsert(&self, u: Upsert) -> Result<Vec<UserEvent>, DomainError> {
        let at = u.at;
        let mut events = Vec::new();
        if u.active == Some(true) && !self.active {
            events.push(UserEvent::UserReactivated { at });
        }
        events.extend(self.contact_changes(u.contacts, at)?);
        events.extend(self.profile_events(u.profile, at));
        events.extend(self.clearing(u.clear, at));
        if u.active == Some(false) && self.active {
            events.push(UserEvent::UserDeactivated { at });
            events.extend(self.end_all_sessions(SessionEnd::Revoked, at));
        }
        Ok(events)
    }

    /// Clears the listed fields that hold a value; nothing when none does.
    pub(super) fn clearing(
        &self,
        fields: BTreeSet<ProfileField>,
        at: DateTime<Utc>,
    ) -> Option<UserEvent> {
        let held: BTreeSet<ProfileField> = fields
            .into_iter()
            .filter(|f| match f {
                ProfileField::FirstName => self.first_name.is_some(),
                ProfileField::LastName => self.last_name.is_some(),
                ProfileField::Locale => self.locale.is_some(),
                ProfileField::CustomData => !self.custom_data.as_map().is_empty(),
                ProfileField::PublicProfile => !self.public_profile.as_map().is_empty(),
            })
            .collect();
        (!held.is_empty()).then_some(UserEvent::ProfileFieldsCleared { fields: held, at })
    }

    /// Applies a cleared field.
    pub(super) fn clear(&mut self, field: ProfileField) {
        match field {
            ProfileField::FirstName => self.first_name = None,
            ProfileField::LastName => self.last_name = None,
            ProfileField::Locale => self.locale = None,
            ProfileField::CustomData => self.custom_data = JsonObject::default(),
            ProfileField::PublicProfile => self.public_profile = JsonObject::default(),
        }
    }
}

/// Whether a value is held after a change: as the change sets it, else as it was.
fn held_after<T>(change: &Change<T>, held: bool) -> bool {
    change.as_ref().map_or(held, Option::is_some)
}
