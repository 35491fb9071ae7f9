//! Permissions: what each RPC needs, what each admin type, user role and project key holds.
//!
//! Denied by default: an RPC missing from [`RULES`] is refused for everyone (a test walks the
//! descriptor set and fails for any RPC this table does not name).

use std::collections::BTreeSet;

use identity_domain::admin::AdminType;

macro_rules! permissions {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, global = $global:literal;)*) => {
        /// One permission. Its name (`read:users`) is what tokens, role tables and errors carry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $($(#[$doc])* $variant,)*
        }

        impl Permission {
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }

            /// Global permissions act on the whole service, not inside one tenant: only a
            /// SUPER_ADMIN or a service token that names them holds them.
            pub fn is_global(self) -> bool {
                match self {
                    $(Permission::$variant => $global,)*
                }
            }

            pub fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Permission::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

permissions! {
    /// Public profiles, UserExists, status tiers: what a project key alone may read.
    ReadPublic = "read:public", global = false;
    ReadUsers = "read:users", global = false;
    CreateUsers = "create:users", global = false;
    UpdateUsers = "update:users", global = false;
    /// Erasing a person for good (ADR 0006) is its own permission.
    EraseUsers = "erase:users", global = false;
    /// Granting roles grants permissions, so it is its own permission.
    UpdateRoles = "update:roles", global = false;
    VerifyPasswords = "verify:passwords", global = false;
    ReadWallets = "read:wallets", global = false;
    ManageWallets = "manage:wallets", global = false;
    CreditWallets = "credit:wallets", global = false;
    DebitWallets = "debit:wallets", global = false;
    ManageTiers = "manage:tiers", global = false;
    ReadIdentification = "read:identification", global = false;
    UpdateIdentification = "update:identification", global = false;
    ReadAudit = "read:audit", global = false;
    ReadTenant = "read:tenant", global = false;
    ManageProjectKeys = "manage:project_keys", global = false;
    ManageRoles = "manage:roles", global = false;
    ReadAdmins = "read:admins", global = false;
    ManageAdmins = "manage:admins", global = false;
    ReadProjections = "read:projections", global = true;
    ManageProjections = "manage:projections", global = true;
    ManageTenants = "manage:tenants", global = true;
    /// SignIn, Refresh, SignOut and password reset: what an app's project key does for the
    /// people who use it.
    SignIn = "sign_in", global = false;
    /// The signed-in person's own data (MeService).
    ReadMe = "read:me", global = false;
    UpdateMe = "update:me", global = false;
    /// Finding a user by national person code.
    LookupPersonCode = "lookup:person_code", global = false;
    /// One-time codes in responses (for a trusted integration that delivers them itself).
    /// Explicit: no admin type or default role holds it; only a token that names it.
    ReadCodes = "read:codes", global = false;
}

/// Permissions that only a token naming them holds: never implied by an admin type.
pub const EXPLICIT: &[Permission] = &[Permission::ReadCodes];

/// What one RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `/identity.v1.UserService/GetUser`.
    pub path: &'static str,
    /// `GetUser`: recorded as the command of every event the call appends.
    pub method: &'static str,
    pub permission: Permission,
}

macro_rules! rules {
    ($($service:literal { $($method:literal => $perm:ident,)* })*) => {
        /// Every RPC of the `identity.v1` API and the permission it needs.
        pub const RULES: &[Rule] = &[
            $($(Rule {
                path: concat!("/identity.v1.", $service, "/", $method),
                method: $method,
                permission: Permission::$perm,
            },)*)*
        ];
    };
}

