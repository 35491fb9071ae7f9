//! Where the contract matched the upstream APIs too loosely (issue 17, "small contract
//! mismatches"): role ids keep their case, SetUserRoles needs an explicit mode, on both
//! stores.

#[macro_use]
mod common;

use common::*;
use identity_proto::v1 as pb;
use tonic::Code;

on_both_stores!(role_ids_keep_their_case_and_roles_need_an_explicit_mode,);

mod scenarios {
    use super::*;

    pub(super) async fn role_ids_keep_their_case_and_roles_need_an_explicit_mode(store: Store) {
        let app = spawn_app(store).await;
        let user = app.register("acme", "roles@example.com").await;
        let mut u = app.users();

        // An upstream role id comes back as it was given.
        let set = ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&user, &["rol_abCdeFghIjklMnmP"], pb::RolesMode::Add)
        )));
        assert_eq!(set.roles, vec!["rol_abCdeFghIjklMnmP"]);
        let got = ok!(u.get_user(req("acme", ask::get_user(&user))))
            .user
            .expect("user");
        assert_eq!(got.roles, vec!["rol_abCdeFghIjklMnmP"]);
        // Ids differing in case are different roles.
        let set = ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&user, &["rol_ABCDEFGHIJKLMNMP"], pb::RolesMode::Add)
        )));
        assert_eq!(set.roles.len(), 2, "{:?}", set.roles);

        // No mode, no default: the call is refused and names the field.
        let refused = fails!(
            u.set_user_roles(req(
                "acme",
                ask::roles(&user, &["viewer"], pb::RolesMode::Unspecified)
            )),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        );
        assert!(refused.message().contains("mode"), "{refused:?}");
        let got = ok!(u.get_user(req("acme", ask::get_user(&user))))
            .user
            .expect("user");
        assert_eq!(got.roles.len(), 2, "a refused call changed the roles");

        // REPLACE makes the list the whole set; an empty one clears it.
        let set = ok!(u.set_user_roles(req(
            "acme",
            ask::roles(&user, &["viewer"], pb::RolesMode::Replace)
        )));
        assert_eq!(set.roles, vec!["viewer"]);
        let set =
            ok!(u.set_user_roles(req("acme", ask::roles(&user, &[], pb::RolesMode::Replace))));
        assert!(set.roles.is_empty(), "{:?}", set.roles);
    }
}
