//! What can be asked of a user.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterUser {
    pub user_id: UserId,
    pub tenant: TenantId,
    /// The tenant's key for ids derived from personal values (the identifier email).
    pub id_key: crate::derive::IdKey,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub external_id: Option<ExternalId>,
    pub first_name: Option<Name>,
    pub last_name: Option<Name>,
    pub locale: Option<Locale>,
    pub custom_data: JsonObject,
    pub public_profile: JsonObject,
    pub details: ProfileDetails,
    pub at: DateTime<Utc>,
}

/// A partial profile update: `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateProfile {
    pub first_name: Option<Name>,
    pub last_name: Option<Name>,
    pub locale: Option<Locale>,
    pub custom_data: Option<JsonObject>,
    pub public_profile: Option<JsonObject>,
    /// New details, replacing the current ones whole.
    pub details: Option<ProfileDetails>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolesMode {
    Add,
    Replace,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Register(Box<RegisterUser>),
    UpdateProfile(Box<UpdateProfile>, DateTime<Utc>),
    Deactivate {
        at: DateTime<Utc>,
    },
    Reactivate {
        at: DateTime<Utc>,
    },
    RequestEmailChange {
        email: Email,
        code_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    ConfirmEmail {
        code_hash: String,
        at: DateTime<Utc>,
    },
    RequestPhoneChange {
        phone: Phone,
        code_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    ConfirmPhone {
        code_hash: String,
        at: DateTime<Utc>,
    },
    SetRoles {
        roles: BTreeSet<Role>,
        mode: RolesMode,
    },
    SetPassword {
        phc: String,
    },
    /// Checks the old password (counted like any check) and only then hashes the new one.
    ChangePassword {
        old_password: Secret,
        new_password: Secret,
        at: DateTime<Utc>,
    },
    ImportLegacyCredential {
        salt: String,
        digest: String,
    },
    /// Verifies a password. A legacy credential that verifies is replaced by a modern hash of
    /// the same password.
    VerifyPassword {
        password: Secret,
        at: DateTime<Utc>,
    },
    /// Verifies the password and opens a session whose refresh token has `refresh_digest`.
    SignIn(SignIn),
    /// Refreshes or ends sessions.
    Sessions(SessionCommand),
    RequestPasswordReset {
        channel: CodeChannel,
        code_hash: String,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    ResetPassword {
        code_hash: String,
        new_password: Secret,
        at: DateTime<Utc>,
    },
    MergeInto {
        survivor: UserId,
        at: DateTime<Utc>,
    },
    /// Updates a matched user as UpsertUsers asks (active or not): contacts, profile,
    /// cleared fields and the active flag, in one decision.
    Upsert(Box<Upsert>),
    /// Erases the person (docs/adr/0006): `basis` is why (never personal data itself),
    /// `erased_by` the principal who asked.
    Erase {
        basis: Text,
        erased_by: String,
        at: DateTime<Utc>,
    },
}

/// What UpsertUsers changes on a user it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upsert {
    pub profile: UpdateProfile,
    pub clear: BTreeSet<ProfileField>,
    pub contacts: SetContacts,
    /// `Some(true)` reactivates, `Some(false)` deactivates.
    pub active: Option<bool>,
    pub at: DateTime<Utc>,
}