rules! {
    "UserService" {
        "RegisterUser" => CreateUsers,
        "UpsertUsers" => CreateUsers,
        "UpdateUserProfile" => UpdateUsers,
        "DeactivateUser" => UpdateUsers,
        "ReactivateUser" => UpdateUsers,
        "RequestEmailChange" => UpdateUsers,
        "ConfirmEmail" => UpdateUsers,
        "RequestPhoneChange" => UpdateUsers,
        "ConfirmPhone" => UpdateUsers,
        "SetUserRoles" => UpdateRoles,
        "SetPassword" => UpdateUsers,
        "ChangePassword" => UpdateUsers,
        "ImportLegacyPassword" => UpdateUsers,
        "VerifyPassword" => VerifyPasswords,
        "MergeUsers" => UpdateUsers,
        "EraseUser" => EraseUsers,
        "GetUser" => ReadUsers,
        "GetUserWithBalances" => ReadUsers,
        "LookupUser" => ReadUsers,
        "UserExists" => ReadPublic,
        "ListUsers" => ReadUsers,
        "GetPublicProfile" => ReadPublic,
        "ListPublicProfiles" => ReadPublic,
    }
    "WalletService" {
        "OpenWallet" => ManageWallets,
        "ActivateWallet" => ManageWallets,
        "SuspendWallet" => ManageWallets,
        "CloseWallet" => ManageWallets,
        "CreditTokens" => CreditWallets,
        "DebitTokens" => DebitWallets,
        "GetWallet" => ReadWallets,
        "ListWallets" => ReadWallets,
        "GetBalances" => ReadWallets,
    }
    "StatusTierService" {
        "CreateStatusTier" => ManageTiers,
        "UpdateStatusTier" => ManageTiers,
        "RetireStatusTier" => ManageTiers,
        "AddEligibleToken" => ManageTiers,
        "RemoveEligibleToken" => ManageTiers,
        "GetStatusTier" => ReadPublic,
        "ListStatusTiers" => ReadPublic,
        "GetUserStatus" => ReadUsers,
    }
    "IdentificationService" {
        "SubmitIdentity" => UpdateIdentification,
        "AttachDocument" => UpdateIdentification,
        "SetPepStatus" => UpdateIdentification,
        "ChangeIdentificationLevel" => UpdateIdentification,
        "GetIdentification" => ReadIdentification,
    }
    "AuditService" {
        "ListEvents" => ReadAudit,
        "StreamEvents" => ReadAudit,
        "GetAggregateHistory" => ReadAudit,
        "GetAggregateStateAt" => ReadAudit,
        "VerifyChain" => ReadAudit,
    }
    "ProjectionService" {
        "ListProjections" => ReadProjections,
        "RebuildProjection" => ManageProjections,
    }
    "TenantService" {
        "CreateTenant" => ManageTenants,
        "GetTenant" => ReadTenant,
        "ListTenants" => ManageTenants,
        "IssueProjectKey" => ManageProjectKeys,
        "RevokeProjectKey" => ManageProjectKeys,
        "ListProjectKeys" => ManageProjectKeys,
        "SetRolePermissions" => ManageRoles,
        "ListRoles" => ReadTenant,
    }
    "AuthService" {
        "SignIn" => SignIn,
        "Refresh" => SignIn,
        "SignOut" => SignIn,
        "RequestPasswordReset" => SignIn,
        "ResetPassword" => SignIn,
        "RevokeUserSessions" => UpdateUsers,
    }
    "MeService" {
        "GetMe" => ReadMe,
        "UpdateMe" => UpdateMe,
        "GetMyBalances" => ReadMe,
        "GetMyStatus" => ReadMe,
        "ListMySessions" => ReadMe,
        "EndMySession" => UpdateMe,
    }
    "AdminService" {
        "ListAdmins" => ReadAdmins,
        "CreateAdmin" => ManageAdmins,
        "AssignAdminToTenant" => ManageAdmins,
        "RemoveAdminFromTenant" => ManageAdmins,
        "RemoveAdmin" => ManageAdmins,
        // The admin itself, or a holder of manage:admins (checked by the handler).
        "SetAdminPassword" => ReadAdmins,
    }
}

/// The rule of a request path, if the API has one.
pub fn rule(path: &str) -> Option<&'static Rule> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static BY_PATH: OnceLock<HashMap<&'static str, &'static Rule>> = OnceLock::new();
    BY_PATH
        .get_or_init(|| RULES.iter().map(|r| (r.path, r)).collect())
        .get(path)
        .copied()
}

/// Paths every caller may use without a credential: health, and reflection when enabled.
pub fn is_open(path: &str, reflection: bool) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || (reflection && path.starts_with("/grpc.reflection."))
}

/// A set of permissions (22 of them: a bit set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u64);

impl Permissions {
    pub fn of(list: &[Permission]) -> Self {
        let mut s = Self::default();
        for p in list {
            s.insert(*p);
        }
        s
    }

    /// Every permission but the [`EXPLICIT`] ones.
    pub fn all() -> Self {
        let mut s = Self::default();
        for p in Permission::ALL.iter().filter(|p| !EXPLICIT.contains(p)) {
            s.insert(*p);
        }
        s
    }

    /// Every permission that acts inside one tenant, but the [`EXPLICIT`] ones.
    pub fn tenant_wide() -> Self {
        let mut s = Self::default();
        for p in Permission::ALL
            .iter()
            .filter(|p| !p.is_global() && !EXPLICIT.contains(p))
        {
            s.insert(*p);
        }
        s
    }

    /// What every signed-in person holds for themselves, whatever their roles.
    pub fn of_self() -> Self {
        Self::of(&[Permission::ReadMe, Permission::UpdateMe])
    }

    pub fn insert(&mut self, p: Permission) {
        self.0 |= 1 << (p as u64);
    }

