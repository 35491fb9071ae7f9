//! Typed requests the tests send again and again, one builder each.

use identity_proto::v1 as pb;

pub fn get_user(user_id: &str) -> pb::GetUserRequest {
    pb::GetUserRequest {
        user_id: user_id.into(),
        read_mask: None,
    }
}

pub fn set_password(user_id: &str, password: &str) -> pb::SetPasswordRequest {
    pb::SetPasswordRequest {
        user_id: user_id.into(),
        password: password.into(),
    }
}

pub fn verify_password(user_id: &str, password: &str) -> pb::VerifyPasswordRequest {
    pb::VerifyPasswordRequest {
        user_id: user_id.into(),
        password: password.into(),
    }
}

pub fn email_change(user_id: &str, email: &str) -> pb::RequestEmailChangeRequest {
    pb::RequestEmailChangeRequest {
        user_id: user_id.into(),
        email: email.into(),
    }
}

pub fn phone_change(user_id: &str, phone: &str) -> pb::RequestPhoneChangeRequest {
    pb::RequestPhoneChangeRequest {
        user_id: user_id.into(),
        phone: phone.into(),
    }
}

pub fn confirm_email(user_id: &str, code: &str) -> pb::ConfirmEmailRequest {
    pb::ConfirmEmailRequest {
        user_id: user_id.into(),
        code: code.into(),
    }
}

pub fn confirm_phone(user_id: &str, code: &str) -> pb::ConfirmPhoneRequest {
    pb::ConfirmPhoneRequest {
        user_id: user_id.into(),
        code: code.into(),
    }
}

/// SetUserRoles, adding `roles` or replacing the set with them (`mode`).
pub fn roles(user_id: &str, roles: &[&str], mode: pb::RolesMode) -> pb::SetUserRolesRequest {
    pb::SetUserRolesRequest {
        user_id: user_id.into(),
        roles: roles.iter().map(|r| (*r).to_string()).collect(),
        mode: mode as i32,
    }
}

/// ListEvents of what `filter` matches, from the start.
pub fn events(filter: pb::EventFilter) -> pb::ListEventsRequest {
    pb::ListEventsRequest {
        filter: Some(filter),
        ..Default::default()
    }
}

/// CreateAdmin of an admin of `admin_type` acting in acme.
pub fn new_admin(email: &str, admin_type: pb::AdminType) -> pb::CreateAdminRequest {
    pb::CreateAdminRequest {
        email: email.into(),
        display_name: "Someone".into(),
        admin_type: admin_type as i32,
        tenants: vec!["acme".into()],
    }
}

pub fn deactivate(user_id: &str) -> pb::DeactivateUserRequest {
    pb::DeactivateUserRequest {
        user_id: user_id.into(),
    }
}

pub fn reactivate(user_id: &str) -> pb::ReactivateUserRequest {
    pb::ReactivateUserRequest {
        user_id: user_id.into(),
    }
}
