//! The User aggregate: deciding a command, and folding an event into the state.

use super::*;

decided_aggregate!(User, UserCommand, UserEvent, services: UserServices);

impl User {
    fn evolve(&mut self, event: UserEvent) {
        use UserEvent as E;
        match event {
            E::UserRegistered {
                user_id,
                tenant,
                email,
                phone,
                external_id,
                identifier_email,
                first_name,
                last_name,
                locale,
                custom_data,
                public_profile,
                registered_at,
            } => {
                *self = User {
                    id: Some(user_id),
                    tenant: Some(tenant),
                    email,
                    phone,
                    external_id,
                    identifier_email,
                    first_name,
                    last_name,
                    locale,
                    custom_data,
                    public_profile,
                    active: true,
                    registered_at: Some(registered_at),
                    updated_at: Some(registered_at),
                    ..User::default()
                };
            }
            E::UserProfileUpdated {
                first_name,
                last_name,
                locale,
                custom_data,
                public_profile,
                updated_at,
            } => {
                if first_name.is_some() {
                    self.first_name = first_name;
                }
                if last_name.is_some() {
                    self.last_name = last_name;
                }
                if locale.is_some() {
                    self.locale = locale;
                }
                if let Some(c) = custom_data {
                    self.custom_data = c;
                }
                if let Some(p) = public_profile {
                    self.public_profile = p;
                }
                self.updated_at = Some(updated_at);
            }
            E::UserDeactivated { at } => {
                self.active = false;
                self.updated_at = Some(at);
            }
            E::UserReactivated { at } => {
                self.active = true;
                self.updated_at = Some(at);
            }
            E::EmailChangeRequested {
                email,
                code_hash,
                expires_at,
            } => self.pending_email = pending(email, code_hash, None, expires_at, 0),
            E::EmailChangeStarted {
                email,
                code_hash,
                requested_at,
                expires_at,
                failed_attempts,
            } => {
                self.pending_email = pending(
                    email,
                    code_hash,
                    Some(requested_at),
                    expires_at,
                    failed_attempts,
                );
            }
            E::EmailConfirmationFailed { failed_attempts } => {
                if let Some(p) = self.pending_email.as_mut() {
                    p.failed_attempts = failed_attempts;
                }
            }
            E::EmailConfirmed { email, at, .. } => {
                self.email = Some(email);
                self.email_confirmed = true;
                self.pending_email = None;
                self.updated_at = Some(at);
            }
            E::PhoneChangeRequested {
                phone,
                code_hash,
                expires_at,
            } => self.pending_phone = pending(phone, code_hash, None, expires_at, 0),
            E::PhoneChangeStarted {
                phone,
                code_hash,
                requested_at,
                expires_at,
                failed_attempts,
            } => {
                self.pending_phone = pending(
                    phone,
                    code_hash,
                    Some(requested_at),
                    expires_at,
                    failed_attempts,
                );
            }
            E::PhoneConfirmationFailed { failed_attempts } => {
                if let Some(p) = self.pending_phone.as_mut() {
                    p.failed_attempts = failed_attempts;
                }
            }
            E::PhoneConfirmed { phone, at, .. } => {
                self.phone = Some(phone);
                self.phone_confirmed = true;
                self.pending_phone = None;
                self.updated_at = Some(at);
            }
            E::RolesChanged { roles } => self.roles = roles,
            E::PasswordSet { credential } | E::PasswordChanged { credential } => {
                self.credential = Some(credential);
                self.sign_in.clear_failures();
            }
            E::LegacyCredentialImported { credential }
            | E::LegacyCredentialUpgraded { credential } => self.credential = Some(credential),
            E::PasswordCheckFailed {
                failed_attempts,
                locked_until,
                at,
            } => self.sign_in.apply(SignInFact::CheckFailed {
                failed_attempts,
                locked_until,
                at,
            }),
            E::PasswordFailuresCleared { at } => {
                self.sign_in.apply(SignInFact::FailuresCleared { at })
            }
            E::SessionStarted {
                session,
                refresh_digest,
                started_at,
                expires_at,
            } => self.sign_in.apply(SignInFact::Started {
                session,
                refresh_digest,
                started_at,
                expires_at,
            }),
            E::SessionRefreshed {
                session,
                refresh_digest,
                at,
                expires_at,
            } => self.sign_in.apply(SignInFact::Refreshed {
                session,
                refresh_digest,
                at,
                expires_at,
            }),
            E::SessionsEnded {
                sessions,
                reason,
                at,
            } => self.sign_in.apply(SignInFact::Ended {
                sessions,
                reason,
                at,
            }),
            E::PasswordResetStarted {
                channel,
                code_hash,
                requested_at,
                expires_at,
                failed_attempts,
            } => {
                self.pending_reset = pending(
                    channel,
                    code_hash,
                    Some(requested_at),
                    expires_at,
                    failed_attempts,
                );
            }
            E::PasswordResetFailed { failed_attempts } => {
                if let Some(p) = self.pending_reset.as_mut() {
                    p.failed_attempts = failed_attempts;
                }
            }
            E::PasswordReset { credential, at } => {
                self.credential = Some(credential);
                self.sign_in.clear_failures();
                self.pending_reset = None;
                self.updated_at = Some(at);
            }
            E::UserMerged { into, at } => {
                self.merged_into = Some(into);
                self.updated_at = Some(at);
            }
            E::EmailSet { email, at, .. } => {
                self.email = email;
                self.email_confirmed = false;
                self.updated_at = Some(at);
            }
            E::PhoneSet { phone, at, .. } => {
                self.phone = phone;
                self.phone_confirmed = false;
                self.updated_at = Some(at);
            }
            E::ExternalIdSet {
                external_id, at, ..
            } => {
                self.external_id = external_id;
                self.updated_at = Some(at);
            }
            E::ProfileDetailsSet { details, at } => {
                self.details = details;
                self.updated_at = Some(at);
            }
            E::ProfileFieldsCleared { fields, at } => {
                for field in fields {
                    self.clear(field);
                }
                self.updated_at = Some(at);
            }
            E::UserErased { at, .. } => {
                // Only what is not personal stays: the id, tenant, roles, dates and merge.
                *self = User {
                    id: self.id,
                    tenant: self.tenant.take(),
                    roles: std::mem::take(&mut self.roles),
                    merged_into: self.merged_into,
                    registered_at: self.registered_at,
                    updated_at: Some(at),
                    active: false,
                    erased: true,
                    ..User::default()
                };
            }
        }
    }
}
