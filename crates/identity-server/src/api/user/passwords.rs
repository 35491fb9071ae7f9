//! UserService's password calls: set, change, legacy import, verify.

use super::*;

impl UserApi {
    pub(super) async fn answer_set_password(
        &self,
        request: Request<pb::SetPasswordRequest>,
    ) -> Rpc<pb::SetPasswordResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        parse_fields! {
            user = field("user_id", &req.user_id, UserId::parse),
            password = password_field("password", &req.password),
        }
        // Fail fast on an unknown user before spending a hash on it.
        self.core.load_user(&ctx, user).await?;
        let phc = self.core.passwords.hash(&password).await?;
        let executed = self
            .run(&ctx, user, UserCommand::SetPassword { phc })
            .await?;
        Ok(Response::new(pb::SetPasswordResponse {
            position: executed.position,
        }))
    }

    pub(super) async fn answer_change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Rpc<pb::ChangePasswordResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.old_password.is_empty() {
            v.push("old_password", "is required");
        }
        parse_fields! { v;
            user = field("user_id", &req.user_id, UserId::parse),
            new = password_field("new_password", &req.new_password),
        }
        // The aggregate checks the old password (counted, refused at once while locked)
        // before it spends a hash on the new one.
        let command = UserCommand::ChangePassword {
            old_password: Secret::new(req.old_password),
            new_password: new,
            at: Utc::now(),
        };
        let executed = self.run(&ctx, user, command).await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            position: executed.position,
        }))
    }

    pub(super) async fn answer_import_legacy_password(
        &self,
        request: Request<pb::ImportLegacyPasswordRequest>,
    ) -> Rpc<pb::ImportLegacyPasswordResponse> {
        use base64::Engine as _;
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let mut v = Violations::new();
        if req.salt.is_empty() || req.salt.len() > 256 {
            v.push("salt", "salt must be 1 to 256 bytes");
        }
        match base64::engine::general_purpose::STANDARD.decode(req.sha1_base64.trim()) {
            Ok(bytes) if bytes.len() == 20 => {}
            _ => v.push(
                "sha1_base64",
                "must be the base64 of a 20-byte SHA-1 digest",
            ),
        }
        parse_fields! { v;
            user = field("user_id", &req.user_id, UserId::parse),
        }
        if !self.core.settings.legacy_import {
            return Err(ApiError::from(DomainError::LegacyImportDisabled).into());
        }
        let command = UserCommand::ImportLegacyCredential {
            salt: req.salt,
            digest: req.sha1_base64.trim().to_string(),
        };
        let executed = self.run(&ctx, user, command).await?;
        Ok(Response::new(pb::ImportLegacyPasswordResponse {
            position: executed.position,
        }))
    }

    pub(super) async fn answer_verify_password(
        &self,
        request: Request<pb::VerifyPasswordRequest>,
    ) -> Rpc<pb::VerifyPasswordResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let req = request.into_inner();
        let user = parse_user_id("user_id", &req.user_id)?;
        if req.password.is_empty() || req.password.len() > 1024 {
            return Err(ApiError::from(DomainError::invalid(
                "password",
                "password must be 1 to 1024 bytes",
            ))
            .into());
        }
        let password = Secret::new(req.password);
        let executed = self
            .run(
                &ctx,
                user,
                UserCommand::VerifyPassword {
                    password,
                    at: Utc::now(),
                },
            )
            .await?;
        let upgraded = executed
            .events
            .iter()
            .any(|e| matches!(e, UserEvent::LegacyCredentialUpgraded { .. }));
        Ok(Response::new(pb::VerifyPasswordResponse {
            valid: true,
            upgraded,
            position: executed.position,
        }))
    }
}