    pub fn contains(self, p: Permission) -> bool {
        self.0 & (1 << (p as u64)) != 0
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn without_global(self) -> Self {
        let tenant =
            Permission::ALL
                .iter()
                .filter(|p| !p.is_global())
                .fold(Self::default(), |mut s, p| {
                    s.insert(*p);
                    s
                });
        Self(self.0 & tenant.0)
    }

    pub fn names(self) -> Vec<&'static str> {
        Permission::ALL
            .iter()
            .filter(|p| self.contains(**p))
            .map(|p| p.name())
            .collect()
    }
}

const READS: &[Permission] = &[
    Permission::ReadPublic,
    Permission::ReadUsers,
    Permission::ReadWallets,
    Permission::ReadIdentification,
    Permission::ReadAudit,
    Permission::ReadTenant,
    Permission::ReadAdmins,
];

/// What an admin of each type holds (in the tenants it acts in).
pub fn of_admin(admin_type: AdminType) -> Permissions {
    match admin_type {
        AdminType::SuperAdmin => Permissions::all(),
        AdminType::TenantAdmin => Permissions::tenant_wide(),
        AdminType::Auditor => Permissions::of(READS),
    }
}

/// What a project key alone holds: public data, never personal data.
pub fn of_project_key() -> Permissions {
    Permissions::of(&[Permission::ReadPublic, Permission::SignIn])
}

/// The default role table: what a user role grants unless the tenant changed it
/// (TenantService.SetRolePermissions). Roles never grant global permissions.
pub fn default_roles() -> Vec<(&'static str, Vec<Permission>)> {
    use Permission as P;
    vec![
        (
            "admin",
            vec![
                P::ReadPublic,
                P::ReadUsers,
                P::CreateUsers,
                P::UpdateUsers,
                P::ReadWallets,
                P::ManageWallets,
                P::CreditWallets,
                P::DebitWallets,
                P::ManageTiers,
                P::ReadIdentification,
                P::UpdateIdentification,
            ],
        ),
        (
            "support",
            vec![
                P::ReadPublic,
                P::ReadUsers,
                P::UpdateUsers,
                P::ReadWallets,
                P::ReadIdentification,
            ],
        ),
        ("auditor", READS.to_vec()),
        ("member", vec![P::ReadPublic]),
    ]
}

/// Parses permission names, refusing unknown ones (named in the error).
pub fn parse_names<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeSet<Permission>, String> {
    names
        .into_iter()
        .map(|n| Permission::parse(n.trim()).ok_or_else(|| n.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deny by default, checked: every RPC in the published descriptor set has a rule, and
    /// every rule names a real RPC.
    #[test]
    fn every_rpc_of_the_api_has_a_permission() {
        use identity_proto::prost::Message as _;
        let files = identity_proto::prost_types::FileDescriptorSet::decode(
            identity_proto::FILE_DESCRIPTOR_SET,
        )
        .expect("descriptor set");
        let mut paths = BTreeSet::new();
        for file in files.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                for method in service.method {
                    paths.insert(format!(
                        "/{package}.{}/{}",
                        service.name.clone().unwrap_or_default(),
                        method.name.unwrap_or_default()
                    ));
                }
            }
        }
        let missing: Vec<_> = paths.iter().filter(|p| rule(p).is_none()).collect();
        assert!(missing.is_empty(), "RPCs without a permission: {missing:?}");
        let stale: Vec<_> = RULES
            .iter()
            .filter(|r| !paths.contains(r.path))
            .map(|r| r.path)
            .collect();
        assert!(
            stale.is_empty(),
            "rules for RPCs that do not exist: {stale:?}"
        );
        assert!(
            paths.len() >= 60,
            "the walk found only {} RPCs",
            paths.len()
        );
    }

    #[test]
    fn names_round_trip_and_fit_the_bit_set() {
        assert!(Permission::ALL.len() < 64);
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.name()), Some(*p));
        }
    }

    #[test]
    fn project_keys_and_auditors_never_write_and_roles_never_go_global() {
        let key = of_project_key();
        assert!(!key.contains(Permission::ReadUsers));
        let auditor = of_admin(AdminType::Auditor);
        for p in Permission::ALL {
            let writes = !p.name().starts_with("read:");
            assert!(
                !(writes && auditor.contains(*p)),
                "auditor holds {}",
                p.name()
            );
        }
        for (role, perms) in default_roles() {
            assert!(perms.iter().all(|p| !p.is_global()), "role {role}");
        }
        assert!(!of_admin(AdminType::TenantAdmin).contains(Permission::ManageProjections));
        for t in [AdminType::SuperAdmin, AdminType::TenantAdmin] {
            assert!(!of_admin(t).contains(Permission::ReadCodes), "{t:?}");
        }
    }
}
