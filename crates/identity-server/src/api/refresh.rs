//! Refresh tokens: whose session one continues, how a new one is made and parsed, and what
//! renewing or ending its session takes (for people and admins alike).

use chrono::{DateTime, Utc};
use identity_domain::session::{SessionCommand, SessionEnd, SignIn, SignInState};
use identity_domain::user::Secret;
use identity_domain::values::{SessionId, UserId};
use identity_domain::DomainError;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::context::RequestContext;
use crate::core::Core;
use crate::error::{ApiError, ApiResult};

/// Whose session a refresh token continues. People's tokens read
/// `rt1.<tenant>.<user>.<session>.<secret>`, admins' `rta1.<tenant>.<admin>.<session>.<secret>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Account {
    User(UserId),
    Admin(uuid::Uuid),
}

impl Account {
    fn prefix(self) -> &'static str {
        match self {
            Self::User(_) => "rt1",
            Self::Admin(_) => "rta1",
        }
    }

    fn id(self) -> String {
        match self {
            Self::User(u) => u.to_string(),
            Self::Admin(a) => a.to_string(),
        }
    }
}

/// A refresh token, parsed: which session of which account it continues, and its digest.
pub(crate) struct RefreshToken {
    pub(crate) account: Account,
    pub(crate) session: SessionId,
    pub(crate) digest: String,
}

/// The refresh token a session is given (at sign-in or on renewal), and when it expires.
pub(crate) struct SessionRefresh {
    pub(crate) session: SessionId,
    pub(crate) token: String,
    pub(crate) expires_at: DateTime<Utc>,
}

/// What continuing a presented session takes: its next refresh token and the command that
/// records it.
pub(crate) struct Renewal {
    pub(crate) refresh: SessionRefresh,
    pub(crate) command: SessionCommand,
}

impl RefreshToken {
    /// The next refresh token of this session.
    pub(crate) fn renewal(&self, ctx: &RequestContext, core: &Core) -> Renewal {
        let at = Utc::now();
        let (token, refresh_digest) = new_refresh_token(ctx, self.account, self.session);
        let expires_at = refresh_expiry(core, at);
        let command = SessionCommand::Refresh {
            session: self.session,
            presented: self.digest.clone(),
            refresh_digest,
            expires_at,
            at,
        };
        Renewal {
            refresh: SessionRefresh {
                session: self.session,
                token,
                expires_at,
            },
            command,
        }
    }

    /// The command that ends this session, when the token is its current one.
    pub(crate) fn sign_out(&self, sign_in: &SignInState) -> Option<SessionCommand> {
        let at = Utc::now();
        let current = sign_in
            .live_sessions(at)
            .find(|(id, _)| **id == self.session)
            .is_some_and(|(_, s)| s.refresh_digest == self.digest);
        current.then_some(SessionCommand::End {
            session: Some(self.session),
            reason: SessionEnd::SignedOut,
            at,
        })
    }
}

/// A new session of `account`: its first refresh token, and the sign-in that opens it.
pub(crate) fn opening(
    ctx: &RequestContext,
    core: &Core,
    account: Account,
    password: Secret,
) -> (SessionRefresh, SignIn) {
    let at = Utc::now();
    let session = SessionId(uuid::Uuid::new_v4());
    let (token, refresh_digest) = new_refresh_token(ctx, account, session);
    let expires_at = refresh_expiry(core, at);
    let attempt = SignIn {
        password,
        session,
        refresh_digest,
        expires_at,
        at,
    };
    let refresh = SessionRefresh {
        session,
        token,
        expires_at,
    };
    (refresh, attempt)
}

/// When a refresh token made at `at` expires.
pub(crate) fn refresh_expiry(core: &Core, at: DateTime<Utc>) -> DateTime<Utc> {
    at + chrono::Duration::seconds(core.settings.refresh_token_ttl_secs)
}

pub(crate) fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new refresh token for `session` and its digest.
pub(crate) fn new_refresh_token(
    ctx: &RequestContext,
    account: Account,
    session: SessionId,
) -> (String, String) {
    use base64::Engine as _;
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut secret);
    let token = format!(
        "{}.{}.{}.{session}.{}",
        account.prefix(),
        ctx.tenant,
        account.id(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let d = digest(&token);
    (token, d)
}

pub(crate) fn parse_refresh(ctx: &RequestContext, raw: &str) -> ApiResult<RefreshToken> {
    let invalid = || ApiError::from(DomainError::InvalidRefreshToken);
    let raw = raw.trim();
    let mut parts = raw.split('.');
    let (Some(prefix), Some(tenant), Some(id), Some(session), Some(_), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid());
    };
    if tenant != ctx.tenant.as_str() {
        return Err(invalid());
    }
    let account = match prefix {
        "rt1" => Account::User(UserId::parse(id).map_err(|_| invalid())?),
        "rta1" => Account::Admin(uuid::Uuid::parse_str(id).map_err(|_| invalid())?),
        _ => return Err(invalid()),
    };
    Ok(RefreshToken {
        account,
        session: SessionId::parse(session).map_err(|_| invalid())?,
        digest: digest(raw),
    })
}
